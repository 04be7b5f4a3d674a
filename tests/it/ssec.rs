//! SSE-C (`s3.sse: customer`) on servers that implement it, moto and Garage: every request on an
//! object's content carries the key (single PUT, multipart create/part/complete/list, GET,
//! HEAD, CopyObject and UploadPartCopy source and target), so objects round trip and copy with
//! the key and cannot be read without it.

use std::os::unix::fs::PermissionsExt;

use barmans3::Error;
use barmans3::config::{Config, PermissionPolicy};
use barmans3::store::{PutOptions, join_key};
use barmans3::transfer::{CopyExpect, EngineBuilder, Expect, Settings, Transfer};
use bytes::Bytes;

use crate::common::moto::moto;
use crate::common::{data, garage, unique};

const MIB: usize = 1 << 20;

/// A config file for `yaml` plus the SSE-C key lines, loaded the way the binary loads it.
fn with_key(yaml: &str, dir: &std::path::Path, key: &[u8; 32]) -> Config {
    let key_file = dir.join("sse-c.key");
    std::fs::write(&key_file, key).expect("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let yaml = yaml.replacen(
        "s3:\n",
        &format!(
            "s3:\n  sse: customer\n  sse_customer_key_file: {}\n",
            key_file.display()
        ),
        1,
    );
    let file = dir.join("c.yaml");
    std::fs::write(&file, yaml).expect("config");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    Config::load(&file, PermissionPolicy::Refuse).expect("config with SSE-C loads")
}

async fn engine(cfg: &Config) -> Transfer {
    EngineBuilder::new(Settings {
        part_size: 5 << 20,
        copy_limit: 5 << 20,
        ..cfg.transfer.clone()
    })
    .open(&cfg.location, &cfg.s3)
    .await
    .expect("engine")
}

/// `enforced`: whether the server refuses requests without the key. moto accepts the SSE-C
/// headers but answers HEAD and GET without them too, so there only the round trips with the
/// key are proven; Garage enforces the key.
async fn objects_need_their_key(keyed: Config, prefix: &str, enforced: bool) {
    let t = engine(&keyed).await;
    let mut bare_cfg = keyed.clone();
    bare_cfg.s3.sse_customer = None;
    let bare = engine(&bare_cfg).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let small = Bytes::from(data(1000, 1));
    let big = data(12 * MIB + 5, 2);
    let src = tmp.path().join("big");
    std::fs::write(&src, &big).expect("write");
    let k_small = join_key(prefix, "small");
    let k_big = join_key(prefix, "big");
    let up_small = t
        .put_bytes(&k_small, small.clone(), Default::default())
        .await
        .expect("PUT with the key");
    let up_big = t
        .upload_file(&src, &k_big, None)
        .await
        .expect("multipart with the key");
    for (key, body, up) in [
        (&k_small, &small[..], &up_small),
        (&k_big, &big[..], &up_big),
    ] {
        let mut out = Vec::new();
        let got = t
            .download_to(
                key,
                &mut out,
                Expect {
                    size: Some(body.len() as u64),
                    crc32c: Some(up.crc32c),
                },
            )
            .await;
        match got {
            Ok(_) => assert!(out == body, "{key}"),
            // moto gives other bytes back for a multipart object under SSE-C: the download
            // verification must refuse them, never pass them on as restored.
            Err(Error::Checksum { .. }) if !enforced && key == &k_big => {
                eprintln!("{key}: the server returned other bytes; refused by verification");
            }
            Err(e) => panic!("GET of {key} with the key: {e}"),
        }
        if !enforced {
            continue;
        }
        {
            assert!(bare.head(key).await.is_err(), "{key}: HEAD without the key");
        }
        let mut out = Vec::new();
        assert!(
            bare.download_to(key, &mut out, Expect::default())
                .await
                .is_err(),
            "{key}: GET without the key"
        );
        assert!(out.is_empty());
    }
    // Server-side copies read the source and write the target with the key. A copy in parts
    // may come back without part checksums (Garage with SSE-C): then it is refused as
    // unverifiable, and the caller sends the file instead, never a copy taken on trust.
    for (src_key, up) in [(&k_small, &up_small), (&k_big, &up_big)] {
        if !enforced {
            break;
        }
        let dst = format!("{src_key}-copy");
        let copied = t
            .copy_object(
                src_key,
                &dst,
                CopyExpect {
                    size: up.size,
                    crc32c: up.crc32c,
                    ciphertext: None,
                },
                PutOptions::default(),
            )
            .await;
        match copied {
            Ok(()) => {}
            Err(Error::CopyRefused(why)) if src_key == &k_big => {
                eprintln!("multipart copy refused as unverifiable: {why}");
                continue;
            }
            Err(e) => panic!("copy of {src_key} with the key: {e}"),
        }
        let mut out = Vec::new();
        t.download_to(
            &dst,
            &mut out,
            Expect {
                size: Some(up.size),
                crc32c: Some(up.crc32c),
            },
        )
        .await
        .expect("copy reads back verified");
        assert!(
            bare.head(&dst).await.is_err(),
            "{dst}: copy without the key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_objects_need_their_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bucket = moto().bucket(false);
    let cfg = with_key(&moto().yaml(&bucket, ""), tmp.path(), &[0x5a; 32]);
    objects_need_their_key(cfg, "ssec", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_objects_need_their_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let prefix = unique("ssec");
    let cfg = with_key(&garage().yaml(&prefix), tmp.path(), &[0x3c; 32]);
    objects_need_their_key(cfg, &prefix, true).await;
}

#[test]
fn config_check_names_the_key_by_md5_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = [0x11u8; 32];
    let cfg = with_key("s3:\n  bucket: bkt\n", tmp.path(), &key);
    let shown = format!("{:?}", cfg.s3);
    assert!(
        !shown.contains("ERERERERERERERERERERERERERERERERERERERERERE="),
        "{shown}"
    );
}
