//! The command line as a table: each subcommand and each validated flag, from argv to the
//! [`Invocation`] it yields, and the command lines that are rejected (by clap, or by our
//! validation), with the exit code each rejection asks for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::invocation::{
    Action, AdminAction, BarmanAction, ConfigAction, Invocation, Servers, Sink, Source, StoreAction,
};
use super::{Rejected, parse, subcommand_name};
use crate::barman::observe::verify::VerifyRequest;
use crate::barman::recover::catalog::InfoLayout;
use crate::filesync::{Compare, ListFormat};
use crate::gluster::Target;
use crate::logging::Verbosity;
use crate::store::Location;
use crate::store::reqlog::LogFormat;
use crate::volume::{PutMode, VolumeAction};

fn argv(line: &str) -> Vec<std::ffi::OsString> {
    std::iter::once("barmans3")
        .chain(line.split_whitespace())
        .map(Into::into)
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

type Check = fn(&Invocation) -> bool;

#[test]
fn every_subcommand_yields_its_action() {
    use crate::barman::observe::admin::Thresholds;
    let rows: &[(&str, Check)] = &[
        ("queue-add", |i| matches!(i.action, Action::QueueAdd)),
        ("drill pg", |i| {
            matches!(&i.action, Action::Barman(BarmanAction::Drill { server, opts, prometheus: None })
                if server == "pg" && opts.backup.is_none() && opts.target == crate::barman::drill::Target::End
                    && opts.timeout == secs(6 * 3600) && opts.dbname == "postgres" && !opts.keep
                    && opts.layout == crate::barman::remote::BucketLayout::Barmans3)
        }),
        ("drill pg --layout barman-cloud", |i| {
            matches!(&i.action, Action::Barman(BarmanAction::Drill { opts, .. })
                if opts.layout == crate::barman::remote::BucketLayout::BarmanCloud)
        }),
        (
            "drill pg --backup 20260101T000000 --target-lsn 0/3000060 --dest /s --keep --query q1 --query q2 --timeout 10m --prometheus /p.prom",
            |i| {
                matches!(&i.action, Action::Barman(BarmanAction::Drill { opts, prometheus: Some(p), .. })
                if opts.backup.as_deref() == Some("20260101T000000")
                    && opts.target == crate::barman::drill::Target::Lsn("0/3000060".into())
                    && opts.dest.as_deref() == Some(Path::new("/s")) && opts.keep
                    && opts.queries == ["q1", "q2"] && opts.timeout == secs(600)
                    && p == Path::new("/p.prom"))
            },
        ),
        ("base-sync", |i| {
            matches!(i.action, Action::Barman(BarmanAction::BaseSync))
        }),
        (
            "wal-sync pg",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalSync { servers: Servers::One(s), full: false, follow: None }) if s == "pg"),
        ),
        ("wal-sync --all --full", |i| {
            matches!(
                i.action,
                Action::Barman(BarmanAction::WalSync {
                    servers: Servers::All,
                    full: true,
                    follow: None
                })
            )
        }),
        (
            "wal-sync pg --follow",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalSync { follow: Some(f), .. }) if f.poll == secs(60) && f.settle == secs(2)),
        ),
        (
            "wal-sync pg --follow --poll 5s",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalSync { follow: Some(f), .. }) if f.poll == secs(5)),
        ),
        (
            "base-ls pg",
            |i| matches!(&i.action, Action::Barman(BarmanAction::BaseLs { server, layout: crate::barman::remote::BucketLayout::Barmans3 }) if server == "pg"),
        ),
        ("base-ls pg --layout barman-cloud", |i| {
            matches!(
                &i.action,
                Action::Barman(BarmanAction::BaseLs {
                    layout: crate::barman::remote::BucketLayout::BarmanCloud,
                    ..
                })
            )
        }),
        (
            "full-sync pg",
            |i| matches!(&i.action, Action::Barman(BarmanAction::FullSync { servers: Servers::One(s), opts }) if s == "pg" && !opts.no_delete && !opts.dry_run && !opts.force),
        ),
        (
            "full-sync --all --no-delete",
            |i| matches!(&i.action, Action::Barman(BarmanAction::FullSync { servers: Servers::All, opts }) if opts.no_delete),
        ),
        (
            "full-sync pg --no-delete --dry-run --force",
            |i| matches!(&i.action, Action::Barman(BarmanAction::FullSync { opts, .. }) if opts.no_delete && opts.dry_run && opts.force),
        ),
        (
            "base-restore pg 20260101T000000 /d",
            |i| matches!(&i.action, Action::Barman(BarmanAction::BaseRestore { server, id, dest, tablespaces, recovery: false, recovery_config: None, request_restore: None, layout: crate::barman::remote::BucketLayout::Barmans3 }) if server == "pg" && id == "20260101T000000" && dest == Path::new("/d") && tablespaces.is_empty()),
        ),
        (
            "base-restore pg 20260101T000000 /d --recovery --recovery-config /etc/barmans3/restore.yaml",
            |i| matches!(&i.action, Action::Barman(BarmanAction::BaseRestore { recovery: true, recovery_config: Some(c), .. }) if c == Path::new("/etc/barmans3/restore.yaml")),
        ),
        (
            "base-restore pg 20260101T000000 /d --tablespace 16385=/t --recovery --request-restore 3",
            |i| matches!(&i.action, Action::Barman(BarmanAction::BaseRestore { tablespaces, recovery: true, request_restore: Some(3), .. }) if tablespaces.get("16385") == Some(&PathBuf::from("/t"))),
        ),
        (
            "wal-restore pg 000000010000000000000001 pg_wal/RECOVERYXLOG",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalRestore { server, name, dest, layout: crate::barman::remote::BucketLayout::Barmans3 }) if server == "pg" && name == "000000010000000000000001" && dest == Path::new("pg_wal/RECOVERYXLOG")),
        ),
        (
            "wal-restore --layout barman-cloud pg 000000010000000000000001 p",
            |i| {
                matches!(
                    &i.action,
                    Action::Barman(BarmanAction::WalRestore {
                        layout: crate::barman::remote::BucketLayout::BarmanCloud,
                        ..
                    })
                )
            },
        ),
        (
            "base-restore pg 20260101T000000 /d --layout barman-cloud",
            |i| {
                matches!(
                    &i.action,
                    Action::Barman(BarmanAction::BaseRestore {
                        layout: crate::barman::remote::BucketLayout::BarmanCloud,
                        ..
                    })
                )
            },
        ),
        (
            "wal-restore pg 00000002.history /x",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalRestore { name, .. }) if name == "00000002.history"),
        ),
        (
            "catalog-restore pg",
            |i| matches!(&i.action, Action::Barman(BarmanAction::CatalogRestore { server, opts }) if server == "pg" && opts.backups.is_empty() && opts.wals_since.is_none() && opts.layout.is_none()),
        ),
        (
            "catalog-restore pg --backup 20260101T000000 --wals-since 20260101T000000 --layout base",
            |i| matches!(&i.action, Action::Barman(BarmanAction::CatalogRestore { opts, .. }) if opts.backups == ["20260101T000000"] && opts.wals_since.as_deref() == Some("20260101T000000") && opts.layout == Some(InfoLayout::Base)),
        ),
        (
            "catalog-restore pg --layout meta",
            |i| matches!(&i.action, Action::Barman(BarmanAction::CatalogRestore { opts, .. }) if opts.layout == Some(InfoLayout::Meta)),
        ),
        (
            "wal-prefetch pg --spool /s",
            |i| matches!(&i.action, Action::Barman(BarmanAction::WalPrefetch { server, spool, layout: crate::barman::remote::BucketLayout::Barmans3 }) if server == "pg" && spool == Path::new("/s")),
        ),
        ("status", |i| {
            matches!(
                i.action,
                Action::Admin(AdminAction::Status { prometheus: None })
            )
        }),
        (
            "status --prometheus /p.prom",
            |i| matches!(&i.action, Action::Admin(AdminAction::Status { prometheus: Some(p) }) if p == Path::new("/p.prom")),
        ),
        (
            "status --forget-follower pg",
            |i| matches!(&i.action, Action::Admin(AdminAction::ForgetFollower(s)) if s == "pg"),
        ),
        ("check", |i| {
            matches!(i.action, Action::Check(Thresholds { wal_warning, wal_critical, stuck, .. }, timeout)
                if wal_warning == secs(1800) && wal_critical == secs(7200) && stuck == secs(43200) && timeout == secs(10))
        }),
        (
            "check --wal-warning 1m --wal-critical 5m --stuck-after 1h --timeout 3s",
            |i| {
                matches!(i.action, Action::Check(Thresholds { wal_warning, wal_critical, stuck, .. }, timeout)
                if wal_warning == secs(60) && wal_critical == secs(300) && stuck == secs(3600) && timeout == secs(3))
            },
        ),
        ("queue ls", |i| {
            matches!(i.action, Action::Admin(AdminAction::QueueLs))
        }),
        (
            "queue retry 20260101T000000",
            |i| matches!(&i.action, Action::Admin(AdminAction::QueueRetry(id, false)) if id == "20260101T000000"),
        ),
        ("queue retry 20260101T000000 --force", |i| {
            matches!(&i.action, Action::Admin(AdminAction::QueueRetry(_, true)))
        }),
        (
            "queue prune --older-than 30d",
            |i| matches!(&i.action, Action::Admin(AdminAction::QueuePrune(d)) if *d == secs(30 * 86400)),
        ),
        (
            "verify pg",
            |i| matches!(&i.action, Action::Verify(VerifyRequest::Backups { server, ids, quick: false, .. }) if server == "pg" && ids.is_empty()),
        ),
        (
            "verify pg 20260101T000000 --quick",
            |i| matches!(&i.action, Action::Verify(VerifyRequest::Backups { ids, quick: true, .. }) if ids == &["20260101T000000"]),
        ),
        (
            "verify-wal pg",
            |i| matches!(&i.action, Action::Verify(VerifyRequest::Wal { server, read: false }) if server == "pg"),
        ),
        (
            "verify-wal --read pg",
            |i| matches!(&i.action, Action::Verify(VerifyRequest::Wal { server, read: true }) if server == "pg"),
        ),
        (
            "sync /src files/home/",
            |i| matches!(&i.action, Action::Sync(s) if s.src == Path::new("/src") && s.key_prefix == "files/home" && s.compare == Compare::SizeMtime && s.delete.is_none() && !s.dry_run && s.files_from.is_none()),
        ),
        (
            "sync /src p --checksum --delete --max-deletes 5 --force --dry-run --xattr-ns user",
            |i| matches!(&i.action, Action::Sync(s) if s.compare == Compare::Checksum && s.dry_run && s.delete.is_some_and(|d| d.max_deletes == 5 && d.force) && s.xattr_ns == crate::filesync::XattrNs::User),
        ),
        (
            "sync /src p --delete",
            |i| matches!(&i.action, Action::Sync(s) if s.delete.is_some_and(|d| d.max_deletes == 1000 && !d.force)),
        ),
        (
            "sync /src p --files-from /l --files-format glusterfind --field-separator :: --allow-missing",
            |i| matches!(&i.action, Action::Sync(s) if s.files_from.as_ref().is_some_and(|f| f.path == Path::new("/l") && f.format == ListFormat::Glusterfind && f.separator == "::" && f.allow_missing)),
        ),
        (
            "sync /src p --files-from /l --files-format lines",
            |i| matches!(&i.action, Action::Sync(s) if s.files_from.as_ref().is_some_and(|f| f.format == ListFormat::Lines && f.separator == " " && !f.allow_missing)),
        ),
        (
            "sync /src p --files-from /l --files-format glusterfind-raw",
            |i| matches!(&i.action, Action::Sync(s) if s.files_from.as_ref().is_some_and(|f| f.format == ListFormat::GlusterfindRaw)),
        ),
        (
            "archive /brick --mount /mnt --older-than 30d --volume gv0",
            |i| matches!(&i.action, Action::Archive(a) if a.brick == Path::new("/brick") && a.mount == Path::new("/mnt") && a.older_than == secs(30 * 86400) && a.target == Target::Volume("gv0".into()) && !a.dry_run && a.max_files.is_none() && a.max_bytes.is_none()),
        ),
        (
            "archive /b --mount /m --older-than 1d --bucketid bkt/p --dry-run --max-files 10 --max-bytes 1MiB --journal /j --verify-read --allow-sparse",
            |i| matches!(&i.action, Action::Archive(a) if a.target == Target::BucketId("bkt/p".into()) && a.dry_run && a.max_files == Some(10) && a.max_bytes == Some(1 << 20) && a.journal == Some(PathBuf::from("/j")) && a.verify_read && a.allow_sparse),
        ),
        (
            "volume put Full-0001 /f",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Put(p)) if p.name.as_str() == "Full-0001" && p.source == crate::volume::Source::File("/f".into()) && p.chunk_size.is_none() && p.mode == PutMode::New),
        ),
        (
            "volume put V - --chunk-size 10MiB --resume",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Put(p)) if p.source == crate::volume::Source::Stdin && p.chunk_size == Some(10 << 20) && p.mode == PutMode::Resume),
        ),
        (
            "volume put V - --append",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Put(p)) if p.mode == PutMode::Append),
        ),
        (
            "volume put V - --chunk-size 1KiB --allow-small-chunks",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Put(p)) if p.chunk_size == Some(1024)),
        ),
        (
            "volume get V -",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Get(g)) if g.name.as_str() == "V" && g.dest == crate::volume::Sink::Stdout && g.offset == 0 && g.length.is_none() && !g.allow_truncated),
        ),
        (
            "volume get V /o --offset 1KiB --length 2KiB --allow-truncated",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Get(g)) if g.dest == crate::volume::Sink::File("/o".into()) && g.offset == 1024 && g.length == Some(2048) && g.allow_truncated),
        ),
        ("volume ls", |i| {
            matches!(i.action, Action::Volume(VolumeAction::Ls(None)))
        }),
        (
            "volume ls V",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Ls(Some(v))) if v.as_str() == "V"),
        ),
        (
            // Bareos' names: `/` between segments, a leading dot.
            "volume ls pool/Full-0001",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Ls(Some(v))) if v.as_str() == "pool/Full-0001"),
        ),
        (
            "volume get .V -",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Get(g)) if g.name.as_str() == ".V"),
        ),
        (
            "volume status V",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Status(Some(v))) if v.as_str() == "V"),
        ),
        (
            "volume rm V --force",
            |i| matches!(&i.action, Action::Volume(VolumeAction::Rm { name, force: true }) if name.as_str() == "V"),
        ),
        (
            "completions bash",
            |i| matches!(&i.action, Action::Completions(s) if !s.is_empty()),
        ),
        ("config check", |i| {
            matches!(
                i.action,
                Action::Config(ConfigAction::Check { lock_proof: false })
            )
        }),
        ("config init", |i| {
            matches!(
                i.action,
                Action::Config(ConfigAction::Init { output: None })
            )
        }),
        (
            "config init --output /c.yaml",
            |i| matches!(&i.action, Action::Config(ConfigAction::Init { output: Some(o) }) if o == Path::new("/c.yaml")),
        ),
        (
            "config import-legacy /old.conf",
            |i| matches!(&i.action, Action::Config(ConfigAction::ImportLegacy { file }) if file == Path::new("/old.conf")),
        ),
        (
            "store put - k",
            |i| matches!(&i.action, Action::Store(StoreAction::Put { source: Source::Stdin, key }) if key == "k"),
        ),
        (
            "store put /f k",
            |i| matches!(&i.action, Action::Store(StoreAction::Put { source: Source::File(f), .. }) if f == Path::new("/f")),
        ),
        (
            "store get k -",
            |i| matches!(&i.action, Action::Store(StoreAction::Get { key, dest: Sink::Stdout, raw: false }) if key == "k"),
        ),
        ("store get --raw k -", |i| {
            matches!(&i.action, Action::Store(StoreAction::Get { raw: true, .. }))
        }),
        (
            "store get k /o",
            |i| matches!(&i.action, Action::Store(StoreAction::Get { dest: Sink::File(o), .. }) if o == Path::new("/o")),
        ),
        (
            "store ls",
            |i| matches!(&i.action, Action::Store(StoreAction::Ls { prefix, absolute: false }) if prefix.is_empty()),
        ),
        (
            "store ls a/",
            |i| matches!(&i.action, Action::Store(StoreAction::Ls { prefix, .. }) if prefix == "a/"),
        ),
        (
            "store ls --absolute a/",
            |i| matches!(&i.action, Action::Store(StoreAction::Ls { prefix, absolute: true }) if prefix == "a/"),
        ),
        ("store uploads", |i| {
            matches!(
                i.action,
                Action::Store(StoreAction::Uploads {
                    abort_older_than: None
                })
            )
        }),
        (
            "store uploads --abort-older-than 7d",
            |i| matches!(i.action, Action::Store(StoreAction::Uploads { abort_older_than: Some(d) }) if d == secs(7 * 86400)),
        ),
        (
            "gp-plugin backup_file /c.yaml /f --help",
            |i| matches!(&i.action, Action::GpPlugin(a) if a == &["backup_file", "/c.yaml", "/f", "--help"]),
        ),
    ];
    for (line, check) in rows {
        let inv = parse(argv(line)).unwrap_or_else(|e| panic!("{line}: rejected: {e:?}"));
        assert!(check(&inv), "{line}: {inv:?}");
    }
}

#[test]
fn every_global_option_lands_in_the_options() {
    let rows: &[(&str, Check)] = &[
        ("base-sync", |i| {
            let o = &i.options;
            o.config.is_none()
                && o.store.is_none()
                && o.verbosity == Verbosity::Normal
                && !o.json
                && o.request_log.is_none()
        }),
        ("--config /c.yaml base-sync", |i| {
            i.options.config == Some(PathBuf::from("/c.yaml"))
        }),
        ("base-sync --store s3://bkt/a/b/", |i| {
            i.options.store
                == Some((
                    Location::S3 {
                        bucket: "bkt".into(),
                        prefix: "a/b".into(),
                    },
                    "s3://bkt/a/b/".into(),
                ))
        }),
        (
            "--store file:///srv/x base-sync",
            |i| matches!(&i.options.store, Some((Location::Local { root }, _)) if root == Path::new("/srv/x")),
        ),
        ("-v base-sync", |i| {
            i.options.verbosity == Verbosity::Verbose
        }),
        ("-vv base-sync", |i| i.options.verbosity == Verbosity::Trace),
        ("-vvv base-sync", |i| {
            i.options.verbosity == Verbosity::Trace
        }),
        ("-q base-sync", |i| i.options.verbosity == Verbosity::Quiet),
        ("base-sync --json", |i| i.options.json),
        ("base-sync --progress", |i| i.options.progress),
        ("base-sync --no-progress", |i| !i.options.progress),
        (
            "base-sync --request-log /r.csv",
            |i| matches!(&i.options.request_log, Some(r) if r.path == Path::new("/r.csv") && r.format == LogFormat::Droplet),
        ),
        (
            "base-sync --request-log /r.csv --request-log-format extended",
            |i| matches!(&i.options.request_log, Some(r) if r.format == LogFormat::Extended),
        ),
    ];
    for (line, check) in rows {
        let inv = parse(argv(line)).unwrap_or_else(|e| panic!("{line}: rejected: {e:?}"));
        assert!(check(&inv), "{line}: {:?}", inv.options);
    }
}

/// Who refused a command line: clap (a malformed line) or our validation (a value clap took).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Clap,
    Us,
}

#[test]
fn as_of_lands_in_the_options_of_the_commands_that_read_the_past() {
    let t = std::time::SystemTime::UNIX_EPOCH + secs(1_796_036_400);
    for line in [
        "base-ls pg --as-of 2026-11-30T11:00:00Z",
        "base-restore pg 20261101T010000 /d --as-of 2026-11-30T12:00:00+01:00",
        "wal-restore pg 000000010000000000000001 /p --as-of 2026-11-30T11:00:00Z",
        "verify pg --as-of 2026-11-30T11:00:00Z",
        "catalog-restore pg --as-of 2026-11-30T11:00:00Z",
        "wal-prefetch pg --spool /s --as-of 2026-11-30T11:00:00Z",
    ] {
        let i = parse(argv(line)).unwrap_or_else(|_| panic!("{line}"));
        assert_eq!(i.options.as_of, Some(t), "{line}");
    }
    let i = parse(argv("base-ls pg")).expect("base-ls");
    assert_eq!(i.options.as_of, None);
    let i = parse(argv("config check --lock-proof")).expect("lock proof");
    assert!(matches!(
        i.action,
        Action::Config(ConfigAction::Check { lock_proof: true })
    ));
}

#[test]
fn bad_command_lines_are_rejected_before_anything_runs() {
    let rows: &[(&str, By)] = &[
        ("", By::Clap),
        ("no-such-command", By::Clap),
        ("-q -v base-sync", By::Clap),
        ("base-sync --progress --no-progress", By::Clap),
        ("base-sync --request-log-format extended", By::Clap),
        (
            "base-sync --request-log /r --request-log-format csv",
            By::Clap,
        ),
        ("base-ls pg --as-of yesterday", By::Clap),
        ("base-ls pg --as-of 2026-11-30T12:00:00", By::Clap),
        ("base-sync --as-of 2026-11-30T12:00:00Z", By::Clap),
        ("base-sync --store ftp://x", By::Us),
        ("base-sync --store s3://B", By::Us),
        ("base-sync --store file://relative", By::Us),
        ("wal-sync", By::Clap),
        ("wal-sync pg --all", By::Clap),
        ("wal-sync pg --full --follow", By::Clap),
        ("wal-sync pg --poll 5s", By::Clap),
        ("wal-sync pg --follow --poll 500ms", By::Clap),
        ("base-ls", By::Clap),
        ("full-sync", By::Clap),
        ("base-restore pg latest /d", By::Us),
        ("drill", By::Clap),
        ("drill pg --backup yesterday", By::Us),
        ("drill pg --target-lsn 12345", By::Us),
        ("drill pg --target-time 2026-01-01 --to-end", By::Clap),
        (
            "drill pg --target-time 2026-01-01 --target-lsn 0/1",
            By::Clap,
        ),
        ("drill pg --timeout 0s", By::Us),
        ("drill pg --timeout soon", By::Clap),
        ("drill pg --layout cnpg", By::Clap),
        (
            "base-restore pg 20260101T000000 /d --recovery-config /c.yaml",
            By::Clap,
        ),
        (
            "base-restore pg 20260101T000000 /d --tablespace 16385",
            By::Us,
        ),
        (
            "base-restore pg 20260101T000000 /d --tablespace x=/t",
            By::Us,
        ),
        ("base-restore pg 20260101T000000 /d --tablespace 1=", By::Us),
        (
            "base-restore pg 20260101T000000 /d --request-restore 0",
            By::Clap,
        ),
        (
            "base-restore pg 20260101T000000 /d --request-restore 3651",
            By::Clap,
        ),
        ("wal-restore pg RECOVERYXLOG /x", By::Us),
        ("wal-restore pg ../000000010000000000000001 /x", By::Us),
        ("wal-restore pg 000000010000000000000001", By::Clap),
        ("catalog-restore pg --backup latest", By::Us),
        ("catalog-restore pg --layout flat", By::Clap),
        ("catalog-restore pg --layout barman-cloud", By::Us),
        ("wal-prefetch pg", By::Clap),
        ("check --wal-warning soon", By::Clap),
        ("check --timeout", By::Clap),
        ("queue", By::Clap),
        ("queue retry", By::Clap),
        ("queue prune", By::Clap),
        ("queue prune --older-than forever", By::Clap),
        ("verify pg latest", By::Us),
        ("verify-wal", By::Clap),
        ("sync /src", By::Clap),
        ("sync /src /", By::Us),
        ("sync /src a//b", By::Us),
        ("sync /src a/../b", By::Us),
        ("sync /src p --max-deletes 5", By::Clap),
        ("sync /src p --force", By::Clap),
        ("sync /src p --files-from /l", By::Clap),
        ("sync /src p --files-format lines", By::Clap),
        ("sync /src p --allow-missing", By::Clap),
        ("sync /src p --files-from /l --files-format csv", By::Clap),
        (
            "sync /src p --files-from /l --files-format lines --field-separator :",
            By::Us,
        ),
        ("archive /b --mount /m --older-than 1d", By::Clap),
        (
            "archive /b --mount /m --older-than 1d --volume v --bucketid b",
            By::Clap,
        ),
        ("archive /b --older-than 1d --volume v", By::Clap),
        (
            "archive /b --mount /m --older-than soon --volume v",
            By::Clap,
        ),
        (
            "archive /b --mount /m --older-than 1d --volume v --max-files 0",
            By::Us,
        ),
        (
            "archive /b --mount /m --older-than 1d --volume v --max-bytes 0",
            By::Us,
        ),
        ("volume put a/../b /f", By::Us),
        ("volume put a;b /f", By::Us),
        ("volume put V /f --chunk-size 1MiB", By::Us),
        ("volume put V /f --chunk-size 6GiB", By::Us),
        ("volume put V /f --chunk-size lots", By::Us),
        ("volume put V /f --resume --append", By::Clap),
        ("volume get V - --offset x", By::Us),
        ("volume get V - --length x", By::Us),
        ("volume get ./V -", By::Us),
        ("volume ls a//b", By::Us),
        ("volume rm", By::Clap),
        ("completions tcsh", By::Clap),
        ("config", By::Clap),
        ("config import-legacy", By::Clap),
        ("store put -", By::Clap),
        ("store uploads --abort-older-than soon", By::Clap),
    ];
    for (line, by) in rows {
        match parse(argv(line)) {
            Ok(inv) => panic!("{line}: accepted as {inv:?}"),
            Err(r) => {
                let got = match r {
                    Rejected::Clap(_) => By::Clap,
                    Rejected::Invalid(_) => By::Us,
                };
                assert_eq!(got, *by, "{line}: {r:?}");
                assert_eq!(r.exit_code(), 2, "{line}: {r:?}");
            }
        }
    }
}

#[test]
fn help_and_version_are_rejections_that_exit_0() {
    for line in ["--help", "base-sync --help", "--version", "help"] {
        match parse(argv(line)) {
            Err(r @ Rejected::Clap(_)) => assert_eq!(r.exit_code(), 0, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn the_subcommand_is_found_in_lines_clap_refuses() {
    let rows: &[(&str, Option<&str>)] = &[
        ("wal-restore pg", Some("wal-restore")),
        ("--config /c.yaml wal-restore pg x y z", Some("wal-restore")),
        ("--store s3://b -v queue-add --bogus", Some("queue-add")),
        ("-q", None),
        ("", None),
    ];
    for (line, want) in rows {
        assert_eq!(subcommand_name(&argv(line)).as_deref(), *want, "{line}");
    }
}
