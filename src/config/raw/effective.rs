//! The effective configuration as the raw model, for `config check` to print: the values in
//! the file's own units, secrets as `<redacted>`, command arguments hidden.

use std::time::Duration;

use super::{RawBarman, RawConfig, RawS3, RawState};
use crate::config::{BarmanConfig, Config};
use crate::store::s3::{Addressing, S3Options, Sse};
use crate::transfer::{ChecksumMode, Settings};
use crate::units::human_bytes_exact;

impl RawConfig {
    /// The effective configuration in the file's own shape, secrets as `<redacted>`.
    pub(in crate::config) fn effective(c: &Config) -> RawConfig {
        let st = &c.state;
        RawConfig {
            store: Some(c.location.to_string()),
            s3: RawS3::effective(&c.s3, &c.transfer, c.sse_customer.as_ref()),
            state: RawState {
                dir: Some(st.dir.clone()),
                queue_dir: Some(st.queue_dir.clone()),
                log_dir: st.log_dir.clone(),
            },
            barman: RawBarman::effective(&c.barman),
            encryption: crate::config::encryption::raw_encryption(&c.encryption),
            stores: super::stores::effective(&c.stores),
        }
    }
}

/// A secret's place in the printed view: `<redacted>` when it is set.
fn redacted(present: bool) -> Option<String> {
    present.then(|| "<redacted>".to_string())
}

/// A duration as the file writes it: in the largest unit that divides it (`7d`, `2h`, `90s`),
/// in seconds with a fraction when it has one.
fn secs(d: Duration) -> Option<String> {
    Some(if d.subsec_nanos() == 0 {
        crate::units::human_duration(d)
    } else {
        format!("{}s", d.as_secs_f64())
    })
}

impl RawS3 {
    /// The `s3:` section of the effective configuration: the store's options and the engine's
    /// settings (location keys are printed as `store:`).
    pub(super) fn effective(
        s: &S3Options,
        t: &Settings,
        customer: Option<&crate::config::SseCustomerConfig>,
    ) -> RawS3 {
        let (sse, kms) = match &s.sse {
            Sse::None if customer.is_some() => ("customer", None),
            Sse::None => ("none", None),
            Sse::Aes256 => ("AES256", None),
            Sse::Kms(k) => ("aws:kms", k.clone()),
        };
        let addressing = match s.addressing {
            Addressing::Auto | Addressing::BucketInEndpoint => "auto",
            Addressing::Path => "path",
            Addressing::Virtual => "virtual",
        };
        let checksum = match (t.probe_checksum, t.checksum) {
            (true, _) => "auto",
            (false, ChecksumMode::WhenSupported) => "when_supported",
            (false, ChecksumMode::WhenRequired) => "when_required",
        };
        RawS3 {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            bucket: None,
            prefix: None,
            addressing: Some(addressing.into()),
            profile: s.profile.clone(),
            access_key_id: redacted(s.credentials.is_some()),
            secret_access_key: redacted(s.credentials.is_some()),
            session_token: redacted(
                s.credentials
                    .as_ref()
                    .is_some_and(|c| c.session_token.is_some()),
            ),
            ca_bundle: s.ca_bundle.clone(),
            http_proxy: redacted(s.http_proxy.is_some()),
            https_proxy: redacted(s.https_proxy.is_some()),
            storage_class: s.storage_classes.default.clone(),
            storage_classes: crate::config::protect::raw_classes(&s.storage_classes),
            object_lock: crate::config::protect::raw_lock(&s.object_lock),
            max_bandwidth: crate::config::protect::raw_bandwidth(s.max_bandwidth),
            acl: s.acl.clone(),
            sse: Some(sse.into()),
            sse_kms_key_id: kms,
            sse_customer_key_file: customer.map(|k| k.key_file.clone()),
            sse_customer_key_md5: customer.map(|k| k.key.key_md5_base64().to_string()),
            request_checksum: Some(checksum.into()),
            part_size: Some(human_bytes_exact(t.part_size)),
            concurrency: Some(t.concurrency as u32),
            stream_memory: Some(human_bytes_exact(t.stream_memory)),
            max_attempts: Some(t.max_attempts),
            connect_timeout: secs(s.connect_timeout),
            read_timeout: secs(s.read_timeout),
        }
    }
}

/// A command line for display: the program, and how many arguments were left out.
fn hide_arguments(argv: &[String]) -> String {
    match argv {
        [] => String::new(),
        [program] => program.clone(),
        [program, rest @ ..] => format!("{program} <{} arguments hidden>", rest.len()),
    }
}

impl RawBarman {
    /// The `barman:` section of the effective configuration (the deprecated directory keys
    /// are printed under `state:`).
    fn effective(b: &BarmanConfig) -> RawBarman {
        RawBarman {
            config: Some(b.config.clone()),
            queue_dir: None,
            state_dir: None,
            log_dir: None,
            min_remote_backups: Some(b.min_remote_backups),
            max_deletes: Some(b.max_deletes),
            wait_for_wals_max: secs(b.wait_for_wals_max),
            wal_reconcile_every: secs(b.wal_reconcile_every),
            hook_grace: secs(b.hook_grace),
            drill_max_age: secs(b.drill_max_age),
            custom_decompression: b.custom_decompression.as_ref().map(|f| f.argv.join(" ")),
            custom_compression_magic: b
                .custom_compression_magic
                .as_ref()
                .map(|m| format!("0x{}", crate::checksum::hex(m))),
            // Its arguments may carry a passphrase (`gpg --passphrase …`): the view shows the program.
            decryption_command: b
                .decryption_command
                .as_ref()
                .map(|f| hide_arguments(&f.argv)),
            command_timeout: secs(b.command_timeout),
            wal_prefetch: Some(b.wal_prefetch),
            wal_spool_dir: b.wal_spool_dir.clone(),
            wal_spool_bytes: Some(human_bytes_exact(b.wal_spool_bytes)),
            pg_combinebackup: b.pg_combinebackup.clone(),
            pg_bindir: b.pg_bindir.clone(),
            restore_staging_dir: b.restore_staging_dir.clone(),
            one_put_max: Some(human_bytes_exact(b.one_put_max)),
            replica_max_lag: secs(b.replica_max_lag),
        }
    }
}
