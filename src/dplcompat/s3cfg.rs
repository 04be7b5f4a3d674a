//! The s3cmd configuration file (`s3cfg`) of a device that used Bareos' s3cmd wrapper, read
//! into our S3 settings, so that switching the device to barmans3-dplcompat is one changed
//! `program=`. Only what says where the store is and who we are is read: `access_key`,
//! `secret_key`, `access_token`, `host_base`, `host_bucket`, `use_https`, `bucket_location`,
//! `ca_certs_file`; s3cmd's other settings (progress, MIME types, listing formats) mean nothing
//! here. The file is s3cmd's `[default]` section (its keys before any header count too).

use std::path::PathBuf;

use crate::secret::Secret;
use crate::store::s3::{Addressing, S3Options, StaticCredentials};

/// Reads an s3cmd configuration into S3 settings. The error names the key, in one line.
pub fn parse(text: &str) -> Result<S3Options, String> {
    let mut section = "default".to_string();
    let mut keys = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "default" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) {
            keys.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let get = |k: &str| keys.get(k).filter(|v| !v.is_empty()).cloned();
    let truth = |k: &str, default: bool| -> Result<bool, String> {
        match get(k).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "yes" | "on" | "1") => Ok(true),
            Some("false" | "no" | "off" | "0") => Ok(false),
            Some(v) => Err(format!("{k} = {v}: not True or False")),
        }
    };
    let (Some(id), Some(secret)) = (get("access_key"), get("secret_key")) else {
        return Err(
            "access_key and secret_key are needed (credentials from elsewhere are not read)".into(),
        );
    };
    let host = get("host_base").unwrap_or_else(|| "s3.amazonaws.com".into());
    let https = truth("use_https", true)?;
    let mut o = S3Options {
        credentials: Some(StaticCredentials {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: get("access_token").map(Secret::new),
        }),
        ca_bundle: get("ca_certs_file").map(PathBuf::from),
        ..S3Options::default()
    };
    if host != "s3.amazonaws.com" {
        let scheme = if https { "https" } else { "http" };
        o.endpoint = Some(format!("{scheme}://{host}"));
        // A host_bucket with the bucket's name in it is virtual-hosted addressing.
        o.addressing = if get("host_bucket").is_some_and(|h| h.contains("%(bucket)s")) {
            Addressing::Virtual
        } else {
            Addressing::Path
        };
    }
    o.region = match get("bucket_location").as_deref() {
        None | Some("US") => Some("us-east-1".into()),
        Some("EU") => Some("eu-west-1".into()),
        Some(r) => Some(r.to_string()),
    };
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3cmd_config_gives_endpoint_region_and_credentials() {
        let text = "# made by s3cmd --configure\n[default]\naccess_key = AK\nsecret_key = S/K=\nhost_base = 127.0.0.1:9000\nhost_bucket = 127.0.0.1:9000\nbucket_location = garage\nuse_https = False\nsignature_v2 = False\nprogress_meter = True\n[other]\naccess_key = NO\n";
        let o = parse(text).expect("parse");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(o.region.as_deref(), Some("garage"));
        assert_eq!(o.addressing, Addressing::Path);
        let c = o.credentials.expect("credentials");
        assert_eq!(
            (c.access_key_id.expose(), c.secret_access_key.expose()),
            ("AK", "S/K=")
        );

        let aws = parse("access_key = A\nsecret_key = B\nbucket_location = US\n").expect("aws");
        assert_eq!(
            (aws.endpoint, aws.region.as_deref()),
            (None, Some("us-east-1"))
        );
        let virt = parse("access_key=A\nsecret_key=B\nhost_base=s3.example.org\nhost_bucket=%(bucket)s.s3.example.org\n")
            .expect("virtual");
        assert_eq!(virt.endpoint.as_deref(), Some("https://s3.example.org"));
        assert_eq!(virt.addressing, Addressing::Virtual);

        assert!(
            parse("[default]\nhost_base = x\n")
                .expect_err("no keys")
                .contains("access_key")
        );
        let e = parse("access_key=A\nsecret_key=B\nuse_https = maybe\n").expect_err("bool");
        assert!(e.contains("use_https") && !e.contains('\n'), "{e}");
    }
}
