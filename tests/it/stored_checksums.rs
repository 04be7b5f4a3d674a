//! Objects other tools wrote with S3's other full-object checksums (CRC32, SHA-1, SHA-256, as
//! boto3 and the AWS CLI write them; CRC32 is boto3's default, so barman-cloud's WALs carry
//! it), read whole through the engine from real S3 servers: checked by the engine against the
//! stored value, and refused when that value is of other bytes (moto keeps the value a client
//! sends; Garage refuses such a put).

use std::os::unix::fs::PermissionsExt;

use barmans3::Error;
use barmans3::config::{Config, PermissionPolicy};
use barmans3::store::ChecksumKind;
use barmans3::transfer::{EngineBuilder, Transfer, Verified};

use crate::common::moto::{boto3, moto};
use crate::common::{garage, unique};

/// What each object holds.
fn body() -> Vec<u8> {
    b"segment bytes ".repeat(5000)
}

/// boto3 (moto's venv brings it) puts `body()` under `{prefix}/` once per algorithm: `default`
/// with none named (boto3 then takes CRC32), and one named after each algorithm.
fn put_with_boto3(endpoint: &str, key_id: &str, secret: &str, bucket: &str, prefix: &str) {
    let snippet = format!(
        "body = b'segment bytes ' * 5000\n\
         s.put_object(Bucket='{bucket}', Key='{prefix}/default', Body=body)\n\
         for a in ['CRC32', 'SHA1', 'SHA256']:\n    \
             s.put_object(Bucket='{bucket}', Key='{prefix}/' + a, Body=body, ChecksumAlgorithm=a)"
    );
    boto3(endpoint, key_id, secret, &snippet);
}

async fn engine(yaml: &str) -> Transfer {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("barmans3.yaml");
    std::fs::write(&file, yaml).expect("config");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cfg = Config::load(&file, PermissionPolicy::Refuse).expect("config loads");
    EngineBuilder::new(cfg.transfer.clone())
        .open(&cfg.location, &cfg.s3)
        .await
        .expect("engine")
}

/// Each object boto3 wrote reads back whole, verified against the stored value of its kind
/// (not the ETag's MD5, not the size alone).
async fn each_kind_is_verified(t: &Transfer, prefix: &str) {
    for (name, kind) in [
        ("default", ChecksumKind::Crc32),
        ("CRC32", ChecksumKind::Crc32),
        ("SHA1", ChecksumKind::Sha1),
        ("SHA256", ChecksumKind::Sha256),
    ] {
        let (got, d) = t
            .download_small(&format!("{prefix}/{name}"), 1 << 20)
            .await
            .expect(name);
        assert!(got == body(), "{name}");
        assert_eq!(d.verified, Verified::ObjectChecksum(kind), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_objects_other_tools_wrote_are_checked_and_a_forged_checksum_is_refused() {
    let bucket = moto().bucket(false);
    put_with_boto3(&moto().endpoint, "test", "test", &bucket, "w");
    moto().boto(&format!(
        "import base64, hashlib\n\
         other = base64.b64encode(hashlib.sha256(b'other bytes').digest()).decode()\n\
         s.put_object(Bucket='{bucket}', Key='w/forged', Body=b'segment bytes ' * 5000, ChecksumAlgorithm='SHA256', ChecksumSHA256=other)"
    ));
    let t = engine(&moto().yaml(&bucket, "")).await;
    each_kind_is_verified(&t, "w").await;
    let e = t
        .download_small("w/forged", 1 << 20)
        .await
        .expect_err("a stored SHA-256 of other bytes is refused");
    let m = e.to_string();
    assert!(matches!(e, Error::Checksum { .. }), "{m}");
    assert!(m.contains("w/forged") && m.contains("sha256"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_objects_other_tools_wrote_are_checked_against_their_stored_checksums() {
    let g = garage();
    let prefix = unique("stored-checksums");
    put_with_boto3(g.endpoint(), g.key_id(), g.secret(), g.bucket(), &prefix);
    let t = engine(&g.yaml(&prefix)).await;
    each_kind_is_verified(&t, &prefix).await;
}
