//! TLS for the phone: rustls with the platform's trust store (`rustls-platform-verifier`, which
//! asks Android's and iOS's own verifiers, and the system store elsewhere) plus the extra CA
//! certificates an app may give (government intranets often run their own CA).
//!
//! ureq's own TLS options choose *either* the platform verifier *or* a fixed set of roots, so the
//! SDK plugs its own rustls connector into ureq's connector chain (`ureq::unversioned`): the same
//! handshake ureq would do, with a verifier that accepts a certificate the platform trusts or,
//! failing that, one that chains to an app-given CA.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use crate::error::ApiError;

/// The crypto provider: ring (no CMake or assembler toolchain needed to build it for phones).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses the app's extra CA certificates (PEM; each string may hold several).
pub(crate) fn parse_extra_roots(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let mut out = Vec::new();
    for pem in pems {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                ApiError::invalid(
                    "extra_ca_certs_pem",
                    "not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                )
            })?;
        if certs.is_empty() {
            return Err(ApiError::invalid(
                "extra_ca_certs_pem",
                "no certificate in the PEM text",
            ));
        }
        out.extend(certs);
    }
    Ok(out)
}

/// The rustls client configuration of the SDK: the platform's verifier, plus `extra_roots`.
pub(crate) fn client_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, ApiError> {
    let provider = provider();
    let tls = |e: rustls::Error| ApiError::Tls {
        reason: format!("TLS cannot be set up on this device: {e}"),
    };
    let platform = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(tls)?;
    let extra = if extra_roots.is_empty() {
        None
    } else {
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(extra_roots);
        if added == 0 {
            return Err(ApiError::invalid(
                "extra_ca_certs_pem",
                "none of the certificates can be used as a CA",
            ));
        }
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| ApiError::invalid("extra_ca_certs_pem", e.to_string()))?,
        )
    };
    let verifier = Arc::new(PlatformOrExtra { platform, extra });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts what the platform trusts; when the platform does not know the issuer, what chains to
/// an app-given CA. Every other verdict (expired, wrong name, revoked) is the platform's.
#[derive(Debug)]
struct PlatformOrExtra {
    platform: rustls_platform_verifier::Verifier,
    extra: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for PlatformOrExtra {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.platform.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (&verdict, &self.extra) {
            (
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::Other(_),
                )),
                Some(extra),
            ) => {
                extra.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            _ => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.platform.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.platform.supported_verify_schemes()
    }
}

/// ureq connector that wraps `https://` connections in TLS with the SDK's configuration (the
/// handshake ureq's own rustls connector does, with another verifier).
pub(crate) struct TlsConnector {
    pub(crate) config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .ok_or(ureq::Error::Tls("no host to verify the certificate for"))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("the host is not a valid TLS server name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection as a ureq transport.
pub(crate) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Names the certificate problem behind a failed connection, if that is what it was.
pub(crate) fn certificate_problem(e: &ureq::Error) -> Option<String> {
    let rustls_error = match e {
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    let problem = match rustls_error? {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not trusted: it was issued by an unknown authority \
                 (give the SDK your CA certificate, or fix the server's chain)"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the phone's date)"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is for another host name"
            }
            CertificateError::Revoked => "the server's certificate was revoked",
            CertificateError::BadSignature | CertificateError::BadEncoding => {
                "the server's certificate is damaged"
            }
            _ => "the server's certificate was refused",
        },
        rustls::Error::NoCertificatesPresented => "the server presented no certificate",
        other => return Some(format!("the TLS handshake failed: {other}")),
    };
    Some(problem.to_string())
}
