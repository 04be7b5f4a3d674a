//! The keys of client-side encryption: the recipients new objects are encrypted to (age X25519
//! public keys, `age1…`) and the identities that open them (`AGE-SECRET-KEY-1…`, several for
//! rotated keys). Parsing only: the config reads the files, checks their modes and names the
//! setting; nothing here ever prints a secret, and errors name a line, never its content.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use age::x25519;
use age_core::format::{FileKey, Stanza};

use super::error::{CryptError, Fault};

/// The public keys every new object is encrypted to (at least one).
#[derive(Clone, PartialEq, Eq)]
pub struct Recipients(Vec<x25519::Recipient>);

impl Recipients {
    /// The recipients, de-duplicated in their order; `None` when there are none.
    pub fn new(list: impl IntoIterator<Item = x25519::Recipient>) -> Option<Self> {
        let mut v: Vec<x25519::Recipient> = Vec::new();
        for r in list {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        (!v.is_empty()).then_some(Recipients(v))
    }

    /// Their public keys, `age1…`.
    pub fn public_keys(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// Which set of recipients this is, whatever their order (the CRC32C of the sorted public
    /// keys): recorded with each ciphertext so that a copy of it is never made into a backup
    /// after the recipients changed (it would open only with the identities of the old set).
    pub fn fingerprint(&self) -> u32 {
        let mut keys = self.public_keys();
        keys.sort();
        crate::checksum::crc32c(keys.join("\n").as_bytes())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &x25519::Recipient> {
        self.0.iter()
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipients")
            .field(&self.public_keys())
            .finish()
    }
}

/// Parses one recipient: an age X25519 public key. The error says what the value looks like
/// instead, without repeating it (a secret key pasted by mistake must not reach a log).
pub fn parse_recipient(s: &str) -> Result<x25519::Recipient, &'static str> {
    let s = s.trim();
    if s.starts_with("AGE-SECRET-KEY-") {
        return Err(
            "is a secret key (an identity), not a recipient: list its public key instead (age-keygen -y FILE prints it), and keep the secret key in encryption.identity_file",
        );
    }
    if s.starts_with("ssh-") {
        return Err("is an SSH key: only age X25519 recipients (age1…) are supported");
    }
    x25519::Recipient::from_str(s).map_err(|_| {
        if s.starts_with("age1") {
            "is not an age X25519 recipient (age1… of 62 characters): plugin and post-quantum recipients are not supported"
        } else {
            "is not an age recipient: expected an X25519 public key, age1… as age-keygen prints it"
        }
    })
}

/// The lines of a key file that hold a key, with their 1-based numbers: blank lines and `#`
/// comments are skipped, as age does.
fn key_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a recipients file (age's `-R` format): one recipient a line. The error carries the
/// 1-based line number.
pub fn parse_recipients_file(text: &str) -> Result<Vec<x25519::Recipient>, (usize, &'static str)> {
    key_lines(text)
        .map(|(n, line)| parse_recipient(line).map_err(|why| (n, why)))
        .collect()
}

/// Parses an identity file (age's format: `AGE-SECRET-KEY-1…` a line). The error carries the
/// 1-based line number (0: the file holds none).
pub fn parse_identity_file(text: &str) -> Result<Vec<x25519::Identity>, (usize, &'static str)> {
    let mut out = Vec::new();
    for (n, line) in key_lines(text) {
        let id = x25519::Identity::from_str(line).map_err(|_| {
            let why = if line.starts_with("AGE-PLUGIN-") {
                "is a plugin identity: only age X25519 identities (AGE-SECRET-KEY-1…) are supported"
            } else if line.starts_with("age1") {
                "is a public key (a recipient), not an identity: the identity file holds AGE-SECRET-KEY-1… lines (age-keygen writes them)"
            } else {
                "is not an age identity (AGE-SECRET-KEY-1…, as age-keygen writes)"
            };
            (n, why)
        })?;
        out.push(id);
    }
    if out.is_empty() {
        return Err((0, "holds no identity (AGE-SECRET-KEY-1…)"));
    }
    Ok(out)
}

/// The identities that open objects, tried in order, and where they came from (for messages).
#[derive(Clone)]
pub struct Identities {
    keys: Arc<[x25519::Identity]>,
    setting: &'static str,
    files: Arc<[PathBuf]>,
}

impl Identities {
    /// Identities read from `files` through `setting`.
    pub fn new(setting: &'static str, files: Vec<PathBuf>, keys: Vec<x25519::Identity>) -> Self {
        Identities {
            keys: keys.into(),
            setting,
            files: files.into(),
        }
    }

    /// No identity: this host only encrypts; opening names `setting` as what to fill in.
    pub fn none(setting: &'static str) -> Self {
        Identities::new(setting, Vec::new(), Vec::new())
    }

    /// Whether there is at least one.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public keys of the identities (`age1…`): what `config check` shows of them.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// The files the identities came from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The file key of a header: the first identity that unwraps one of its stanzas.
    pub(crate) fn unwrap(&self, stanzas: &[Stanza], object: &str) -> Result<FileKey, CryptError> {
        if self.keys.is_empty() {
            return Err(CryptError::new(
                object,
                Fault::NoIdentity {
                    setting: self.setting,
                },
            ));
        }
        for key in self.keys.iter() {
            match age::Identity::unwrap_stanzas(key, stanzas) {
                Some(Ok(file_key)) => return Ok(file_key),
                Some(Err(_)) => {
                    return Err(CryptError::new(
                        object,
                        Fault::BadHeader("a malformed X25519 recipient stanza"),
                    ));
                }
                None => {}
            }
        }
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        Err(CryptError::new(
            object,
            Fault::NoMatchingIdentity {
                setting: self.setting,
                files: files.join(", "),
            },
        ))
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("public_keys", &self.public_keys())
            .field("files", &self.files)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age_core::secrecy::ExposeSecret;

    #[test]
    fn recipients_parse_and_mistakes_are_named_without_echo() {
        let id = x25519::Identity::generate();
        let public = id.to_public().to_string();
        assert_eq!(
            parse_recipient(&format!(" {public}\n")).map(|r| r.to_string()),
            Ok(public.clone())
        );
        let secret = id.to_string();
        let e = parse_recipient(secret.expose_secret()).expect_err("a secret key");
        assert!(
            e.contains("secret key") && !e.contains("AGE-SECRET-KEY-1"),
            "{e}"
        );
        assert!(
            parse_recipient("ssh-ed25519 AAAA")
                .expect_err("ssh")
                .contains("SSH")
        );
        assert!(
            parse_recipient("age1xyz")
                .expect_err("short")
                .contains("X25519")
        );
        assert!(parse_recipient("hello").is_err());
        let text = format!("# team key\n\n{public}\nnot-a-key\n");
        assert_eq!(parse_recipients_file(&text).expect_err("line 4").0, 4);
        let r =
            Recipients::new(parse_recipients_file(&format!("{public}\n{public}\n")).expect("ok"))
                .expect("one");
        assert_eq!(r.public_keys(), vec![public]);
        assert!(Recipients::new(Vec::new()).is_none());
    }

    #[test]
    fn identity_files_keep_their_secrets_out_of_errors_and_debug() {
        let a = x25519::Identity::generate();
        let b = x25519::Identity::generate();
        let text = format!(
            "# created: today\n{}\n\n{}\n",
            a.to_string().expose_secret(),
            b.to_string().expose_secret()
        );
        let keys = parse_identity_file(&text).expect("two");
        let ids = Identities::new("encryption.identity_files", vec!["/k".into()], keys);
        assert_eq!(
            ids.public_keys(),
            vec![a.to_public().to_string(), b.to_public().to_string()]
        );
        let shown = format!("{ids:?}");
        assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
        let bad = format!(
            "{}\nAGE-SECRET-KEY-1NOTBECH32\n",
            a.to_string().expose_secret()
        );
        assert_eq!(parse_identity_file(&bad).err().expect("line 2").0, 2);
        assert_eq!(
            parse_identity_file("# nothing\n").err().expect("empty").0,
            0
        );
        let e = parse_identity_file(&a.to_public().to_string())
            .err()
            .expect("public")
            .1;
        assert!(e.contains("public key"), "{e}");
    }
}
