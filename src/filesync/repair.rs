//! What glusterfind's incremental lists lose, put back where the local side proves it. Two
//! defects of glusterfind 10.3 (seen on a real volume):
//!
//! - every path is split at each `,` (meant for the names of hard links, which it joins with
//!   commas), so `NEW c,d` is written as `NEW c` and `NEW d`, one line per piece, in order;
//! - the last component of a MODIFY path is its bytes read as Latin-1 and encoded as UTF-8
//!   again, so `ünï` is listed as `Ã¼nÃ¯`.
//!
//! A listed path that does not exist is tried as a piece of a split name (joined with its
//! neighbours) and as a mangled name; a candidate counts only when it exists locally, and is
//! only ever uploaded. Deletions are never derived from a guess: a renamed or deleted name with
//! a comma leaves its old object behind, which a sync without `--files-from` removes.

use std::path::Path;

use super::local::{self, Probe, XattrNs};

/// The most pieces one name is put back from (a name with more commas stays missing).
const MAX_PIECES: usize = 16;

/// The names that the path at `i` may be a piece of: every run of consecutive listed paths
/// (`None` breaks a run: a line of another kind) that contains `i` and has at least two
/// pieces, joined with `,`. Shorter runs first, so the smallest name that exists wins.
pub fn comma_joins(paths: &[Option<&str>], i: usize) -> Vec<String> {
    let mut out = Vec::new();
    if paths.get(i).copied().flatten().is_none() {
        return out;
    }
    for len in 2..=MAX_PIECES {
        let first = i.saturating_sub(len - 1);
        for start in first..=i {
            let Some(run) = paths.get(start..start + len) else {
                break;
            };
            if let Some(pieces) = run.iter().copied().collect::<Option<Vec<&str>>>() {
                out.push(pieces.join(","));
            }
        }
    }
    out
}

/// The name glusterfind mangled into `path`: the characters of the last component taken as the
/// bytes they are in Latin-1. `None` when that changes nothing (no character above U+007F) or
/// cannot be the mangling (a character above U+00FF).
pub fn unmangle(path: &str) -> Option<Vec<u8>> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, path),
    };
    if name.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    if let Some(d) = dir {
        out.extend_from_slice(d.as_bytes());
        out.push(b'/');
    }
    for c in name.chars() {
        out.push(u8::try_from(u32::from(c)).ok()?);
    }
    Some(out)
}

/// The existing name behind the missing listed path at `i`, if one of the repairs finds one.
pub fn recover(src: &Path, ns: XattrNs, paths: &[Option<&str>], i: usize) -> Option<String> {
    let exists = |p: &str| !matches!(local::probe(&src.join(p), ns), Probe::Missing);
    let path = paths.get(i).copied().flatten()?;
    let unmangled = unmangle(path).and_then(|b| String::from_utf8(b).ok());
    unmangled
        .into_iter()
        .chain(comma_joins(paths, i))
        .find(|p| exists(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_joined_with_its_neighbours_in_every_run_that_holds_it() {
        let l = [Some("a"), Some("b"), None, Some("c"), Some("d"), Some("e")];
        assert_eq!(comma_joins(&l, 0), vec!["a,b"]);
        assert_eq!(comma_joins(&l, 1), vec!["a,b"]);
        assert!(comma_joins(&l, 2).is_empty());
        assert_eq!(comma_joins(&l, 3), vec!["c,d", "c,d,e"]);
        assert_eq!(comma_joins(&l, 4), vec!["c,d", "d,e", "c,d,e"]);
        assert_eq!(comma_joins(&l, 5), vec!["d,e", "c,d,e"]);
        // A directory with a comma: its children's paths are cut inside the directory name.
        let l = [Some("d"), Some("e/f")];
        assert_eq!(comma_joins(&l, 1), vec!["d,e/f"]);
        assert!(comma_joins(&[Some("x")], 0).is_empty());
        assert!(comma_joins(&[], 0).is_empty());
    }

    #[test]
    fn runs_are_bounded() {
        let many = vec![Some("p"); 40];
        let joins = comma_joins(&many, 20);
        assert_eq!(joins.iter().map(|j| j.split(',').count()).max(), Some(16));
    }

    #[test]
    fn a_mangled_last_component_is_read_back_as_latin1() {
        // glusterfind 10.3 lists a chmod of "ünï" (c3 bc 6e c3 af) as "Ã¼nÃ¯".
        assert_eq!(unmangle("Ã¼nÃ¯").as_deref(), Some("ünï".as_bytes()));
        // Only the last component: the directory part comes through readlink, intact.
        assert_eq!(unmangle("dïr/fÃ©").as_deref(), Some("dïr/fé".as_bytes()));
        // A Latin-1 name on disk (not UTF-8) comes back as its own bytes.
        assert_eq!(unmangle("caf\u{e9}").as_deref(), Some(&b"caf\xe9"[..]));
        assert_eq!(unmangle("plain/name"), None);
        assert_eq!(unmangle("d\u{20ac}"), None, "above U+00FF: not a mangling");
    }

    #[test]
    fn only_an_existing_name_is_recovered() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("c,d"), b"x").expect("w");
        std::fs::write(dir.path().join("ünï"), b"x").expect("w");
        std::fs::create_dir(dir.path().join("d,e")).expect("mkdir");
        std::fs::write(dir.path().join("d,e/f"), b"x").expect("w");
        let ns = XattrNs::User;
        let l = [Some("c"), Some("d"), Some("Ã¼nÃ¯"), Some("d"), Some("e/f")];
        let got: Vec<_> = (0..l.len())
            .map(|i| recover(dir.path(), ns, &l, i))
            .collect();
        assert_eq!(
            got,
            vec![
                Some("c,d".to_string()),
                Some("c,d".to_string()),
                Some("ünï".to_string()),
                Some("d,e/f".to_string()),
                Some("d,e/f".to_string()),
            ]
        );
        assert_eq!(recover(dir.path(), ns, &[Some("gone")], 0), None);
    }
}
