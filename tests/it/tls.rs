//! TLS is verified by default: a TLS-terminating proxy in front of Garage presents a certificate
//! generated here. Without `s3.ca_bundle`, or with a bundle of another CA, every command fails
//! with a message that names the certificate problem and the fix; with the right bundle the same
//! commands work, bytes verified.

use std::sync::Arc;

use crate::common::site::{Site, make_real_archive, wal_segment};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A CA and a server certificate it signed, for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "barmans3 test CA");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("sign");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    Pki {
        ca_pem: ca.pem(),
        server,
    }
}

/// Terminates TLS on 127.0.0.1 and forwards the plain bytes to `upstream` (host:port). Runs on
/// its own thread until the test process ends. Returns the https endpoint.
fn tls_proxy(server: rustls::ServerConfig, upstream: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("send port");
            let acceptor = TlsAcceptor::from(Arc::new(server));
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let upstream = upstream.clone();
                conns.spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
    });
    let port = rx.recv().expect("proxy port");
    format!("https://127.0.0.1:{port}")
}

#[test]
fn https_endpoint_is_verified_against_the_configured_ca_only() {
    let g = crate::common::garage();
    let upstream = g
        .endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let pki = pki();
    let endpoint = tls_proxy(pki.server, upstream);
    let prefix = crate::common::unique("tls");
    let yaml = g
        .yaml(&prefix)
        .replace(g.endpoint(), &endpoint)
        .replace("max_attempts: 3", "max_attempts: 2");
    let site = Site::new(&yaml);
    make_real_archive(&site.wals(), 1, 5);
    let dir = site.dir.path().to_path_buf();
    let right = dir.join("ca.pem");
    std::fs::write(&right, &pki.ca_pem).expect("ca");
    let wrong = dir.join("other-ca.pem");
    std::fs::write(&wrong, pki_other_ca()).expect("other ca");
    let base = std::fs::read_to_string(&site.cfg).expect("cfg");
    let with_ca = |ca: Option<&std::path::Path>| {
        let text = match ca {
            Some(p) => base.replacen(
                "  region: garage\n",
                &format!("  region: garage\n  ca_bundle: {}\n", p.display()),
                1,
            ),
            None => base.clone(),
        };
        std::fs::write(&site.cfg, text).expect("cfg");
    };

    let commands: [&[&str]; 3] = [&["config", "check"], &["wal-sync", "pg"], &["store", "ls"]];
    for (ca, label) in [
        (None, "no ca_bundle"),
        (Some(wrong.as_path()), "another CA"),
    ] {
        with_ca(ca);
        for args in commands {
            let out = site.run(args, &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "{label} {args:?}: exit {:?}: {}",
                out.status.code(),
                err.trim()
            );
            assert!(!out.status.success(), "{label} {args:?} must fail: {err}");
            assert!(
                err.contains("certificate") && err.contains("s3.ca_bundle"),
                "{label} {args:?}: the message must name the certificate problem and the fix: {err}"
            );
            assert!(
                err.trim().lines().count() <= 2,
                "{label} {args:?}: short message expected: {err}"
            );
        }
    }
    // Nothing went through the proxy without verification.
    let plain = Site::new(&g.yaml(&prefix));
    let listed = plain.run(&["store", "ls"], &[]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "no object may exist after refused connections"
    );

    with_ca(Some(&right));
    for args in commands {
        let out = site.run(args, &[]);
        assert!(
            out.status.success(),
            "{args:?} with the right CA: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let to = dir.join("restored-wal");
    let out = site.run(
        &[
            "wal-restore",
            "pg",
            "000000010000000000000003",
            to.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&to).expect("wal") == wal_segment("000000010000000000000003", 3),
        "the WAL came back over TLS"
    );
}

/// The PEM of a CA that did not sign the proxy's certificate.
fn pki_other_ca() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertifiedIssuer::self_signed(params, key)
        .expect("ca")
        .pem()
}
