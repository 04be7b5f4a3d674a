//! `stores:`: further stores by name, each written like the main one (`store:` or `s3.bucket`
//! and `s3.prefix`, and the whole `s3:` section: endpoint, credentials, storage classes, Object
//! Lock), validated by the same code, so a replica's settings mean what the main store's mean.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Keyed, RawS3};
use crate::config::StoreConfig;
use crate::error::Result;

/// One entry of `stores:`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawStore {
    store: Option<String>,
    #[serde(default)]
    s3: RawS3,
}

/// Whether a store name is one `--store NAME` and `replicate --to NAME` can take: letters,
/// digits, `-` and `_` (never a URL, which `--store` also takes).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates every entry; errors name `stores.NAME` and the key.
pub(super) fn validate(
    k: &Keyed,
    raw: &BTreeMap<String, RawStore>,
) -> Result<BTreeMap<String, StoreConfig>> {
    let mut out = BTreeMap::new();
    for (name, entry) in raw {
        if !valid_name(name) {
            return Err(k.err(
                &format!("stores.{name}"),
                "a store name is letters, digits, - and _ (at most 64)",
            ));
        }
        let label = PathBuf::from(format!("{}: stores.{name}", k.0.display()));
        let sk = Keyed(&label);
        let location = super::location(&sk, &entry.store, &entry.s3)?;
        let sse_customer = crate::config::encryption::sse_customer(
            &label.display().to_string(),
            entry.s3.sse.as_deref(),
            entry.s3.sse_customer_key_file.as_ref(),
        )?;
        let (mut s3, transfer) = super::s3(&sk, clone_s3(&entry.s3)?)?;
        s3.sse_customer = sse_customer.as_ref().map(|c| c.key.clone());
        out.insert(
            name.clone(),
            StoreConfig {
                location,
                s3,
                transfer,
                sse_customer,
            },
        );
    }
    Ok(out)
}

/// The `s3:` section is consumed by its validation; a copy through serde keeps the raw model
/// free of a `Clone` that would also copy secrets around elsewhere.
fn clone_s3(s3: &RawS3) -> Result<RawS3> {
    let v = serde_yaml_ng::to_value(s3)
        .map_err(|e| crate::error::Error::Config(format!("stores: {e}")))?;
    serde_yaml_ng::from_value(v).map_err(|e| crate::error::Error::Config(format!("stores: {e}")))
}

/// The effective `stores:` for `config check`, secrets redacted as in `s3:`.
pub(super) fn effective(stores: &BTreeMap<String, StoreConfig>) -> BTreeMap<String, RawStore> {
    stores
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                RawStore {
                    store: Some(s.location.to_string()),
                    s3: RawS3::effective(&s.s3, &s.transfer, s.sse_customer.as_ref()),
                },
            )
        })
        .collect()
}
