//! Preflight of `archive` (spec §1.2): before any file is touched, prove that what we upload
//! is what Gluster will recall. The volume's cloudsync settings (`gluster volume get VOL all`,
//! unless `--bucketid` replaces them) must name the S3 plugin and our bucket and prefix; the
//! store must serve plain GETs (no Glacier classes, no SSE-KMS, which V2-signed requests cannot
//! read); the mount must be the volume's root and the brick a brick's root, so that
//! volume-relative paths are the ones posix writes into `cs.remote`. A mount of a subdirectory
//! answers the root's gfid, so the mount's `glusterfs.pathinfo` decides: it must show every
//! brick at its root, BRICK among them.
//!
//! The checks are pure functions over the parsed settings; running `gluster` and reading the
//! root xattrs is the thin part at the end.

use std::collections::BTreeMap;
use std::path::Path;

use super::xattrs::{self, XattrNs};
use crate::error::{Error, Result};
use crate::store::Location;
use crate::store::s3::{S3Options, Sse};

/// The volume options the checks read. Only these are kept from gluster's output, which also
/// prints `features.s3plugin-seckey`.
const WANTED: [&str; 4] = [
    "features.cloudsync",
    "features.cloudsync-storetype",
    "features.cloudsync-remote-read",
    "features.s3plugin-bucketid",
];

/// Parses `gluster volume get VOL all`: a header `Option  Value`, a dash line, then one
/// `key  value` line per option (`cli-rpc-ops.c`, `%-40s %-39s`). Values glusterd fills from
/// the translator's default end in ` (DEFAULT)`, which is dropped.
pub fn parse_volume_get(out: &str) -> BTreeMap<String, String> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("Option"));
    lines.next();
    lines
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once(char::is_whitespace)?;
            WANTED.contains(&k).then(|| {
                let v = v.trim();
                let v = v.strip_suffix("(DEFAULT)").map_or(v, str::trim_end);
                (k.to_string(), v.to_string())
            })
        })
        .collect()
}

/// Gluster's boolean spellings (`gf_string2boolean`).
fn gluster_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "enable" | "1" => Some(true),
        "off" | "no" | "false" | "disable" | "0" => Some(false),
        _ => None,
    }
}

/// Whether `bucketid` names our store: `bucket` or `bucket/prefix` exactly as the S3 plugin
/// pastes it into its URL. A `file://` store stands in for one bucket, so any single name is
/// accepted there.
pub fn bucketid_matches(location: &Location, bucketid: &str) -> bool {
    match location {
        Location::S3 { bucket, prefix } if prefix.is_empty() => bucketid == bucket,
        Location::S3 { bucket, prefix } => bucketid == format!("{bucket}/{prefix}"),
        Location::Local { .. } => !bucketid.is_empty() && !bucketid.contains('/'),
    }
}

/// What `s3plugin-bucketid` must be for this store, for messages.
pub fn expected_bucketid(location: &Location) -> String {
    match location {
        Location::S3 { bucket, prefix } if prefix.is_empty() => bucket.clone(),
        Location::S3 { bucket, prefix } => format!("{bucket}/{prefix}"),
        Location::Local { .. } => "any single name (a file:// store is one bucket)".into(),
    }
}

/// Checks the volume's cloudsync options; returns its `s3plugin-bucketid`.
pub fn check_volume(
    vol: &str,
    opts: &BTreeMap<String, String>,
    location: &Location,
) -> std::result::Result<String, String> {
    let get = |k: &str| opts.get(k).map(String::as_str);
    if get("features.cloudsync").and_then(gluster_bool) != Some(true) {
        return Err(format!(
            "volume {vol}: features.cloudsync is not on; without it nothing is ever recalled"
        ));
    }
    if get("features.cloudsync-storetype") != Some("cloudsyncs3") {
        return Err(format!(
            "volume {vol}: features.cloudsync-storetype is {:?}, not cloudsyncs3: posix would truncate files that no plugin can recall",
            get("features.cloudsync-storetype").unwrap_or("unset")
        ));
    }
    if get("features.cloudsync-remote-read").and_then(gluster_bool) == Some(true) {
        return Err(format!(
            "volume {vol}: features.cloudsync-remote-read is on, which the cloudsyncs3 plugin cannot serve (cloudsync fails to start)"
        ));
    }
    let id = get("features.s3plugin-bucketid").unwrap_or("");
    if !bucketid_matches(location, id) {
        return Err(format!(
            "volume {vol}: features.s3plugin-bucketid is {id:?} but this store needs {} ({location}): files would be recalled from another place",
            expected_bucketid(location)
        ));
    }
    Ok(id.to_string())
}

/// Checks that objects we write can be fetched by the plugin's plain V2-signed GET.
pub fn check_store(s3: &S3Options, location: &Location) -> std::result::Result<(), String> {
    if !matches!(location, Location::S3 { .. }) {
        return Ok(());
    }
    if let Some(class) = s3.storage_classes.for_kind(crate::store::ObjectKind::Other)
        && matches!(
            class.to_ascii_uppercase().as_str(),
            "GLACIER" | "DEEP_ARCHIVE"
        )
    {
        return Err(format!(
            "s3.storage_class {class} needs a restore before any GET: Gluster could not recall archived files"
        ));
    }
    if matches!(s3.sse, Sse::Kms(_)) {
        return Err(
            "s3.sse aws:kms objects cannot be read with V2 signatures, the only ones Gluster's S3 plugin makes"
                .into(),
        );
    }
    Ok(())
}

/// Checks that a directory's gfid (from `read`) is the volume root's.
pub fn check_root(what: &str, dir: &Path, gfid: Option<[u8; 16]>) -> Result<()> {
    match gfid {
        Some(g) if g == xattrs::ROOT_GFID => Ok(()),
        Some(g) => Err(Error::Config(format!(
            "{what} {} is not the volume's root (gfid {}): paths under it would not match what Gluster records",
            dir.display(),
            super::decide::gfid_string(&g)
        ))),
        None => Err(Error::Config(format!(
            "{what} {} has no Gluster gfid: give the brick directory and a FUSE mount of the whole volume",
            dir.display()
        ))),
    }
}

/// The gfid of a path through the mount, as the mount reports it (`glusterfs.gfid.string`).
/// With the test emulator, the mount is a plain directory whose entries carry the gfid xattr
/// instead.
pub fn mount_gfid(ns: XattrNs, path: &Path, emulated: bool) -> Result<Option<[u8; 16]>> {
    if emulated {
        return Ok(xattrs::gfid_of(ns.get(path, xattrs::GFID)?));
    }
    match xattr::get(path, xattrs::MOUNT_GFID_STRING) {
        Ok(Some(v)) => Ok(parse_gfid_string(&String::from_utf8_lossy(&v))),
        Ok(None) => Ok(None),
        Err(e) if e.raw_os_error() == Some(95) => Ok(None),
        Err(e) => Err(Error::io(
            format!("read {} of {}", xattrs::MOUNT_GFID_STRING, path.display()),
            e,
        )),
    }
}

/// One brick behind a path of a Gluster mount, from `glusterfs.pathinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickPath {
    /// The brick directory, as the volume was created with it.
    pub root: String,
    /// The brick's host.
    pub host: String,
    /// The path on the brick (the root itself, with a trailing `/`, for the volume's root).
    pub path: String,
}

/// Parses every `<POSIX(ROOT):HOST:PATH>` of a pathinfo value, whatever groups they sit in.
/// PATH starts with ROOT, which is how the host (an IPv6 address has colons) is cut off.
pub fn parse_pathinfo(v: &str) -> Vec<BrickPath> {
    const OPEN: &str = "<POSIX(";
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let Some(close) = rest.find("):") else { break };
        let root = &rest[..close];
        let tail = &rest[close + 2..];
        let end = tail.find('>').unwrap_or(tail.len());
        let entry = &tail[..end];
        let (host, path) = match entry.find(&format!(":{root}")) {
            Some(i) if !root.is_empty() => (&entry[..i], &entry[i + 1..]),
            _ => entry.split_once(':').unwrap_or(("", entry)),
        };
        out.push(BrickPath {
            root: root.to_string(),
            host: host.to_string(),
            path: path.to_string(),
        });
        rest = &tail[end..];
    }
    out
}

/// Checks, from the pathinfo of the mount's root, that the mount shows the whole volume and
/// that `brick` is one of its bricks. A mount of a subdirectory (`mount HOST:/VOL/DIR`) answers
/// the volume root's gfid, so only the brick paths tell it: they point below the brick roots.
/// `is_brick` says whether a brick directory named there is `brick`.
pub fn check_pathinfo(
    mnt: &Path,
    brick: &Path,
    bricks: &[BrickPath],
    is_brick: impl Fn(&str) -> bool,
) -> std::result::Result<(), String> {
    if bricks.is_empty() {
        return Err(format!(
            "--mount {} answers no glusterfs.pathinfo: give a FUSE mount (mount -t glusterfs HOST:/VOLUME) of the volume",
            mnt.display()
        ));
    }
    if let Some(b) = bricks
        .iter()
        .find(|b| b.path.trim_end_matches('/') != b.root.trim_end_matches('/'))
    {
        let inside = b
            .path
            .strip_prefix(b.root.trim_end_matches('/'))
            .unwrap_or(&b.path);
        return Err(format!(
            "--mount {} is a mount of {inside} inside the volume, not of its root: archive needs a mount of the whole volume (mount -t glusterfs HOST:/VOLUME), where paths are the volume paths Gluster records",
            mnt.display()
        ));
    }
    if bricks.iter().any(|b| is_brick(&b.root)) {
        return Ok(());
    }
    let names: Vec<String> = bricks
        .iter()
        .map(|b| format!("{}:{}", b.host, b.root))
        .collect();
    Err(format!(
        "BRICK {} is not a brick of the volume mounted at {} (its bricks: {})",
        brick.display(),
        mnt.display(),
        names.join(", ")
    ))
}

/// Reads the pathinfo of the mount's root and runs [`check_pathinfo`].
pub fn check_mount(mnt: &Path, brick: &Path) -> Result<()> {
    let value = match xattr::get(mnt, xattrs::MOUNT_PATHINFO) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) if matches!(e.raw_os_error(), Some(61 | 95)) => Vec::new(),
        Err(e) => {
            return Err(Error::io(
                format!("read {} of {}", xattrs::MOUNT_PATHINFO, mnt.display()),
                e,
            ));
        }
    };
    let bricks = parse_pathinfo(&String::from_utf8_lossy(&value));
    let is_brick = |root: &str| {
        Path::new(root) == brick || std::fs::canonicalize(root).is_ok_and(|c| c == brick)
    };
    check_pathinfo(mnt, brick, &bricks, is_brick).map_err(Error::Config)
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn parse_gfid_string(s: &str) -> Option<[u8; 16]> {
    let hex: String = s
        .trim_end_matches('\0')
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(g)
}

/// Runs `gluster volume get VOL all` and returns the options the checks need.
pub async fn volume_options(vol: &str) -> Result<BTreeMap<String, String>> {
    let out = tokio::process::Command::new("gluster")
        .args(["--mode=script", "volume", "get", vol, "all"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Config(
                "--volume needs the gluster command, which is not installed here: run archive on a Gluster server, or give --bucketid with the volume's features.s3plugin-bucketid".into(),
            ),
            _ => Error::io("run gluster volume get", e),
        })?;
    if !out.status.success() {
        // stderr only: stdout holds every option, the S3 secret key among them.
        return Err(Error::Config(format!(
            "gluster volume get {vol} all failed ({}): {}",
            out.status,
            crate::error::one_line(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(parse_volume_get(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Option                                   Value                                  \n\
------                                   -----                                  \n\
cluster.lookup-unhashed                  on                                     \n\
features.cloudsync                       on                                     \n\
features.cloudsync-storetype             cloudsyncs3                            \n\
features.s3plugin-seckey                 SECRETSECRET                           \n\
features.s3plugin-bucketid               bkt/arch                               \n\
features.cloudsync-remote-read           off (DEFAULT)                          \n";

    fn s3(bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn volume_get_is_parsed_without_keeping_the_secret() {
        let m = parse_volume_get(OUT);
        assert_eq!(m["features.cloudsync"], "on");
        assert_eq!(m["features.cloudsync-remote-read"], "off");
        assert_eq!(m["features.s3plugin-bucketid"], "bkt/arch");
        assert!(!format!("{m:?}").contains("SECRET"));
        assert_eq!(
            check_volume("v", &m, &s3("bkt", "arch")),
            Ok("bkt/arch".into())
        );
    }

    #[test]
    fn each_unsafe_volume_setting_is_refused() {
        let base = parse_volume_get(OUT);
        let with = |k: &str, v: Option<&str>| {
            let mut m = base.clone();
            match v {
                Some(v) => m.insert(k.into(), v.into()),
                None => m.remove(k),
            };
            m
        };
        let cases = [
            (
                with("features.cloudsync", Some("off")),
                "cloudsync is not on",
            ),
            (with("features.cloudsync", None), "cloudsync is not on"),
            (
                with("features.cloudsync-storetype", Some("amazons3")),
                "not cloudsyncs3",
            ),
            (
                with("features.cloudsync-storetype", None),
                "not cloudsyncs3",
            ),
            (
                with("features.cloudsync-remote-read", Some("on")),
                "remote-read is on",
            ),
            (
                with("features.s3plugin-bucketid", Some("bkt")),
                "needs bkt/arch",
            ),
            (
                with("features.s3plugin-bucketid", Some("bkt/arch/")),
                "needs bkt/arch",
            ),
            (with("features.s3plugin-bucketid", None), "needs bkt/arch"),
        ];
        for (opts, want) in cases {
            let e = check_volume("v", &opts, &s3("bkt", "arch")).expect_err(want);
            assert!(e.contains(want), "{e}");
        }
        assert!(
            check_volume(
                "v",
                &with("features.cloudsync-remote-read", None),
                &s3("bkt", "arch")
            )
            .is_ok()
        );
    }

    #[test]
    fn bucketids_match_bucket_and_prefix_exactly() {
        assert!(bucketid_matches(&s3("b", ""), "b"));
        assert!(!bucketid_matches(&s3("b", ""), "b/"));
        assert!(bucketid_matches(&s3("b", "p/q"), "b/p/q"));
        assert!(!bucketid_matches(&s3("b", "p"), "b"));
        let local = Location::Local { root: "/x".into() };
        assert!(bucketid_matches(&local, "anything"));
        assert!(!bucketid_matches(&local, "a/b"));
        assert!(!bucketid_matches(&local, ""));
    }

    #[test]
    fn stores_gluster_cannot_read_from_are_refused() {
        let mut c = S3Options::default();
        assert!(check_store(&c, &s3("b", "")).is_ok());
        c.storage_classes.default = Some("DEEP_ARCHIVE".into());
        assert!(check_store(&c, &s3("b", "")).is_err());
        c.storage_classes.default = Some("STANDARD_IA".into());
        assert!(check_store(&c, &s3("b", "")).is_ok());
        c.sse = Sse::Kms(None);
        assert!(check_store(&c, &s3("b", "")).is_err());
        assert!(check_store(&c, &Location::Local { root: "/x".into() }).is_ok());
    }

    /// Real values of Gluster 10.3 (one brick; replica 2; distribute over two bricks; a
    /// mount of `VOL/sub`).
    const ONE: &str = "<POSIX(/s/cs):vm:/s/cs/>";
    const REP: &str =
        "(<REPLICATE:rep-replicate-0> <POSIX(/s/rep1):vm:/s/rep1/> <POSIX(/s/rep2):vm:/s/rep2/>)";
    const DIST: &str = "((<DISTRIBUTE:dist-dht> <POSIX(/s/dist2):vm:/s/dist2/> <POSIX(/s/dist1):vm:/s/dist1/>) (dist-dht-layout (dist-client-0 0 2147483646) (dist-client-1 2147483647 4294967295)))";
    const SUB: &str = "<POSIX(/s/cs):vm:/s/cs/sub>";

    fn bp(root: &str, host: &str, path: &str) -> BrickPath {
        BrickPath {
            root: root.into(),
            host: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn pathinfo_lists_every_brick_behind_a_path() {
        assert_eq!(parse_pathinfo(ONE), vec![bp("/s/cs", "vm", "/s/cs/")]);
        assert_eq!(
            parse_pathinfo(REP),
            vec![
                bp("/s/rep1", "vm", "/s/rep1/"),
                bp("/s/rep2", "vm", "/s/rep2/")
            ]
        );
        assert_eq!(
            parse_pathinfo(DIST),
            vec![
                bp("/s/dist2", "vm", "/s/dist2/"),
                bp("/s/dist1", "vm", "/s/dist1/")
            ]
        );
        assert_eq!(parse_pathinfo(SUB), vec![bp("/s/cs", "vm", "/s/cs/sub")]);
        assert_eq!(
            parse_pathinfo("<POSIX(/b):fe80::1:/b/>"),
            vec![bp("/b", "fe80::1", "/b/")]
        );
        assert!(parse_pathinfo("").is_empty());
        assert!(parse_pathinfo("<POSIX(/b").is_empty());
    }

    #[test]
    fn only_a_mount_of_the_whole_volume_of_this_brick_passes() {
        let m = Path::new("/mnt/v");
        let check = |v: &str, brick: &str| {
            check_pathinfo(m, Path::new(brick), &parse_pathinfo(v), |r| r == brick)
        };
        assert!(check(ONE, "/s/cs").is_ok());
        assert!(check(REP, "/s/rep2").is_ok());
        assert!(check(DIST, "/s/dist1").is_ok());
        let cases = [
            (SUB, "/s/cs", "a mount of /sub inside the volume"),
            (
                ONE,
                "/s/other",
                "not a brick of the volume mounted at /mnt/v (its bricks: vm:/s/cs)",
            ),
            (REP, "/s/rep3", "vm:/s/rep1, vm:/s/rep2"),
            ("", "/s/cs", "answers no glusterfs.pathinfo"),
        ];
        for (v, brick, want) in cases {
            let e = check(v, brick).expect_err(want);
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn the_roots_must_be_the_volume_root() {
        let p = Path::new("/m");
        assert!(check_root("mount", p, Some(xattrs::ROOT_GFID)).is_ok());
        assert!(check_root("mount", p, Some([7; 16])).is_err());
        assert!(check_root("mount", p, None).is_err());
        assert_eq!(
            parse_gfid_string("00000000-0000-0000-0000-000000000001\0"),
            Some(xattrs::ROOT_GFID)
        );
        assert_eq!(parse_gfid_string("0000"), None);
    }
}
