//! The keys the config names: `encryption:` (age recipients and identities, client-side) and the
//! SSE-C key file of `s3.sse: customer`. Their raw form, their validation (files read here, key
//! files refused unless mode 600, every error names its key and file and never a key's
//! content), and their redacted form for `config check`: public keys, paths and the SSE-C key's
//! MD5, never a secret.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{PermissionPolicy, check_permissions};
use crate::crypt::{
    Identities, Keys, Recipients, SseCustomerKey, parse_identity_file, parse_recipient,
    parse_recipients_file,
};
use crate::error::{Error, Result, reason};

/// `encryption:` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_files: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    require_encrypted: Option<bool>,
    /// Shown by `config check` (what the identities open), never read.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    identity_public_keys: Option<Vec<String>>,
}

/// Client-side encryption: the keys, and the files they came from.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    /// Recipients and identities.
    pub keys: Keys,
    /// `encryption.recipients_file`, when the recipients (also) came from a file.
    pub recipients_file: Option<PathBuf>,
}

/// SSE-C (`s3.sse: customer`): the key and the file it came from.
#[derive(Debug, Clone)]
pub struct SseCustomerConfig {
    /// The key, in the forms the request headers take.
    pub key: SseCustomerKey,
    /// `s3.sse_customer_key_file`.
    pub key_file: PathBuf,
}

/// Key files are a few lines; anything larger is not one.
const MAX_KEY_FILE: u64 = 1 << 20;

fn err(file: &str, key: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{file}: {key}: {why}"))
}

/// Reads a file the config names, at most [`MAX_KEY_FILE`] bytes; `secret` files must be
/// mode 600 (like the config itself) and are wiped from memory after use.
fn read_key_file(file: &str, key: &str, path: &Path, secret: bool) -> Result<Zeroizing<Vec<u8>>> {
    let fail = |why: String| err(file, key, why);
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read {}: {}", path.display(), reason(&e))))?;
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", path.display())));
    }
    if secret {
        check_permissions(path, PermissionPolicy::Refuse).map_err(|e| fail(e.to_string()))?;
    }
    let mut buf = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| fail(format!("cannot read {}: {}", path.display(), reason(&e))))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(fail(format!(
            "{} is larger than 1 MiB: not a key file",
            path.display()
        )));
    }
    Ok(buf)
}

/// A key file as text, or an error naming the key and the file.
fn key_text(file: &str, key: &str, path: &Path, secret: bool) -> Result<Zeroizing<String>> {
    let bytes = read_key_file(file, key, path, secret)?;
    std::str::from_utf8(&bytes)
        .map(|s| Zeroizing::new(s.to_string()))
        .map_err(|_| err(file, key, format!("{} is not a text file", path.display())))
}

/// Validates `encryption:`. `file` labels the errors.
pub(super) fn encryption(
    file: &str,
    raw: Option<&RawEncryption>,
) -> Result<Option<EncryptionConfig>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut listed = Vec::new();
    for (i, r) in raw.recipients.iter().flatten().enumerate() {
        let key = format!("encryption.recipients[{i}]");
        listed.push(parse_recipient(r).map_err(|why| err(file, &key, format!("the value {why}")))?);
    }
    if let Some(path) = &raw.recipients_file {
        let key = "encryption.recipients_file";
        let text = key_text(file, key, path, false)?;
        let from_file = parse_recipients_file(&text).map_err(|(line, why)| {
            err(file, key, format!("{} line {line} {why}", path.display()))
        })?;
        if from_file.is_empty() {
            return Err(err(
                file,
                key,
                format!("{} lists no recipient", path.display()),
            ));
        }
        listed.extend(from_file);
    }
    let recipients = Recipients::new(listed).ok_or_else(|| {
        err(
            file,
            "encryption.recipients",
            "missing: list the age public keys (age1…) new objects are encrypted to, or name a recipients_file (age-keygen -y IDENTITY prints the public key)",
        )
    })?;
    let identities = identities(file, raw)?;
    Ok(Some(EncryptionConfig {
        keys: Keys {
            recipients,
            identities,
            require_sealed: raw
                .require_encrypted
                .unwrap_or(false)
                .then_some(crate::crypt::REQUIRE_SETTING),
        },
        recipients_file: raw.recipients_file.clone(),
    }))
}

/// Client-side encryption keys from a recipients file and an optional identity file, named by
/// the settings `recipients_key` and `identity_key` in errors (the gpbackup plugin's options).
pub fn keys_from_files(
    file: &str,
    recipients_key: &'static str,
    recipients: &Path,
    identity_key: &'static str,
    identity: Option<&Path>,
) -> Result<Keys> {
    let text = key_text(file, recipients_key, recipients, false)?;
    let listed = parse_recipients_file(&text).map_err(|(line, why)| {
        err(
            file,
            recipients_key,
            format!("{} line {line} {why}", recipients.display()),
        )
    })?;
    let recipients = Recipients::new(listed).ok_or_else(|| {
        err(
            file,
            recipients_key,
            format!("{} lists no recipient", recipients.display()),
        )
    })?;
    let Some(path) = identity else {
        return Ok(Keys {
            recipients,
            identities: Identities::none(identity_key),
            require_sealed: None,
        });
    };
    let text = key_text(file, identity_key, path, true)?;
    let found = parse_identity_file(&text).map_err(|(line, why)| {
        err(
            file,
            identity_key,
            format!("{} line {line} {why}", path.display()),
        )
    })?;
    Ok(Keys {
        recipients,
        identities: Identities::new(identity_key, vec![path.to_path_buf()], found),
        require_sealed: None,
    })
}

/// `encryption.identity_file` or `encryption.identity_files` (for rotated keys: all are tried).
fn identities(file: &str, raw: &RawEncryption) -> Result<Identities> {
    let (setting, paths): (&'static str, Vec<PathBuf>) =
        match (&raw.identity_file, &raw.identity_files) {
            (Some(_), Some(_)) => {
                return Err(err(
                    file,
                    "encryption.identity_files",
                    "also given as encryption.identity_file; keep one of them",
                ));
            }
            (Some(p), None) => ("encryption.identity_file", vec![p.clone()]),
            (None, Some(v)) if v.is_empty() => {
                return Err(err(
                    file,
                    "encryption.identity_files",
                    "is empty: name at least one identity file, or remove the key",
                ));
            }
            (None, Some(v)) => ("encryption.identity_files", v.clone()),
            (None, None) => return Ok(Identities::none("encryption.identity_file")),
        };
    let mut keys = Vec::new();
    for path in &paths {
        let text = key_text(file, setting, path, true)?;
        let found = parse_identity_file(&text).map_err(|(line, why)| {
            let at = if line == 0 {
                String::new()
            } else {
                format!(" line {line}")
            };
            err(file, setting, format!("{}{at} {why}", path.display()))
        })?;
        keys.extend(found);
    }
    Ok(Identities::new(setting, paths, keys))
}

/// Validates `s3.sse: customer` and `s3.sse_customer_key_file`.
pub(super) fn sse_customer(
    file: &str,
    sse: Option<&str>,
    key_file: Option<&PathBuf>,
) -> Result<Option<SseCustomerConfig>> {
    let key = "s3.sse_customer_key_file";
    match (sse, key_file) {
        (Some("customer"), Some(path)) => {
            let bytes = read_key_file(file, key, path, true)?;
            let parsed = SseCustomerKey::from_file_bytes(&bytes)
                .map_err(|why| err(file, key, format!("{} {why}", path.display())))?;
            Ok(Some(SseCustomerConfig {
                key: parsed,
                key_file: path.clone(),
            }))
        }
        (Some("customer"), None) => Err(err(
            file,
            key,
            "missing: sse: customer needs the file holding the 32-byte key (mode 600)",
        )),
        (_, Some(_)) => Err(err(file, key, "only valid with sse: customer")),
        (_, None) => Ok(None),
    }
}

/// The raw form of validated encryption settings, for `config check`: public keys and paths.
pub(super) fn raw_encryption(e: &Option<EncryptionConfig>) -> Option<RawEncryption> {
    let e = e.as_ref()?;
    let ids = &e.keys.identities;
    Some(RawEncryption {
        recipients: Some(e.keys.recipients.public_keys()),
        recipients_file: e.recipients_file.clone(),
        identity_file: None,
        identity_files: (!ids.is_empty()).then(|| ids.files().to_vec()),
        require_encrypted: Some(e.keys.require_sealed.is_some()),
        identity_public_keys: (!ids.is_empty()).then(|| ids.public_keys()),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use age::secrecy::ExposeSecret;
    use age::x25519;

    use super::*;
    use crate::config::Config;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().expect("tmp"))
        }
        fn file(&self, name: &str, body: &[u8], mode: u32) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, body).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        }
    }

    fn parse(yaml: &str) -> Result<Config> {
        Config::parse(
            &format!("s3:\n  bucket: bkt\n{yaml}"),
            Some(Path::new("/c.yaml")),
        )
    }

    fn fails(yaml: &str) -> String {
        let e = parse(yaml).expect_err(yaml);
        assert_eq!(e.exit().code(), 2, "{e}");
        let m = e.to_string();
        assert!(!m.contains('\n') && m.starts_with("/c.yaml: "), "{m}");
        m
    }

    fn secret_of(id: &x25519::Identity) -> String {
        id.to_string().expose_secret().to_string()
    }

    #[test]
    fn keys_load_and_config_check_shows_only_public_keys() {
        let d = Dir::new();
        let (a, b, c) = (
            x25519::Identity::generate(),
            x25519::Identity::generate(),
            x25519::Identity::generate(),
        );
        let ring = d.file(
            "ring.key",
            format!("# rotated\n{}\n{}\n", secret_of(&a), secret_of(&b)).as_bytes(),
            0o600,
        );
        let listed = d.file(
            "team.txt",
            format!("# team\n{}\n", c.to_public()).as_bytes(),
            0o644,
        );
        let cfg = parse(&format!(
            "encryption:\n  recipients: [{}]\n  recipients_file: {}\n  identity_files: [{}]\n",
            b.to_public(),
            listed.display(),
            ring.display()
        ))
        .expect("valid");
        let e = cfg.encryption.as_ref().expect("on");
        assert_eq!(
            e.keys.recipients.public_keys(),
            vec![b.to_public().to_string(), c.to_public().to_string()]
        );
        assert_eq!(
            e.keys.identities.public_keys(),
            vec![a.to_public().to_string(), b.to_public().to_string()]
        );
        let shown = cfg.to_redacted_yaml();
        for id in [&a, &b] {
            assert!(!shown.contains(&secret_of(id)), "{shown}");
            assert!(shown.contains(&id.to_public().to_string()), "{shown}");
        }
        assert!(
            !shown.contains("AGE-SECRET-KEY") && shown.contains("ring.key"),
            "{shown}"
        );
        assert!(!format!("{cfg:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn bad_keys_name_the_setting_and_the_file_never_the_key() {
        let d = Dir::new();
        let id = x25519::Identity::generate();
        let secret = secret_of(&id);
        let public = id.to_public().to_string();
        let good = d.file("good.key", format!("{secret}\n").as_bytes(), 0o600);
        let open = d.file("open.key", format!("{secret}\n").as_bytes(), 0o644);
        let junk = d.file(
            "junk.key",
            format!("{secret}\nhello {secret}x\n").as_bytes(),
            0o600,
        );
        let empty = d.file("empty.key", b"# nothing yet\n", 0o600);
        let bad_list = d.file(
            "list.txt",
            format!("{public}\nage1oops\n").as_bytes(),
            0o644,
        );
        let cases: Vec<(String, &[&str])> = vec![
            (
                format!("encryption:\n  recipients: [{public}, nope]\n"),
                &["encryption.recipients[1]"],
            ),
            (
                format!("encryption:\n  recipients: [\"{secret}\"]\n"),
                &["encryption.recipients[0]", "secret key"],
            ),
            (
                format!("encryption:\n  recipients_file: {}\n", bad_list.display()),
                &["encryption.recipients_file", "list.txt line 2"],
            ),
            (
                format!("encryption:\n  identity_file: {}\n", good.display()),
                &["encryption.recipients", "missing"],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_file: {}\n",
                    open.display()
                ),
                &["encryption.identity_file", "open.key", "chmod 600"],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_file: /nonexistent/x.key\n"
                ),
                &[
                    "encryption.identity_file",
                    "/nonexistent/x.key",
                    "No such file",
                ],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_files: [{}, {}]\n",
                    good.display(),
                    junk.display()
                ),
                &["encryption.identity_files", "junk.key line 2"],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_file: {}\n",
                    empty.display()
                ),
                &["empty.key holds no identity"],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_file: {0}\n  identity_files: [{0}]\n",
                    good.display()
                ),
                &["encryption.identity_files", "keep one"],
            ),
            (
                format!("encryption:\n  recipients: [{public}]\n  identity_files: []\n"),
                &["encryption.identity_files", "empty"],
            ),
            (
                format!("encryption:\n  recipient: [{public}]\n"),
                &["recipient"],
            ),
            (
                format!(
                    "encryption:\n  recipients: [{public}]\n  identity_file: {}\n",
                    d.0.path().display()
                ),
                &["not a regular file"],
            ),
        ];
        for (yaml, want) in cases {
            let m = fails(&yaml);
            for w in want {
                assert!(m.contains(w), "{yaml}: {m} lacks {w:?}");
            }
            assert!(!m.contains(&secret), "{m}");
        }
    }

    #[test]
    fn sse_c_key_files_raw_or_base64_mode_600() {
        use base64::Engine as _;
        let d = Dir::new();
        let raw: Vec<u8> = (100u8..132).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let raw_file = d.file("raw.key", &raw, 0o600);
        let b64_file = d.file("b64.key", format!("{b64}\n").as_bytes(), 0o600);
        let yaml = |p: &Path| {
            format!(
                "  sse: customer\n  sse_customer_key_file: {}\n",
                p.display()
            )
        };
        let a = parse(&yaml(&raw_file)).expect("raw key");
        let b = parse(&yaml(&b64_file)).expect("base64 key");
        let (ka, kb) = (
            &a.sse_customer.as_ref().expect("on").key,
            &b.sse_customer.as_ref().expect("on").key,
        );
        assert_eq!(ka, kb);
        assert_eq!(ka.key_base64().expose(), b64);
        let shown = a.to_redacted_yaml();
        assert!(
            shown.contains("sse: customer") && shown.contains("raw.key"),
            "{shown}"
        );
        assert!(
            shown.contains(ka.key_md5_base64()) && !shown.contains(&b64),
            "{shown}"
        );
        assert!(!format!("{a:?}").contains(&b64));
        let open = d.file("open.key", &raw, 0o640);
        let short = d.file("short.key", &raw[..31], 0o600);
        let cases: Vec<(String, &[&str])> = vec![
            (
                yaml(&open),
                &["s3.sse_customer_key_file", "open.key", "chmod 600"],
            ),
            (
                yaml(&short),
                &["s3.sse_customer_key_file", "short.key", "32 bytes"],
            ),
            (
                "  sse: customer\n".into(),
                &["s3.sse_customer_key_file", "missing"],
            ),
            (
                format!(
                    "  sse: AES256\n  sse_customer_key_file: {}\n",
                    raw_file.display()
                ),
                &["only valid with sse: customer"],
            ),
            (
                format!("{}  sse_kms_key_id: k\n", yaml(&raw_file)),
                &["s3.sse_kms_key_id"],
            ),
            ("  sse: rot13\n".into(), &["s3.sse", "customer"]),
        ];
        for (y, want) in cases {
            let m = fails(&y);
            for w in want {
                assert!(m.contains(w), "{y}: {m} lacks {w:?}");
            }
        }
    }

    #[test]
    fn encryption_and_sse_c_load_into_the_engine_and_store_settings() {
        let d = Dir::new();
        let id = x25519::Identity::generate();
        let key = d.file("k.key", &[7u8; 32], 0o600);
        let text = format!(
            "s3:\n  bucket: bkt\n  sse: customer\n  sse_customer_key_file: {}\nencryption:\n  recipients: [{}]\n",
            key.display(),
            id.to_public()
        );
        let cfg = d.file("c.yaml", text.as_bytes(), 0o600);
        let loaded = Config::load(&cfg, PermissionPolicy::Refuse).expect("loads");
        assert!(loaded.encryption.is_some());
        let sent = loaded
            .s3
            .sse_customer
            .as_ref()
            .expect("the store sends the key");
        assert_eq!(
            sent.key_md5_base64(),
            loaded
                .sse_customer
                .as_ref()
                .expect("ssec")
                .key
                .key_md5_base64()
        );
    }
}
