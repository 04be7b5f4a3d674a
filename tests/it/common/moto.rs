//! moto's S3 server, for what Garage does not implement (Object Lock, storage classes and
//! RestoreObject): one per test process on 127.0.0.1 with a random port, stopped with the
//! process. A missing moto is a failure with the remedy, never a skip.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where scripts/test-deps installs moto (and boto3, which it brings).
pub const MOTO_VENV: &str = "/opt/barmans3-test/moto-venv";

/// Runs a boto3 snippet (moto's venv brings boto3) against the S3 server at `endpoint` with
/// these credentials (`s` is the client; `json` is imported) and returns what it prints; a
/// failing snippet fails the test with its output.
pub fn boto3(endpoint: &str, key_id: &str, secret: &str, snippet: &str) -> String {
    let py = format!(
        "import boto3, json; s=boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{key_id}', aws_secret_access_key='{secret}', region_name='us-east-1')\n{snippet}"
    );
    let out = Command::new(Path::new(MOTO_VENV).join("bin/python"))
        .args(["-c", &py])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "boto3: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The moto of this test process.
pub fn moto() -> &'static Moto {
    static M: OnceLock<Moto> = OnceLock::new();
    M.get_or_init(|| {
        let bin = Path::new(MOTO_VENV).join("bin/moto_server");
        assert!(
            bin.exists(),
            "missing {}: run scripts/test-deps (python3 -m venv {MOTO_VENV} && {MOTO_VENV}/bin/pip install 'moto[server]')",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // A watchdog shell, left in the background, stops moto when this test process is gone.
        let started = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "( {} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null ) &",
                bin.display(),
                std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start moto");
        assert!(started.success(), "could not start {}", bin.display());
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(60), "moto did not start on {endpoint}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { endpoint }
    })
}

impl Moto {
    /// Creates a bucket (with Object Lock enabled when asked) and returns its name.
    pub fn bucket(&self, lock: bool) -> String {
        let name = format!("b{:08x}", rand::random::<u32>());
        self.boto(&format!(
            "s.create_bucket(Bucket='{name}', ObjectLockEnabledForBucket={})",
            if lock { "True" } else { "False" }
        ));
        name
    }

    /// The `s3:` section of a config for `bucket`, plus `extra` lines (indented).
    pub fn yaml(&self, bucket: &str, extra: &str) -> String {
        format!(
            "s3:\n  endpoint: {}\n  region: us-east-1\n  bucket: {bucket}\n  access_key_id: test\n  secret_access_key: test\n  part_size: 5MiB\n{extra}",
            self.endpoint
        )
    }

    /// Runs a boto3 snippet against this moto ([`boto3`]).
    pub fn boto(&self, snippet: &str) -> String {
        boto3(&self.endpoint, "test", "test", snippet)
    }

    /// HEAD of `key`: (storage class, retain-until as RFC 3339 or "").
    pub fn head(&self, bucket: &str, key: &str) -> (String, String) {
        let out = self.boto(&format!(
            "h=s.head_object(Bucket='{bucket}', Key='{key}'); print(h.get('StorageClass','STANDARD')); print(h.get('ObjectLockRetainUntilDate','').isoformat() if h.get('ObjectLockRetainUntilDate') else '')"
        ));
        let mut l = out.lines();
        (
            l.next().unwrap_or("").to_string(),
            l.next().unwrap_or("").to_string(),
        )
    }

    /// Every key under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto(&format!(
            "p=s.get_paginator('list_objects_v2')\nfor page in p.paginate(Bucket='{bucket}', Prefix='{prefix}'):\n  for o in page.get('Contents', []): print(o['Key'])"
        ));
        out.lines().map(str::to_string).collect()
    }
}
