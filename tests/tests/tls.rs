//! Story: the server terminates TLS with a certificate from an intranet's own CA. A phone given
//! that CA syncs over https://; a phone without it is refused with an error that names the
//! certificate problem; plain http:// to another host is refused unless the development option
//! is set. The certificate is renewed on disk and the next sync uses it, without a restart.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

use linli_ffi::{ApiError, ConnectionOptions, FieldClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::common::*;

/// A CA: its PEM certificate and what signs with it.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes a server certificate for 127.0.0.1 and localhost, signed by `ca`, into `dir`.
pub(crate) fn server_cert(ca: &Ca, dir: &Path) {
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    // Written beside and renamed over, as renewal tools do: the server never reads half a file.
    for (name, pem) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn phone(home: &Path, url: &str, cas: &[&Ca]) -> FieldClient {
    FieldClient::new(
        home.to_str().unwrap().into(),
        Some(url.into()),
        Some(ConnectionOptions {
            extra_ca_certs_pem: cas.iter().map(|c| c.pem.clone()).collect(),
            allow_insecure_http: false,
        }),
        None,
    )
    .unwrap()
}

fn login(client: &FieldClient) -> Result<linli_ffi::UserInfo, ApiError> {
    client.login("bus1".into(), DEMO_PASSWORD.into(), None)
}

/// An address of this machine that other machines could reach (not loopback).
fn non_loopback_ip() -> std::net::IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    // No packet is sent: connecting a UDP socket only picks the route and its source address.
    socket
        .connect("192.0.2.1:9")
        .or_else(|_| socket.connect("10.0.0.1:9"))
        .expect("this machine has a route off loopback");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

#[test]
fn phones_sync_over_tls_and_refuse_what_they_cannot_trust() {
    let certs = tempfile::tempdir().unwrap();
    let ca1 = ca("白杨街道 内网CA");
    server_cert(&ca1, certs.path());
    let cert = certs.path().join("server.crt");
    let key = certs.path().join("server.key");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        dir.path(),
        &[
            ("LINLI_TLS_CERT", cert.to_str().unwrap()),
            ("LINLI_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let https = server.url.replace("127.0.0.1", "localhost");

    // A phone given the intranet CA logs in and syncs over https://.
    let homes: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let trusting = phone(homes[0].path(), &https, &[&ca1]);
    login(&trusting).unwrap();
    let id = trusting
        .create(
            linli_ffi::RecordKind::Case,
            HAITIANCHENG.into(),
            vec![linli_ffi::FieldValue::new("summary", "加密通道测试")],
        )
        .unwrap();
    assert_eq!(trusting.sync().unwrap().accepted, 1);

    // One without it is refused, and told why.
    let stranger = phone(homes[1].path(), &https, &[]);
    let err = login(&stranger).unwrap_err();
    match &err {
        ApiError::Tls { reason } => assert!(reason.contains("unknown authority"), "{reason}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // Plain http:// to another host is refused before any connection…
    let ip = non_loopback_ip();
    let closed = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    let plain = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = FieldClient::new(
        homes[2].path().to_str().unwrap().into(),
        Some(plain.clone()),
        None,
        None,
    )
    .expect_err("refused");
    assert!(
        matches!(&err, ApiError::InvalidInput { field, .. } if field == "server_url"),
        "{err:?}"
    );
    // …unless the development option is set: then the phone tries (and finds the port closed).
    let dev = FieldClient::new(
        homes[2].path().to_str().unwrap().into(),
        Some(plain),
        Some(ConnectionOptions {
            extra_ca_certs_pem: vec![],
            allow_insecure_http: true,
        }),
        None,
    )
    .unwrap();
    let err = login(&dev).unwrap_err();
    assert!(matches!(err, ApiError::Offline { .. }), "{err:?}");

    // The certificate is renewed on disk by a new CA; a phone trusting only that CA is refused
    // before and served after, and the running server was never restarted.
    let ca2 = ca("白杨街道 新内网CA");
    let renewed = phone(homes[3].path(), &https, &[&ca2]);
    assert!(matches!(login(&renewed), Err(ApiError::Tls { .. })));
    let pid = server.pid();
    server_cert(&ca2, certs.path());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    login(&renewed).unwrap();
    renewed.sync().unwrap();
    assert!(
        renewed.get(id.clone()).is_ok(),
        "the renewed phone pulled the case"
    );
    assert_eq!(server.pid(), pid, "same server process");
    // The first phone, trusting only the old CA, fails on its next connection: the new
    // certificate is served (a connection it kept open still uses the old one, as TLS does).
    drop(trusting);
    let reopened = phone(homes[0].path(), &https, &[&ca1]);
    assert!(matches!(reopened.sync(), Err(ApiError::Tls { .. })));
}
