//! Decryption through a real gpg, on data encrypted with a passphrase (`--symmetric`): the
//! passphrase line and the ciphertext share stdin exactly as for Barman's key-encrypted files,
//! without a key to generate. Each test has its own gpg home, and stops its agent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A private gpg home for one test; its agent is stopped when it goes.
struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("b3-gpg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("home");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Home(dir)
    }

    /// `data` encrypted with `passphrase`, as gpg writes it.
    fn encrypt(&self, data: &[u8], passphrase: &str) -> Vec<u8> {
        let plain = self.0.join("plain");
        std::fs::write(&plain, data).expect("plain");
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(["--passphrase", passphrase, "--compress-level", "0"])
            .args(["--symmetric", "--output", "-"])
            .arg(&plain)
            .output()
            .expect("gpg (install gnupg: scripts/test-deps does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Barman's way with this home: gpg and the passphrase `command` prints.
    fn decryption(&self, command: &str, timeout: Duration) -> Decryption {
        let mut d = Decryption::barman(command, "test.conf [pg]".into(), timeout);
        let home = self.0.display().to_string();
        d.filter.argv.splice(1..1, ["--homedir".to_string(), home]);
        d
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A passphrase command that counts its runs in `dir/runs`.
fn counted(dir: &Path, passphrase: &str) -> String {
    format!(
        "echo run >> {}/runs; echo '  {passphrase}  '",
        dir.display()
    )
}

#[test]
fn whole_files_and_streams_decrypt_with_the_passphrase_read_once() {
    let home = Home::new("roundtrip");
    let want = data(3 << 20);
    let stored = home.encrypt(&want, "correct horse");
    assert!(super::super::looks_encrypted(&stored));
    let d = home.decryption(&counted(&home.0, "correct horse"), Duration::from_secs(60));
    let got = d.run(&stored, 4 << 20, "w").expect("whole");
    assert!(got == want, "whole: other bytes");
    // A clone shares the passphrase: the command ran once for both.
    let mut s = d
        .clone()
        .stream(std::io::Cursor::new(stored), "s")
        .expect("stream");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    s.finish().expect("finish");
    assert!(got == want, "stream: other bytes");
    let runs = std::fs::read_to_string(home.0.join("runs")).expect("runs");
    assert_eq!(runs.lines().count(), 1, "{runs}");
    // The limit holds for whole files.
    let e = d
        .run(&home.encrypt(&want, "correct horse"), 1 << 20, "w")
        .expect_err("limit");
    assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
}

#[test]
fn a_wrong_or_missing_passphrase_is_one_line_that_never_shows_it() {
    let home = Home::new("wrong");
    let stored = home.encrypt(&data(100_000), "right one");
    let d = home.decryption("echo hunter2-wrong", Duration::from_secs(60));
    for e in [d.run(&stored, 1 << 20, "WAL file x").expect_err("wrong"), {
        let mut s = d
            .stream(std::io::Cursor::new(stored.clone()), "base.tar.gpg")
            .expect("s");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.is_empty(), "plaintext from a wrong passphrase");
        s.finish().expect_err("wrong")
    }] {
        let m = e.to_string();
        assert!(matches!(e, Error::Failed(_)), "{m}");
        assert!(!m.contains('\n') && !m.contains("hunter2"), "{m}");
        assert!(m.contains("gpg (Barman's encryption = gpg)"), "{m}");
    }
    let e = home
        .decryption("true", Duration::from_secs(60))
        .ready()
        .expect_err("empty");
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(
        e.to_string()
            .contains("encryption_passphrase_command in test.conf [pg] printed no passphrase"),
        "{e}"
    );
    let e = home
        .decryption("echo hunter2-secret; exit 3", Duration::from_secs(60))
        .ready()
        .expect_err("failed");
    assert!(
        e.to_string().contains("encryption_passphrase_command"),
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn a_decryptor_that_stalls_or_stops_reading_is_refused() {
    let input = data(4 << 20);
    // Reads nothing, writes nothing: killed once nothing moved for the timeout.
    let sleeper = Filter::parse("sleep 600", "barman.decryption_command")
        .expect("sleep")
        .with_timeout(Duration::from_secs(1));
    let mut s = Decryption::command(sleeper)
        .stream(std::io::Cursor::new(input.clone()), "base.tar.gpg")
        .expect("spawn");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let e = s.finish().expect_err("stalled");
    assert!(e.to_string().contains("made no progress within"), "{e}");
    // Exits 0 after a little of the input: not all of it was decrypted.
    let head = Filter::parse("head -c 10", "barman.decryption_command").expect("head");
    let mut s = Decryption::command(head)
        .stream(std::io::Cursor::new(input), "base.tar.gpg")
        .expect("spawn");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    assert_eq!(out.len(), 10);
    let e = s.finish().expect_err("stopped reading");
    assert!(
        e.to_string().contains("stopped reading the encrypted data"),
        "{e}"
    );
}
