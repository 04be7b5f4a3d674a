//! Barman's own configuration (`barman.conf` and `configuration_files_directory/*.conf`), read
//! as data, the way Barman reads it, to find each server's directories and the lock directory:
//! included files are the directory's `*.conf` files that are not hidden, in sorted order;
//! a section with `model = true` is a model, not a server; `active = false` marks a server
//! that `--all` skips. Read-only; nothing of Barman's is ever written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Barman's `parse_boolean`: true/yes/on/1 and false/no/off/0, in any case.
fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The directories of one Barman server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDirs {
    /// Server name (config section).
    pub name: String,
    /// `backup_directory` (holds `meta/` and `identity.json`).
    pub backup_dir: PathBuf,
    /// `basebackups_directory` (`base/`).
    pub base_dir: PathBuf,
    /// `wals_directory`.
    pub wals_dir: PathBuf,
    /// `barman_lock_directory`, where `.<SERVER>-<id>.lock` lives.
    pub lock_dir: PathBuf,
}

impl ServerDirs {
    /// `meta/` (Barman ≥ 3.13.2 keeps backup.info there).
    pub fn meta_dir(&self) -> PathBuf {
        self.backup_dir.join("meta")
    }

    /// Barman's per-backup lock file.
    pub fn backup_lock(&self, id: &str) -> PathBuf {
        self.lock_dir.join(format!(".{}-{id}.lock", self.name))
    }
}

/// A parsed Barman configuration.
#[derive(Debug, Clone, Default)]
pub struct BarmanConf {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    source: PathBuf,
    /// Every file the settings were read from, the main one first.
    files: Vec<PathBuf>,
}

/// Why `path` (followed through links) is not to be trusted by uid `me`, if it is not.
fn untrusted(path: &Path, me: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot be checked: {}", crate::error::reason(&e))),
    };
    if m.uid() != 0 && m.uid() != me {
        return Some(format!("is owned by uid {}", m.uid()));
    }
    (m.mode() & 0o022 != 0).then(|| format!("is writable by others (mode {:o})", m.mode() & 0o7777))
}

fn parse_ini(text: &str, into: &mut BTreeMap<String, BTreeMap<String, String>>) {
    let mut section = String::new();
    let mut last_key: Option<String> = None;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        // ConfigParser continuation line: indented text extends the previous value.
        if raw.starts_with([' ', '\t'])
            && let Some(k) = &last_key
        {
            if let Some(v) = into.get_mut(&section).and_then(|s| s.get_mut(k)) {
                v.push(' ');
                v.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_string();
            into.entry(section.clone()).or_default();
            last_key = None;
            continue;
        }
        if let Some((k, v)) = trimmed.split_once(['=', ':']) {
            let key = k.trim().to_ascii_lowercase();
            into.entry(section.clone())
                .or_default()
                .insert(key.clone(), v.trim().to_string());
            last_key = Some(key);
        }
    }
}

impl BarmanConf {
    /// Reads the main file and every `*.conf` in `configuration_files_directory`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read Barman config {}: {}; set barman.config in the barmans3 config",
                path.display(),
                crate::error::reason(&e)
            ))
        })?;
        let mut sections = BTreeMap::new();
        parse_ini(&text, &mut sections);
        let mut read = vec![path.to_path_buf()];
        if let Some(dir) = sections
            .get("barman")
            .and_then(|b| b.get("configuration_files_directory"))
        {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                tracing::warn!(
                    "{}: configuration_files_directory {} is not a directory; ignored, as Barman does",
                    path.display(),
                    dir.display()
                );
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut files: Vec<_> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "conf")
                            && p.file_name()
                                .is_some_and(|n| !n.as_encoded_bytes().starts_with(b"."))
                            && p.is_file()
                    })
                    .collect();
                files.sort();
                for f in files {
                    let t = std::fs::read_to_string(&f).map_err(|e| {
                        Error::Config(format!(
                            "cannot read {}: {}",
                            f.display(),
                            crate::error::reason(&e)
                        ))
                    })?;
                    parse_ini(&t, &mut sections);
                    read.push(f);
                }
            }
        }
        Ok(BarmanConf {
            sections,
            source: path.to_path_buf(),
            files: read,
        })
    }

    /// Refuses to take a command to run from a config another local user could have written:
    /// every file it was read from, and each file's directory, must be owned by root or by the
    /// user running barmans3 and writable by nobody else (Barman's own configs are root's, 644).
    pub fn check_trusted(&self, key: &str) -> std::result::Result<(), String> {
        let me = rustix::process::geteuid().as_raw();
        for f in &self.files {
            for p in [f.as_path(), crate::fsutil::parent_dir(f)] {
                if let Some(why) = untrusted(p, me) {
                    return Err(format!(
                        "{key} in {} is not run: {} {why}; make it root's (or this user's) and not group- or world-writable, or set barman.decryption_command",
                        f.display(),
                        p.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parses text (tests).
    pub fn parse(text: &str) -> Self {
        let mut sections = BTreeMap::new();
        parse_ini(text, &mut sections);
        BarmanConf {
            sections,
            source: PathBuf::from("<text>"),
            files: Vec::new(),
        }
    }

    /// Whether a section is a Barman server: not `[barman]`, not a model (`model = true`).
    fn is_server(&self, name: &str) -> bool {
        name != "barman"
            && !name.is_empty()
            && self
                .sections
                .get(name)
                .is_some_and(|s| s.get("model").is_none_or(|v| boolean(v) != Some(true)))
    }

    /// Active server names (what `--all` covers): every server section not marked
    /// `active = false`.
    pub fn servers(&self) -> Vec<String> {
        self.server_names(true)
    }

    /// Servers marked `active = false` (Barman's cron skips them, and so does `--all`).
    pub fn inactive_servers(&self) -> Vec<String> {
        self.server_names(false)
    }

    fn server_names(&self, active: bool) -> Vec<String> {
        self.sections
            .iter()
            .filter(|(name, _)| self.is_server(name))
            .filter(|(_, s)| s.get("active").and_then(|v| boolean(v)).unwrap_or(true) == active)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The system user Barman runs as (`barman_user`, default `barman`).
    pub fn barman_user(&self) -> String {
        self.sections
            .get("barman")
            .and_then(|b| b.get("barman_user"))
            .map_or_else(|| "barman".to_string(), |u| u.trim().to_string())
    }

    /// A setting of `server` (or of `[barman]`), interpolated as Barman does.
    pub fn setting(&self, server: &str, key: &str) -> Option<String> {
        self.value(server, key)
    }

    fn value(&self, server: &str, key: &str) -> Option<String> {
        let raw = self
            .sections
            .get(server)
            .and_then(|s| s.get(key))
            .or_else(|| self.sections.get("barman").and_then(|s| s.get(key)))?;
        Some(self.interpolate(server, raw))
    }

    /// Expands `%(name)s` from the server section, then `[barman]`.
    fn interpolate(&self, server: &str, raw: &str) -> String {
        let mut out = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find("%(") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find(")s") {
                Some(j) => {
                    let name = after[..j].to_ascii_lowercase();
                    let v = self
                        .sections
                        .get(server)
                        .and_then(|s| s.get(&name))
                        .or_else(|| self.sections.get("barman").and_then(|s| s.get(&name)));
                    out.push_str(v.map_or("", String::as_str));
                    rest = &after[j + 2..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The directories of `server`, with Barman's defaults. Refuses unknown servers and
    /// servers whose directories are cloud URLs (Barman already stores those remotely).
    pub fn server(&self, server: &str) -> Result<ServerDirs> {
        if !self.is_server(server) {
            let mut known = self.servers();
            known.extend(self.inactive_servers());
            known.sort();
            let known = known.join(", ");
            return Err(Error::Usage(format!(
                "unknown Barman server {server:?} in {} (configured: {})",
                self.source.display(),
                if known.is_empty() { "none" } else { &known }
            )));
        }
        let home = PathBuf::from(
            self.value(server, "barman_home")
                .unwrap_or_else(|| "/var/lib/barman".into()),
        );
        // Per server only: a backup_directory in [barman] would be shared by every server.
        let backup_dir = self.sections[server].get("backup_directory").map_or_else(
            || home.join(server),
            |raw| PathBuf::from(self.interpolate(server, raw)),
        );
        let dir = |key: &str, default: &str| -> Result<PathBuf> {
            let v = self
                .sections
                .get(server)
                .and_then(|s| s.get(key))
                .map(|raw| self.interpolate(server, raw));
            match v {
                Some(v) if v.contains("://") => Err(Error::Usage(format!(
                    "server {server}: {key} = {v} is a cloud URL; Barman already ships this server to object storage"
                ))),
                Some(v) => Ok(PathBuf::from(v)),
                None => Ok(backup_dir.join(default)),
            }
        };
        Ok(ServerDirs {
            name: server.to_string(),
            base_dir: dir("basebackups_directory", "base")?,
            wals_dir: dir("wals_directory", "wals")?,
            lock_dir: self
                .value(server, "barman_lock_directory")
                .map_or_else(|| home.clone(), PathBuf::from),
            backup_dir,
        })
    }
}

/// The numeric id of a system user, asked of the system (`id -u`, so LDAP and other name
/// services count), `None` when the user does not exist.
fn uid_of(user: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The effective user id of this process.
fn effective_uid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Refuses to run `command` as anyone but Barman's `barman_user`: files it creates in Barman's
/// tree (Barman's per-backup lock) and in the queue and state directories must stay usable by
/// Barman and by the next run, as Barman itself insists.
pub fn require_barman_user(conf: &BarmanConf, command: &str) -> Result<()> {
    let user = conf.barman_user();
    let want = uid_of(&user).ok_or_else(|| {
        Error::Config(format!(
            "{}: barman_user {user:?} is not a user on this system",
            conf.source.display()
        ))
    })?;
    match effective_uid() {
        Some(uid) if uid == want => Ok(()),
        Some(uid) => Err(Error::Usage(format!(
            "{command} must run as Barman's user {user} (barman_user in {}), not as uid {uid}: run it as sudo -u {user} barmans3 {command}",
            conf.source.display()
        ))),
        None => Err(Error::Failed(
            "cannot tell which user this process runs as (/proc/self/status)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_follow_barman_defaults_and_overrides() {
        let c = BarmanConf::parse(
            "[barman]\nbarman_home = /srv/barman\nbarman_lock_directory = /run/barman\n\n[pg]\nconninfo = x\n\n[pg2]\nbackup_directory = /data/pg2\nwals_directory = %(backup_directory)s/xlog\n\n[off]\nactive = false\n",
        );
        assert_eq!(c.servers(), vec!["pg", "pg2"]);
        let pg = c.server("pg").expect("pg");
        assert_eq!(pg.base_dir, PathBuf::from("/srv/barman/pg/base"));
        assert_eq!(pg.meta_dir(), PathBuf::from("/srv/barman/pg/meta"));
        assert_eq!(
            pg.backup_lock("20261121T220933"),
            PathBuf::from("/run/barman/.pg-20261121T220933.lock")
        );
        let pg2 = c.server("pg2").expect("pg2");
        assert_eq!(pg2.wals_dir, PathBuf::from("/data/pg2/xlog"));
        assert_eq!(pg2.base_dir, PathBuf::from("/data/pg2/base"));
        assert!(
            c.server("nope")
                .expect_err("unknown")
                .to_string()
                .contains("pg, pg2")
        );
    }

    #[test]
    fn models_are_not_servers_and_inactive_servers_are_apart() {
        let c = BarmanConf::parse(
            "[barman]\nbarman_home = /b\nbarman_user = bm\n[pg]\nconninfo = x\n[pg:switchover]\nmodel = true\ncluster = pg\nconninfo = y\n[pg2]\nmodel = false\n[old]\nactive = OFF\n",
        );
        assert_eq!(c.servers(), vec!["pg", "pg2"]);
        assert_eq!(c.inactive_servers(), vec!["old"]);
        assert!(c.server("pg:switchover").is_err());
        assert!(
            c.server("old").is_ok(),
            "an inactive server can still be named"
        );
        assert_eq!(c.barman_user(), "bm");
        assert_eq!(BarmanConf::parse("").barman_user(), "barman");
    }

    #[test]
    fn included_files_are_sorted_visible_conf_files() {
        let d = tempfile::tempdir().expect("tmp");
        let inc = d.path().join("barman.d");
        std::fs::create_dir(&inc).expect("mkdir");
        std::fs::write(inc.join("b.conf"), "[pg]\nbackup_directory = /from-b\n").expect("w");
        std::fs::write(inc.join("a.conf"), "[pg]\nbackup_directory = /from-a\n").expect("w");
        std::fs::write(inc.join(".hidden.conf"), "[hidden]\nconninfo = x\n").expect("w");
        std::fs::write(inc.join("notes.txt"), "[txt]\nconninfo = x\n").expect("w");
        let main = d.path().join("barman.conf");
        std::fs::write(
            &main,
            format!(
                "[barman]\nconfiguration_files_directory = {}\n",
                inc.display()
            ),
        )
        .expect("w");
        let c = BarmanConf::load(&main).expect("load");
        assert_eq!(c.servers(), vec!["pg"]);
        assert_eq!(
            c.server("pg").expect("pg").backup_dir,
            PathBuf::from("/from-b")
        );
    }

    #[test]
    fn only_barmans_user_may_touch_barmans_tree() {
        let me = effective_uid().expect("uid");
        let name = String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-un")
                .output()
                .expect("id")
                .stdout,
        )
        .trim()
        .to_string();
        let ok = BarmanConf::parse(&format!("[barman]\nbarman_user = {name}\n"));
        assert!(require_barman_user(&ok, "base-sync").is_ok(), "uid {me}");
        let missing = BarmanConf::parse("[barman]\nbarman_user = no-such-user-b3\n");
        assert!(matches!(
            require_barman_user(&missing, "base-sync"),
            Err(Error::Config(_))
        ));
        if me == 0 {
            // Running as root for a tree that belongs to "nobody": the sudo line to use.
            let other = BarmanConf::parse("[barman]\nbarman_user = nobody\n");
            let e = require_barman_user(&other, "wal-sync").expect_err("root");
            assert!(
                e.to_string().contains("sudo -u nobody barmans3 wal-sync"),
                "{e}"
            );
        }
    }

    #[test]
    fn cloud_directories_are_refused() {
        let c = BarmanConf::parse("[pg]\nwals_directory = s3://bucket/wals\n");
        assert!(c.server("pg").is_err());
    }

    #[test]
    fn a_command_from_a_config_others_can_write_is_not_trusted() {
        use std::fs;
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let main = d.path().join("barman.conf");
        fs::write(&main, "[pg]\nencryption_passphrase_command = cat /k\n").expect("conf");
        fs::set_permissions(&main, fs::Permissions::from_mode(0o644)).expect("chmod");
        let conf = BarmanConf::load(&main).expect("load");
        assert_eq!(conf.check_trusted("k"), Ok(()), "root's or ours, 644");

        fs::set_permissions(&main, fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = conf
            .check_trusted("encryption_passphrase_command")
            .expect_err("world-writable");
        assert!(
            e.contains("writable by others (mode 666)") && e.contains("barman.conf"),
            "{e}"
        );
        fs::set_permissions(&main, fs::Permissions::from_mode(0o644)).expect("chmod");

        // The directory too: whoever can write it can swap the file.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).expect("chmod dir");
        let e = conf
            .check_trusted("k")
            .expect_err("world-writable directory");
        assert!(e.contains("writable by others (mode 777)"), "{e}");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");

        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&main, Some(4242), None).expect("chown");
            let e = conf.check_trusted("k").expect_err("another user's");
            assert!(e.contains("owned by uid 4242"), "{e}");
        }
        assert!(
            BarmanConf::parse("[pg]").check_trusted("k").is_ok(),
            "no file read"
        );
    }
}
