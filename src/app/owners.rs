//! What `base-restore` says about owners before PostgreSQL starts on DEST: a root-owned DEST
//! (PostgreSQL runs as its owner and refuses root), and a restore_command whose `--config`
//! DEST's owner cannot read (the first start would stop at exit 200: safe, but a surprise).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A user as /etc/passwd and /etc/group know it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    name: String,
    uid: u32,
    groups: Vec<u32>,
}

/// The warnings for a restored `dest` whose restore_command names `config`.
pub(super) fn restore_warnings(dest: &Path, config: Option<&Path>) -> Vec<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let Ok(meta) = std::fs::metadata(dest) else {
        return vec![];
    };
    let mut out = Vec::new();
    let owner = if meta.uid() == 0 {
        out.push(format!(
            "{d} is owned by root; PostgreSQL runs as the owner of its data directory and refuses root: chown -R postgres: {d} (and each tablespace directory) before starting it",
            d = dest.display()
        ));
        user_named(&passwd, &group, "postgres")
    } else {
        user_with_uid(&passwd, &group, meta.uid(), meta.gid())
    };
    if let (Some(cfg), Some(u)) = (config, owner)
        && !readable_by(cfg, &u)
    {
        out.push(format!(
            "the restore_command reads {}, which {} cannot read: PostgreSQL's first start would stop (exit 200). Pass --recovery-config FILE naming a config {} can read, without secrets (README: \"Restoring as postgres\")",
            cfg.display(),
            u.name,
            u.name
        ));
    }
    out
}

fn user_named(passwd: &str, group: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| user(group, f[0], f[2], f[3]))?
    })
}

fn user_with_uid(passwd: &str, group: &str, uid: u32, gid: u32) -> Option<User> {
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[2] == uid.to_string()).then(|| user(group, f[0], f[2], f[3]))?
        })
        .or(Some(User {
            name: format!("uid {uid}"),
            uid,
            groups: vec![gid],
        }))
}

fn user(group: &str, name: &str, uid: &str, gid: &str) -> Option<User> {
    let mut groups = vec![gid.parse().ok()?];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3
            && f[3].split(',').any(|m| m == name)
            && let Ok(g) = f[2].parse()
        {
            groups.push(g);
        }
    }
    Some(User {
        name: name.to_string(),
        uid: uid.parse().ok()?,
        groups,
    })
}

/// Whether `u` can read `file`: its mode bits, and search permission on every directory above.
fn readable_by(file: &Path, u: &User) -> bool {
    let allows = |p: &Path, r: u32| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            if u.uid == 0 {
                true
            } else if m.uid() == u.uid {
                mode & (r << 6) != 0
            } else if u.groups.contains(&m.gid()) {
                mode & (r << 3) != 0
            } else {
                mode & r != 0
            }
        })
    };
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    allows(&abs, 4) && abs.ancestors().skip(1).all(|d| allows(d, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const PASSWD: &str =
        "root:x:0:0::/root:/bin/sh\npostgres:x:105:110::/var/lib/postgresql:/bin/sh\n";
    const GROUP: &str = "root:x:0:\npostgres:x:110:\nssl-cert:x:111:postgres\n";

    #[test]
    fn users_and_groups_come_from_passwd_and_group() {
        let u = user_named(PASSWD, GROUP, "postgres").expect("postgres");
        assert_eq!((u.uid, u.groups.clone()), (105, vec![110, 111]));
        assert_eq!(user_named(PASSWD, GROUP, "nobody"), None);
        assert_eq!(
            user_with_uid(PASSWD, GROUP, 4242, 7).expect("u").name,
            "uid 4242"
        );
    }

    #[test]
    fn a_mode_600_file_of_another_user_is_not_readable() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "x").expect("w");
        let me = std::fs::metadata(&f).expect("m");
        let other = User {
            name: "other".into(),
            uid: me.uid() + 1000,
            groups: vec![me.gid() + 1000],
        };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(!readable_by(&f, &other));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(readable_by(&f, &other));
        let member = User {
            groups: vec![me.gid()],
            ..other.clone()
        };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(readable_by(&f, &member) && !readable_by(&f, &other));
        // A directory above that the user cannot search hides the file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert!(!readable_by(&f, &member));
    }
}
