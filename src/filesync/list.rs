//! The `--files-from` reader: a whole change list parsed and validated before any request, so a
//! list that is not what its format says is refused (exit 2, naming the line) instead of being
//! half applied.
//!
//! glusterfind writes `TAG<FS>PATH` or `RENAME<FS>OLD<FS>NEW` with tags NEW, MODIFY, RENAME,
//! DELETE, and by default encodes only `%`, space and newline (`%25 %20 %0A`). Bareos' reader
//! decodes every `%XX` and `+` as a space, so `x+y` became `x y` and was skipped; here exactly
//! those three escapes are decoded, in one pass, and any other `%` means the list was not
//! encoded that way. `--output-prefix` lists carry absolute paths, accepted when they lie under
//! SRC_DIR.

use std::path::Path;

use crate::error::{Error, Result};

/// How the list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// One path per line, verbatim.
    Lines,
    /// glusterfind's default output: tagged, `%25 %20 %0A` encoded.
    Glusterfind,
    /// glusterfind `--no-encode` output: tagged, paths verbatim.
    GlusterfindRaw,
}

/// One change the list asks for. Paths are relative to SRC_DIR, normalised (no `.`, `..`,
/// empty or leading `/` components).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// NEW or MODIFY (or a bare path): upload the file, or every file under the directory.
    Upload(String),
    /// RENAME: upload `new`; `old` may go from the bucket.
    Rename {
        /// The old name.
        old: String,
        /// The new name.
        new: String,
    },
    /// DELETE: the path may go from the bucket.
    Delete(String),
    /// A well-formed line naming a path that cannot become a key (not UTF-8): an error of the
    /// run (exit 1), not of the list.
    Unmappable(String),
}

/// A change and the line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Line number in the list file.
    pub number: usize,
    /// What it asks for.
    pub change: Change,
}

const TAGS: [&str; 4] = ["NEW", "MODIFY", "RENAME", "DELETE"];

/// Reads and parses a list file. Any problem with the file or a line is [`Error::Usage`].
pub fn read(file: &Path, format: ListFormat, fs: &str, src: &Path) -> Result<Vec<Line>> {
    let bytes = std::fs::read(file).map_err(|e| {
        Error::Usage(format!(
            "--files-from {}: {}",
            file.display(),
            crate::error::reason(&e)
        ))
    })?;
    parse(&bytes, format, fs, src)
        .map_err(|(n, m)| Error::Usage(format!("--files-from {} line {n}: {m}", file.display())))
}

/// Parses a whole list; `Err((line, reason))` for the first malformed line.
pub fn parse(
    bytes: &[u8],
    format: ListFormat,
    fs: &str,
    src: &Path,
) -> std::result::Result<Vec<Line>, (usize, String)> {
    let mut body = bytes;
    if let Some(stripped) = body.strip_suffix(b"\n") {
        body = stripped;
    }
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut tagged: Option<bool> = None;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let number = i + 1;
        let change =
            parse_line(line, format, fs.as_bytes(), src, &mut tagged).map_err(|m| (number, m))?;
        out.push(Line { number, change });
    }
    Ok(out)
}

fn parse_line(
    line: &[u8],
    format: ListFormat,
    fs: &[u8],
    src: &Path,
    tagged: &mut Option<bool>,
) -> std::result::Result<Change, String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    if format == ListFormat::Lines {
        return path(line, format, src).map(|p| p.map_or_else(Change::Unmappable, Change::Upload));
    }
    let split = find(line, fs).map(|at| (&line[..at], &line[at + fs.len()..]));
    let is_tagged = split.is_some();
    match tagged {
        Some(t) if *t != is_tagged => {
            return Err(if is_tagged {
                "a tagged line in a list of bare paths".into()
            } else {
                "a bare path in a tagged list".into()
            });
        }
        _ => *tagged = Some(is_tagged),
    }
    let Some((tag, rest)) = split else {
        if format == ListFormat::GlusterfindRaw {
            return Err(
                "no tag (a list of bare paths without encoding is --files-format lines)".into(),
            );
        }
        // glusterfind --full --tag-for-full-find "": bare paths, listed as new.
        return path(line, format, src).map(|p| p.map_or_else(Change::Unmappable, Change::Upload));
    };
    let tag = String::from_utf8_lossy(tag);
    if !TAGS.contains(&tag.as_ref()) {
        return Err(format!(
            "unknown tag {tag:?} (glusterfind writes NEW, MODIFY, RENAME or DELETE; check --field-separator)"
        ));
    }
    let one = |p: &[u8]| path(p, format, src);
    Ok(match tag.as_ref() {
        "RENAME" => {
            let at = find(rest, fs).ok_or("RENAME needs OLD and NEW")?;
            let (old, new) = (&rest[..at], &rest[at + fs.len()..]);
            if find(new, fs).is_some() {
                return Err(
                    "RENAME is ambiguous: the separator occurs more than once (use another --field-separator)"
                        .into(),
                );
            }
            match (one(old)?, one(new)?) {
                (Ok(old), Ok(new)) => Change::Rename { old, new },
                (Err(bad), _) | (_, Err(bad)) => Change::Unmappable(bad),
            }
        }
        "DELETE" => one(rest)?.map_or_else(Change::Unmappable, Change::Delete),
        _ => one(rest)?.map_or_else(Change::Unmappable, Change::Upload),
    })
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes and normalises one path: `Err` for a malformed one (exit 2), `Ok(Err(lossy))` for a
/// well-formed one that is not UTF-8 (exit 1 later).
fn path(
    raw: &[u8],
    format: ListFormat,
    src: &Path,
) -> std::result::Result<std::result::Result<String, String>, String> {
    let bytes = match format {
        ListFormat::Glusterfind => decode(raw)?,
        _ => raw.to_vec(),
    };
    match String::from_utf8(bytes) {
        Ok(s) => normalise(&s, src).map(Ok),
        Err(e) => Ok(Err(format!(
            "{}: not a UTF-8 name, it cannot be an object key",
            String::from_utf8_lossy(e.as_bytes())
        ))),
    }
}

/// glusterfind's encoding undone: exactly `%25`, `%20`, `%0A` (either case), in one pass. A raw
/// space cannot occur in an encoded path.
pub fn decode(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let esc = raw.get(i + 1..i + 3).unwrap_or(&raw[i + 1..]);
                out.push(match esc {
                    b"25" => b'%',
                    b"20" => b' ',
                    b"0A" | b"0a" => b'\n',
                    _ => {
                        return Err(format!(
                            "%{} is not glusterfind's encoding (only %25, %20 and %0A; a list written with --no-encode is --files-format glusterfind-raw)",
                            String::from_utf8_lossy(esc)
                        ));
                    }
                });
                i += 3;
            }
            b' ' => {
                return Err(
                    "a raw space in an encoded path (a list written with --no-encode is --files-format glusterfind-raw)"
                        .into(),
                );
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A path relative to SRC_DIR: an absolute path must lie under SRC_DIR; `//` and `.` collapse;
/// `..` is refused.
pub fn normalise(p: &str, src: &Path) -> std::result::Result<String, String> {
    let rel = if p.starts_with('/') {
        under(p, src).ok_or_else(|| format!("{p:?} is not under {}", src.display()))?
    } else {
        p
    };
    let mut parts = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{p:?}: '..' is not allowed")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!("{p:?} names SRC_DIR itself, not a path in it"));
    }
    Ok(parts.join("/"))
}

/// `p` without SRC_DIR (as given or canonical) in front, at a `/` boundary.
fn under<'a>(p: &'a str, src: &Path) -> Option<&'a str> {
    let canonical = std::fs::canonicalize(src).ok();
    [Some(src), canonical.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.to_str())
        .find_map(|s| {
            let s = s.trim_end_matches('/');
            p.strip_prefix(s).filter(|r| r.starts_with('/'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, format: ListFormat, fs: &str) -> Vec<Change> {
        parse(text.as_bytes(), format, fs, Path::new("/src"))
            .expect("parses")
            .into_iter()
            .map(|l| l.change)
            .collect()
    }
    fn bad(text: &str, format: ListFormat, fs: &str) -> (usize, String) {
        parse(text.as_bytes(), format, fs, Path::new("/src")).expect_err("refused")
    }
    fn up(p: &str) -> Change {
        Change::Upload(p.into())
    }

    #[test]
    fn decoding_is_exactly_glusterfinds_three_escapes() {
        let cases: &[(&str, std::result::Result<&str, &str>)] = &[
            ("a%20b", Ok("a b")),
            ("100%25", Ok("100%")),
            ("l%0Al%0a", Ok("l\nl\n")),
            ("x+y", Ok("x+y")),
            ("%2520", Ok("%20")),
            ("caf\u{e9},t\tab", Ok("caf\u{e9},t\tab")),
            ("%zz", Err("%zz")),
            ("%41", Err("%41")),
            ("end%2", Err("%2")),
            ("end%", Err("%")),
            ("a b", Err("raw space")),
        ];
        for (raw, want) in cases {
            let got = decode(raw.as_bytes());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w.as_bytes()), "{raw}"),
                Err(w) => assert!(got.expect_err(raw).contains(w), "{raw}"),
            }
        }
    }

    #[test]
    fn paths_are_relative_to_the_source() {
        let src = Path::new("/mnt/gv0");
        let cases: &[(&str, std::result::Result<&str, &str>)] = &[
            ("d/f", Ok("d/f")),
            ("d//f", Ok("d/f")),
            ("./d/./f/", Ok("d/f")),
            ("/mnt/gv0/d/f", Ok("d/f")),
            ("/mnt/gv0x/f", Err("not under")),
            ("/etc/passwd", Err("not under")),
            ("d/../../etc", Err("'..'")),
            ("/mnt/gv0", Err("not under")),
            (".", Err("SRC_DIR itself")),
        ];
        for (p, want) in cases {
            match (normalise(p, src), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{p}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{p}: {g}"),
                (g, w) => panic!("{p}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn glusterfind_lines_become_changes() {
        let text = "NEW dir1\nNEW a%20b\nNEW 100%25\nNEW x+y\nMODIFY d/f\nRENAME old%20n new\nDELETE gone\n";
        assert_eq!(
            ok(text, ListFormat::Glusterfind, " "),
            vec![
                up("dir1"),
                up("a b"),
                up("100%"),
                up("x+y"),
                up("d/f"),
                Change::Rename {
                    old: "old n".into(),
                    new: "new".into()
                },
                Change::Delete("gone".into()),
            ]
        );
    }

    #[test]
    fn other_separators_raw_lists_and_bare_paths() {
        assert_eq!(
            ok("NEW==a%20b\nRENAME==x==y\n", ListFormat::Glusterfind, "=="),
            vec![
                up("a b"),
                Change::Rename {
                    old: "x".into(),
                    new: "y".into()
                }
            ]
        );
        assert_eq!(
            ok("NEW|a b\nRENAME|o p|n q\n", ListFormat::GlusterfindRaw, "|"),
            vec![
                up("a b"),
                Change::Rename {
                    old: "o p".into(),
                    new: "n q".into()
                }
            ]
        );
        assert_eq!(
            ok("NEW a b %zz\n", ListFormat::GlusterfindRaw, " "),
            vec![up("a b %zz")]
        );
        assert_eq!(
            ok("dir1\na%20b\n", ListFormat::Glusterfind, " "),
            vec![up("dir1"), up("a b")]
        );
        assert_eq!(
            ok("a b\n%zz\n", ListFormat::Lines, " "),
            vec![up("a b"), up("%zz")]
        );
        assert!(ok("", ListFormat::Glusterfind, " ").is_empty());
    }

    #[test]
    fn malformed_lists_name_the_line() {
        let g = ListFormat::Glusterfind;
        let r = ListFormat::GlusterfindRaw;
        let cases: &[(&str, ListFormat, &str, usize, &str)] = &[
            ("NEW a\nNEW %zz\n", g, " ", 2, "%zz"),
            ("NEW a\nCHANGE b\n", g, " ", 2, "unknown tag"),
            ("new a\n", g, " ", 1, "unknown tag"),
            ("NEW a\nb\n", g, " ", 2, "bare path in a tagged list"),
            ("b\nNEW a\n", g, " ", 2, "tagged line in a list of bare"),
            ("NEW a\n\nNEW b\n", g, " ", 2, "empty line"),
            ("RENAME a\n", g, " ", 1, "OLD and NEW"),
            ("RENAME a b c\n", g, " ", 1, "ambiguous"),
            ("RENAME a b c\n", r, " ", 1, "ambiguous"),
            ("NEW a b\n", g, " ", 1, "raw space"),
            ("plain\n", r, " ", 1, "no tag"),
            ("NEW ../x\n", g, " ", 1, "'..'"),
            ("NEW /elsewhere/x\n", g, " ", 1, "not under"),
        ];
        for (text, format, fs, line, msg) in cases {
            let (n, m) = bad(text, *format, fs);
            assert_eq!(n, *line, "{text:?}: {m}");
            assert!(m.contains(msg), "{text:?}: {m}");
        }
    }

    #[test]
    fn non_utf8_names_are_kept_for_the_run_to_report() {
        let got = parse(
            b"NEW ok\nNEW caf\xe9\n",
            ListFormat::Glusterfind,
            " ",
            Path::new("/s"),
        )
        .expect("well-formed");
        assert_eq!(got[0].change, up("ok"));
        assert!(matches!(&got[1].change, Change::Unmappable(m) if m.contains("UTF-8")));
        assert_eq!(got[1].number, 2);
    }
}
