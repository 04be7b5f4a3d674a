//! The hook lines of Barman's configuration, as `config check` judges them: a
//! `post_backup_retry_script` that names a program that does not exist exits 127, which Barman
//! retries for ever (`barman backup` never returns), so a wrong path must be said before the
//! first backup, not found after it.

use std::path::{Path, PathBuf};

use super::conf::BarmanConf;

/// The hook keys that can run `queue-add`.
const HOOK_KEYS: [&str; 2] = ["post_backup_retry_script", "post_backup_script"];

/// What is wrong with the hooks, and whether any server queues its backups at all.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HookReport {
    /// One line per hook that cannot run barmans3 (these hold `barman backup` or lose backups).
    pub broken: Vec<String>,
    /// Active servers whose configuration has no hook running `queue-add`.
    pub unqueued: Vec<String>,
}

/// Judges every active server's hook lines. `me` is this binary; `path` the PATH a bare
/// program name is looked up in (Barman's own, usually that of cron or the shell).
pub fn judge_hooks(conf: &BarmanConf, me: &Path, path: &str) -> HookReport {
    let mut r = HookReport::default();
    let me_real = std::fs::canonicalize(me).unwrap_or_else(|_| me.to_path_buf());
    for server in conf.servers() {
        let mut queued = false;
        for key in HOOK_KEYS {
            let Some(line) = conf.setting(&server, key) else {
                continue;
            };
            if !line.contains("queue-add") && !line.contains("barmans3") {
                continue;
            }
            let program = line.split_whitespace().next().unwrap_or("");
            match resolve(program, path) {
                None => r.broken.push(format!(
                    "server {server}: {key} = {line}: {program} does not exist{}; use {} queue-add",
                    if key == "post_backup_retry_script" {
                        " (Barman retries a hook that exits 127 for ever: barman backup never returns)"
                    } else {
                        " (the backup is never queued)"
                    },
                    me.display()
                )),
                Some(p) if !is_barmans3(&p, &me_real) => r.broken.push(format!(
                    "server {server}: {key} = {line}: {} is not barmans3 (this is {}); use {} queue-add",
                    p.display(),
                    me.display(),
                    me.display()
                )),
                Some(_) => queued |= line.split_whitespace().nth(1) == Some("queue-add"),
            }
        }
        if !queued {
            r.unqueued.push(server);
        }
    }
    r
}

/// The file a hook's program names: a path as it is, a bare name through `path`.
fn resolve(program: &str, path: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Whether `p` is this binary (or a link to it), or at least a program named barmans3.
fn is_barmans3(p: &Path, me_real: &Path) -> bool {
    std::fs::canonicalize(p).is_ok_and(|r| r == me_real)
        || p.file_name().is_some_and(|n| n == "barmans3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(hooks: &str) -> BarmanConf {
        BarmanConf::parse(&format!(
            "[barman]\nbarman_home = /b\n[pg]\nconninfo = x\n{hooks}[pg2]\nconninfo = y\npost_backup_script = /usr/local/bin/other.sh\n"
        ))
    }

    #[test]
    fn a_missing_retry_hook_binary_is_broken_and_a_right_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let me = dir.path().join("barmans3");
        std::fs::write(&me, "").expect("w");
        let missing = judge_hooks(
            &conf("post_backup_retry_script = /usr/local/bin/nosuch/barmans3 queue-add\n"),
            &me,
            "",
        );
        assert_eq!(missing.broken.len(), 1, "{missing:?}");
        assert!(missing.broken[0].contains("never returns"), "{missing:?}");
        assert_eq!(missing.unqueued, ["pg", "pg2"]);
        let ok = judge_hooks(
            &conf(&format!(
                "post_backup_retry_script = {} queue-add\n",
                me.display()
            )),
            &me,
            "",
        );
        assert_eq!(
            (ok.broken.len(), ok.unqueued.clone()),
            (0, vec!["pg2".to_string()])
        );
        // A bare name is found through PATH.
        let bare = judge_hooks(
            &conf("post_backup_retry_script = barmans3 queue-add\n"),
            &me,
            &format!("/nonexistent:{}", dir.path().display()),
        );
        assert!(bare.broken.is_empty(), "{bare:?}");
        // Another program under a barmans3 hook line.
        let other = dir.path().join("true");
        std::fs::write(&other, "").expect("w");
        let wrong = judge_hooks(
            &conf(&format!(
                "post_backup_retry_script = {} queue-add\n",
                other.display()
            )),
            &me,
            "",
        );
        assert!(wrong.broken[0].contains("is not barmans3"), "{wrong:?}");
    }
}
