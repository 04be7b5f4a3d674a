//! Config helpers: the commented example for `config init`, and `config import-legacy`, which
//! turns a BarmanS3 `barmans3.conf` (shell variables, read as data) into our YAML and says what
//! changed.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::store::Location;
use crate::store::s3::validate_endpoint;

/// The commented example config (`etc/barmans3.yaml`).
pub const EXAMPLE: &str = include_str!("../../etc/barmans3.yaml");

/// A converted legacy config: the YAML and one note per decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The new config file's text.
    pub yaml: String,
    /// What changed and why, one line each.
    pub notes: Vec<String>,
}

/// The variables of a BarmanS3 file (`barmans3.conf`, queue task files): `NAME="value"`
/// lines, optionally `export`ed or single-quoted, read as data and never executed.
pub fn shell_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Converts the text of a BarmanS3 `barmans3.conf`.
pub fn import_legacy(text: &str, file: &str) -> Result<Imported> {
    let vars = shell_vars(text);
    let mut notes = Vec::new();
    let bucket_uri = vars
        .get("S3_BUCKET_URI")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "{file}: S3_BUCKET_URI is missing; it names the bucket (s3://bucket/path)"
            ))
        })?;
    let (bucket, prefix) = match Location::parse(bucket_uri.trim_end_matches('/')) {
        Ok(Location::S3 { bucket, prefix }) => (bucket, prefix),
        Ok(_) | Err(_) => {
            return Err(Error::Config(format!(
                "{file}: S3_BUCKET_URI={bucket_uri:?} is not an s3://bucket[/path] URL"
            )));
        }
    };
    let mut yaml = String::from(
        "# Imported from a BarmanS3 configuration by `barmans3 config import-legacy`.\ns3:\n",
    );
    if let Some(ep) = vars.get("S3_ENDPOINT_URI").filter(|v| !v.is_empty()) {
        validate_endpoint(ep)
            .map_err(|e| Error::Config(format!("{file}: S3_ENDPOINT_URI: {e}")))?;
        yaml.push_str(&format!("  endpoint: {}\n", quote(ep)));
    } else {
        notes.push(
            "S3_ENDPOINT_URI not set: AWS S3 is used, region from the AWS configuration".into(),
        );
    }
    yaml.push_str(&format!("  bucket: {}\n", quote(&bucket)));
    if !prefix.is_empty() {
        yaml.push_str(&format!("  prefix: {}\n", quote(&prefix)));
    }
    notes.push(
        "credentials: none in the file; the AWS credential chain is used as aws-cli did (~/.aws/credentials of the barman user, environment, instance role)".into(),
    );
    notes.push(
        "keys are unchanged: <prefix>/<server>/base/<id>/... and <prefix>/<server>/wals/...; objects uploaded by BarmanS3 are kept, a base backup it uploaded is complete once its backup.info is there".into(),
    );
    yaml.push_str("barman:\n  config: /etc/barman.conf\n");
    if let Some(root) = vars.get("BARMAN_ROOTPATH") {
        notes.push(format!(
            "BARMAN_ROOTPATH={root} dropped: server directories now come from Barman's own config (/etc/barman.conf), so per-server overrides work"
        ));
    }
    let queue = match vars.get("BASESYNC_QUEUE").filter(|v| !v.is_empty()) {
        Some(q) if q.starts_with("/var/run/") || q.starts_with("/run/") => {
            notes.push(format!(
                "BASESYNC_QUEUE={q} moved to /var/lib/barmans3/queue: /run is a tmpfs and loses queued backups on reboot; move pending *.run files there"
            ));
            "/var/lib/barmans3/queue".to_string()
        }
        Some(q) => q.clone(),
        None => "/var/lib/barmans3/queue".to_string(),
    };
    yaml.push_str(&format!(
        "state:\n  dir: /var/lib/barmans3/state\n  queue_dir: {}\n",
        quote(&queue)
    ));
    for k in vars.keys() {
        if ![
            "S3_ENDPOINT_URI",
            "S3_BUCKET_URI",
            "BARMAN_ROOTPATH",
            "BASESYNC_QUEUE",
        ]
        .contains(&k.as_str())
        {
            notes.push(format!(
                "{k} ignored: not a BarmanS3 setting barmans3 knows"
            ));
        }
    }
    // The result must load: the same validation as any config file.
    super::Config::parse(&yaml, None)?;
    Ok(Imported { yaml, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barmans3_conf_becomes_yaml_with_notes() {
        let i = import_legacy(
            "# BarmanS3\nS3_ENDPOINT_URI=\"https://s3.example.com\"\nS3_BUCKET_URI=\"s3://backups/barman/\"\nBARMAN_ROOTPATH=\"/var/lib/barman\"\nBASESYNC_QUEUE=\"/var/run/barmans3/queue.d\"\nFOO=1\n",
            "barmans3.conf",
        )
        .expect("imports");
        let c = super::super::Config::parse(&i.yaml, None).expect("valid");
        assert_eq!(
            c.location,
            Location::S3 {
                bucket: "backups".into(),
                prefix: "barman".into()
            }
        );
        assert_eq!(c.s3.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(
            c.state.queue_dir,
            std::path::PathBuf::from("/var/lib/barmans3/queue")
        );
        let notes = i.notes.join("\n");
        for want in [
            "tmpfs",
            "BARMAN_ROOTPATH",
            "FOO ignored",
            "credential chain",
        ] {
            assert!(notes.contains(want), "{want}: {notes}");
        }
        assert!(import_legacy("S3_ENDPOINT_URI=x\n", "f").is_err());
        assert!(import_legacy("S3_BUCKET_URI=\"http://x\"\n", "f").is_err());
    }

    #[test]
    fn the_example_config_is_valid() {
        super::super::Config::parse(EXAMPLE, None).expect("etc/barmans3.yaml parses");
    }

    /// Where the example points (no default exists for these).
    const SITE: &str =
        "s3:\n  endpoint: https://s3.example.com:9000\n  bucket: my-bucket\n  prefix: barman\n";

    /// Commented keys the example shows as illustrations, not as the default value.
    const ILLUSTRATIONS: [&str; 10] = [
        "store",
        "region",
        "profile",
        "access_key_id",
        "secret_access_key",
        "ca_bundle",
        "https_proxy",
        "storage_class",
        "acl",
        "log_dir",
    ];

    fn effective(text: &str) -> String {
        super::super::Config::parse(text, None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .to_redacted_yaml()
    }

    /// The example with every commented `key: value` line uncommented, illustrations aside.
    fn uncommented(known: &[String]) -> String {
        let mut out = String::new();
        for line in EXAMPLE.lines() {
            let indent = &line[..line.len() - line.trim_start().len()];
            let after = line.trim_start().strip_prefix("# ");
            let key = after
                .and_then(|a| a.trim_start().split_once(':'))
                .map(|(k, _)| k);
            match (after, key) {
                (Some(a), Some(k))
                    if known.iter().any(|n| n == k) && !ILLUSTRATIONS.contains(&k) =>
                {
                    out.push_str(indent);
                    out.push_str(a);
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_example_config_shows_defaults_as_defaults() {
        let defaults = effective(SITE);
        // As shipped: only the location is set, everything else is the program's default
        // (an explicit `request_checksum: when_supported` once turned the probe off).
        assert_eq!(
            effective(EXAMPLE),
            defaults,
            "etc/barmans3.yaml overrides a default"
        );
        // Every value shown in a comment is the default, so uncommenting it changes nothing.
        let known: Vec<String> = defaults
            .lines()
            .filter_map(|l| l.trim_start().split_once(':'))
            .map(|(k, _)| k.to_string())
            .collect();
        let text = uncommented(&known);
        for key in [
            "request_checksum: auto",
            "wal_prefetch: 8",
            "\nstate:",
            "\nbarman:",
        ] {
            assert!(text.contains(key), "{key} is shown in the example:\n{text}");
        }
        assert_eq!(
            effective(&text),
            defaults,
            "a commented value is not the default:\n{text}"
        );
    }
}
