//! The man pages, generated from the same clap definitions as `--help` (so they cannot drift),
//! with what a DBA looks for that clap does not know: the synopsis as it is typed
//! (`barmans3 base-restore [OPTIONS] SERVER BACKUP_ID DEST`), global options on every page,
//! EXIT STATUS, FILES, EXAMPLES and SEE ALSO naming only pages that are installed.

use clap::CommandFactory;

use super::Cli;

/// Man pages for the binary and every visible subcommand: (file name, roff text).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut root = Cli::command();
    root.build();
    let mut pages = Vec::new();
    collect(&root, &[], &mut pages);
    let names: Vec<String> = pages.iter().map(|(path, _)| page_name(path)).collect();
    let mut out: Vec<(String, Vec<u8>)> = pages
        .iter()
        .map(|(path, cmd)| (format!("{}.1", page_name(path)), render(path, cmd, &names)))
        .collect();
    // The Bareos droplet compatibility program is a binary of its own, with its own page.
    let mut page = Vec::new();
    if clap_mangen::Man::new(super::dplcompat::command())
        .render(&mut page)
        .is_ok()
    {
        out.push(("barmans3-dplcompat.1".into(), page));
    }
    out
}

/// Every visible command with the words after `barmans3` that reach it.
fn collect(cmd: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, clap::Command)>) {
    out.push((path.to_vec(), cmd.clone()));
    for sub in visible_subcommands(cmd) {
        let mut p = path.to_vec();
        p.push(sub.get_name().to_string());
        collect(sub, &p, out);
    }
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn page_name(path: &[String]) -> String {
    std::iter::once("barmans3")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-")
}

/// The synopsis as typed: `barmans3 WORDS [OPTIONS] POSITIONALS [COMMAND]`.
fn synopsis(path: &[String], cmd: &clap::Command) -> String {
    let mut words = vec!["barmans3".to_string()];
    words.extend(path.iter().cloned());
    words.push("[OPTIONS]".into());
    for a in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let name = a
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| a.get_id().to_string().to_uppercase(), |n| n.to_string());
        let many = a.get_num_args().is_some_and(|r| r.max_values() > 1);
        let dots = if many { "..." } else { "" };
        words.push(if a.is_required_set() {
            format!("{name}{dots}")
        } else {
            format!("[{name}{dots}]")
        });
    }
    if visible_subcommands(cmd).next().is_some() {
        words.push("COMMAND".into());
    }
    words.join(" ")
}

fn render(path: &[String], cmd: &clap::Command, names: &[String]) -> Vec<u8> {
    let name = page_name(path);
    let page = cmd
        .clone()
        .display_name(name.clone())
        .override_usage(synopsis(path, cmd));
    let man = clap_mangen::Man::new(page.clone())
        .title(name.clone())
        .source(format!("barmans3 {}", env!("CARGO_PKG_VERSION")))
        .manual("barmans3 manual");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    // Each render_* call repeats clap_mangen's two-line preamble: keep the first.
    let preamble = b".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let mut out = dedup_preamble(&out, preamble);
    let mut text = String::new();
    let subs: Vec<&clap::Command> = visible_subcommands(cmd).collect();
    if !subs.is_empty() {
        text.push_str(".SH COMMANDS\n");
        for s in &subs {
            let mut p = path.to_vec();
            p.push(s.get_name().to_string());
            text.push_str(&format!(
                ".TP\n\\fB{}\\fR(1)\n{}\n",
                esc(&page_name(&p)),
                esc(&s.get_about().map(|a| a.to_string()).unwrap_or_default())
            ));
        }
    }
    section(&mut text, "\"EXIT STATUS\"", &exit_status(path));
    section(&mut text, "FILES", FILES);
    let examples = examples(path);
    if !examples.is_empty() {
        text.push_str(".SH EXAMPLES\n");
        for e in examples {
            text.push_str(&format!(".PP\n.nf\n{}\n.fi\n", esc(e)));
        }
    }
    text.push_str(".SH \"SEE ALSO\"\n");
    text.push_str(&see_also(path, names).join(",\n"));
    text.push_str("\n.PP\nThe README: /usr/share/doc/barmans3/README.md\n");
    out.extend_from_slice(text.as_bytes());
    out
}

fn dedup_preamble(out: &[u8], preamble: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out);
    let p = String::from_utf8_lossy(preamble);
    let mut parts = text.split(p.as_ref());
    let mut s = parts.next().unwrap_or_default().to_string();
    s.push_str(&p);
    for part in parts {
        s.push_str(part);
    }
    s.into_bytes()
}

/// A section of paragraphs (blank lines separate them).
fn section(text: &mut String, title: &str, body: &str) {
    text.push_str(&format!(".SH {title}\n"));
    for para in body.split("\n\n") {
        text.push_str(&format!(".PP\n{}\n", esc(&para.replace('\n', " "))));
    }
}

/// Escapes text for roff: backslashes, hyphens (so they are not broken), and a leading dot or
/// quote (which would start a request).
fn esc(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    t.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn see_also(path: &[String], names: &[String]) -> Vec<String> {
    let own = page_name(path);
    let mut refs: Vec<String> = Vec::new();
    if path.is_empty() {
        refs.extend(names.iter().filter(|n| **n != own).cloned());
    } else {
        refs.push("barmans3".into());
        if path.len() > 1 {
            refs.push(page_name(&path[..path.len() - 1]));
        }
        refs.extend(
            related(path)
                .iter()
                .map(|r| format!("barmans3-{r}"))
                .filter(|r| names.contains(r)),
        );
    }
    let mut v: Vec<String> = refs
        .iter()
        .map(|r| format!("\\fB{}\\fR(1)", esc(r)))
        .collect();
    if matches!(
        path.first().map(String::as_str),
        Some(
            "base-sync"
                | "wal-sync"
                | "full-sync"
                | "queue-add"
                | "base-restore"
                | "wal-restore"
                | "catalog-restore"
        )
    ) {
        v.push("\\fBbarman\\fR(1)".into());
    }
    v
}

fn related(path: &[String]) -> &'static [&'static str] {
    match path.first().map(String::as_str) {
        Some("queue-add") => &["base-sync", "queue", "full-sync"],
        Some("base-sync") => &["queue-add", "queue", "full-sync", "base-ls"],
        Some("wal-sync") => &["full-sync", "status", "check"],
        Some("full-sync") => &["base-sync", "wal-sync", "base-ls"],
        Some("base-ls") => &["base-restore", "verify"],
        Some("base-restore") => &["base-ls", "wal-restore", "verify"],
        Some("wal-restore") => &["base-restore", "verify-wal"],
        Some("status" | "check") => &["status", "check", "queue"],
        Some("verify" | "verify-wal") => &["verify", "verify-wal", "status"],
        _ => &[],
    }
}

const FILES: &str = "/etc/barmans3/barmans3.yaml: the configuration (mode 600, owner barman; \
--config or $BARMANS3_CONFIG name another). /usr/share/doc/barmans3/examples/barmans3.yaml, or \
barmans3 config init: the commented example.

/var/lib/barmans3/queue (state.queue_dir): the base-backup queue, one task file per backup \
(ID.run, .running, .done, .error). /var/lib/barmans3/state (state.dir): WAL positions, ledgers, \
locks, the last good runs for status and the metrics.

/var/log/barmans3/barmans3.log: appended to by every run when state.log_dir is set. \
/etc/cron.d/barmans3: the shipped cron jobs (every line runs with -q: silent on success).";

/// The EXIT STATUS text of a command (the README's table, narrowed to what it can return).
fn exit_status(path: &[String]) -> String {
    let common = "2: usage or configuration error; nothing was attempted.\n\n130: interrupted \
(SIGINT or SIGTERM); in-flight uploads were aborted.";
    let cmd = path.join(" ");
    match cmd.as_str() {
        "queue-add" => "0: the backup is queued.\n\n62: run as Barman's post_backup_retry_script, \
every failure (Barman's ABORT_CONTINUE: Barman carries on, and full-sync uploads what was not \
queued); any other exit would make Barman retry the hook for ever.\n\n2: run by hand with a bad \
configuration or outside a Barman hook."
            .into(),
        "base-sync" => format!(
            "0: every task was worked: uploaded and verified (DONE), or left for a later run \
(WAITING_FOR_WALS, the parent of an incremental backup not yet complete).\n\n1: a task \
failed (moved to .error after its attempts, see queue ls).\n\n75: another base-sync holds \
the queue's lock; this run did nothing.\n\n{common}"
        ),
        "wal-sync" => format!(
            "0: every new WAL file is in the bucket and verified. With --all, also when some \
servers were skipped because another run holds their lock. wal-sync --follow exits 0 when \
stopped with SIGTERM.\n\n1: a server failed (a WAL that differs from the bucket, the store \
after retries).\n\n75: another wal-sync holds the lock (with --all: of every server); this \
run did nothing.\n\n{common}"
        ),
        "full-sync" => format!(
            "0: done (with --dry-run: the plan was printed).\n\n1: a server failed or a \
deletion was refused (no local backups, more than barman.max_deletes without --force).\n\n75: \
another run holds the lock.\n\n{common}"
        ),
        "wal-restore" => "0: the file is at %p.\n\n1: the file is not in the bucket under any \
name it may have (PostgreSQL then ends recovery).\n\n200: any other failure, a bad command \
line or configuration included: PostgreSQL treats a status above 125 as fatal and stops \
recovery instead of promoting."
            .into(),
        "check" => "0: OK. 1: WARNING. 2: CRITICAL. 3: UNKNOWN (the check could not tell: a \
bad configuration, no answer within --timeout). Always one line on stdout (with --json, one \
object)."
            .into(),
        "status" => format!(
            "0: the status was printed (or written with --prometheus).\n\n1: the bucket could \
not be reached; the local facts were printed.\n\n{common}"
        ),
        "gp-plugin" => "0: success. 1: any error (one line on stderr and in the plugin's log). \
3: unknown plugin command."
            .into(),
        "completions"
        | "config"
        | "config init"
        | "config import-legacy"
        | "queue"
        | "store"
        | "volume"
        | "" => format!(
            "0: success.\n\n1: the operation failed.\n\n{common}\n\nSee each command's page: \
wal-restore, queue-add, check and the sync commands have codes of their own (200, 62, the \
Nagios states, 75)."
        ),
        _ => format!(
            "0: success: everything asked for was done and verified.\n\n1: the operation \
failed (network, store, verification).\n\n75: another run holds the lock for the same work; \
this run did nothing.\n\n{common}"
        ),
    }
}

fn examples(path: &[String]) -> &'static [&'static str] {
    match path.join(" ").as_str() {
        "" => &[
            "sudo -u barman barmans3 config check",
            "sudo -u barman barmans3 full-sync pg --no-delete    # first sync of server pg",
            "barmans3 base-restore --recovery pg 20260101T000000 /var/lib/postgresql/15/restore",
        ],
        "queue-add" => &[
            "# in /etc/barman.d/pg.conf (the path of the installed binary: command -v barmans3)\npost_backup_retry_script = /usr/bin/barmans3 queue-add",
        ],
        "base-sync" => &[
            "sudo -u barman barmans3 base-sync",
            "sudo -u barman barmans3 -q base-sync    # cron: silent on success",
        ],
        "wal-sync" => &[
            "sudo -u barman barmans3 wal-sync pg",
            "sudo -u barman barmans3 -q wal-sync --all           # cron",
            "sudo -u barman barmans3 wal-sync --all --follow     # systemd: barmans3-wal-follow.service",
        ],
        "full-sync" => &[
            "sudo -u barman barmans3 full-sync pg --no-delete    # first sync: upload only",
            "sudo -u barman barmans3 full-sync pg --dry-run      # what would be deleted",
            "sudo -u barman barmans3 -q full-sync --all          # nightly cron",
        ],
        "base-ls" => &["barmans3 base-ls pg", "barmans3 --json base-ls pg"],
        "base-restore" => &[
            "barmans3 base-restore --recovery pg 20260101T000000 /var/lib/postgresql/15/restore\nchown -R postgres: /var/lib/postgresql/15/restore",
        ],
        "wal-restore" => &[
            "# postgresql.conf of a restored cluster (base-restore --recovery writes it)\nrestore_command = 'barmans3-wal-restore pg %f %p'",
        ],
        "check" => &[
            "# NRPE\ncommand[barmans3]=sudo -u barman /usr/bin/barmans3 check --wal-warning 30m --wal-critical 2h",
        ],
        "status" => &[
            "sudo -u barman barmans3 status",
            "sudo -u barman barmans3 status --prometheus /var/lib/prometheus/node-exporter/barmans3.prom",
        ],
        "queue ls" => &["sudo -u barman barmans3 queue ls"],
        "queue retry" => &["sudo -u barman barmans3 queue retry 20260101T000000"],
        "queue prune" => &["sudo -u barman barmans3 queue prune --older-than 30d"],
        "config check" => &["sudo -u barman barmans3 config check"],
        "config init" => &["barmans3 config init --output /etc/barmans3/barmans3.yaml"],
        "verify" => &[
            "sudo -u barman barmans3 verify pg",
            "sudo -u barman barmans3 verify --quick pg",
        ],
        "verify-wal" => &["sudo -u barman barmans3 verify-wal pg"],
        _ => &[],
    }
}
