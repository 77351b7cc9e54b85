//! TLS for PostgreSQL connections: libpq's `sslmode` and `sslrootcert` URL
//! parameters, carried out with rustls (ring provider) for tokio-postgres.
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`, and
//! leaves checking the server's certificate to the TLS connector. So the URL
//! is read here first: `sslmode` and `sslrootcert` are taken out, the rest
//! goes to tokio-postgres, and the connector built here does what libpq's
//! mode asks:
//!
//! | `sslmode`     | TLS                        | certificate checked           |
//! |---------------|----------------------------|-------------------------------|
//! | `disable`     | never                      | -                             |
//! | `prefer`      | if the server offers it    | no (as libpq, unless a root)  |
//! | `require`     | always                     | no; chain if `sslrootcert`    |
//! | `verify-ca`   | always                     | chain to `sslrootcert`        |
//! | `verify-full` | always                     | chain and host name           |
//!
//! `prefer` is the default, as in libpq. Channel binding (SCRAM-PLUS) is not
//! offered; password authentication still uses SCRAM.

use super::super::{Result, StoreError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// libpq's `sslmode`: whether to use TLS and how much of the server's
/// certificate to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS always; the certificate is checked only against `sslrootcert`
    /// when one is given.
    Require,
    /// TLS always; the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses a `sslmode` value; the error names the value and the choices.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(StoreError::Invalid(format!(
                    "bad PostgreSQL URL: sslmode={other:?} is not supported; \
                     use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    fn wire(self) -> WireMode {
        match self {
            Self::Disable => WireMode::Disable,
            Self::Prefer => WireMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => WireMode::Require,
        }
    }
}

/// What a PostgreSQL URL asks for: tokio-postgres's settings and the TLS
/// connector that goes with them.
pub struct Settings {
    /// Host, user, database and the other libpq parameters tokio-postgres
    /// understands, with the TLS mode it should negotiate.
    pub config: tokio_postgres::Config,
    /// The connector for that mode.
    pub tls: MakeRustls,
    /// The mode the URL asked for.
    pub mode: SslMode,
}

/// Reads a `postgres://` URL: `sslmode` and `sslrootcert` here, everything
/// else by tokio-postgres. Reads the root certificate file now, so a wrong
/// path is reported when the store opens rather than at the first connect.
pub fn settings(url: &str) -> Result<Settings> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root = None;
    let mut rest = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let decoded = || percent_decode(value);
        match key {
            "sslmode" => mode = Some(SslMode::parse(&decoded())?),
            "sslrootcert" => root = Some(decoded()),
            _ => rest.push(part),
        }
    }
    let passed = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = passed
        .parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {}", describe(&e))))?;
    let mode = mode.unwrap_or(SslMode::Prefer);
    config.ssl_mode(mode.wire());
    let roots = match &root {
        Some(path) => Some(load_roots(path)?),
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(StoreError::Invalid(format!(
                "bad PostgreSQL URL: sslmode={} needs sslrootcert=PATH, the PEM file of \
                 the certificate authority that signed the server's certificate",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            )));
        }
        None => None,
    };
    let check = match (mode, roots) {
        (SslMode::VerifyFull, Some(r)) => Check::Full(r),
        // libpq: with a root certificate, `require` checks the chain too.
        (SslMode::VerifyCa | SslMode::Require, Some(r)) => Check::Chain(r),
        _ => Check::Nothing,
    };
    Ok(Settings {
        config,
        tls: MakeRustls::new(check)?,
        mode,
    })
}

/// Decodes a URL parameter's `%XX` escapes (a `+` stays a `+`, as in
/// libpq's URLs); a malformed escape is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The full text of a tokio-postgres error: its own text says only which
/// step failed, the reason is in its source chain.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn load_roots(path: &str) -> Result<RootCertStore> {
    let bad = |why: String| {
        StoreError::Invalid(format!(
            "bad PostgreSQL URL: sslrootcert={path:?}: {why}; give the PEM file of the \
             certificate authority that signed the server's certificate"
        ))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// How much of the server's certificate to check.
enum Check {
    Nothing,
    Chain(RootCertStore),
    Full(RootCertStore),
}

/// The connector tokio-postgres calls when it opens TLS: a rustls client
/// configuration shared by every connection of one store.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl MakeRustls {
    fn new(check: Check) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Invalid(format!("TLS set-up failed: {e}")))?;
        let webpki = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| StoreError::Invalid(format!("bad sslrootcert: {e}")))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Full(roots) => webpki(roots)?,
            Check::Chain(roots) => Arc::new(ChainOnly(webpki(roots)?)),
            Check::Nothing => Arc::new(Unchecked(provider.signature_verification_algorithms)),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(
        &mut self,
        domain: &str,
    ) -> std::result::Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS stream to the server.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name the
/// certificate carries is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name mismatch means the
        // chain itself was sound.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: the connection is
/// encrypted but the server is not authenticated (libpq does the same).
/// The handshake's signatures are still checked, so the session key belongs
/// to whoever holds the certificate's key.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_values_parse_and_bad_ones_are_named() {
        assert_eq!(SslMode::parse("verify-full").unwrap(), SslMode::VerifyFull);
        assert_eq!(SslMode::parse("disable").unwrap(), SslMode::Disable);
        let e = SslMode::parse("verify_full").unwrap_err().to_string();
        assert!(e.contains("sslmode=\"verify_full\""), "{e}");
        assert!(e.contains("verify-full"), "{e}");
    }

    #[test]
    fn url_parameters_are_split_between_here_and_tokio_postgres() {
        let s =
            settings("postgres://u@127.0.0.1:5/db?sslmode=require&application_name=bw").unwrap();
        assert_eq!(s.mode, SslMode::Require);
        assert_eq!(s.config.get_ssl_mode(), WireMode::Require);
        assert_eq!(s.config.get_application_name(), Some("bw"));
        assert_eq!(s.config.get_dbname(), Some("db"));
        let plain = settings("postgres://u@127.0.0.1:5/db").unwrap();
        assert_eq!(plain.mode, SslMode::Prefer);
        let e = settings("postgres://u@h/db?sslmode=bogus")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmode=\"bogus\""), "{e}");
        let e = settings("postgres://u@h/db?sslmod=require")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmod"), "{e}");
    }

    #[test]
    fn parameter_values_are_percent_decoded() {
        assert_eq!(percent_decode("%2Fetc%2Fca+1.pem"), "/etc/ca+1.pem");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn verification_needs_a_root_certificate_that_exists() {
        let e = settings("postgres://u@h/db?sslmode=verify-full")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = settings("postgres://u@h/db?sslmode=verify-ca&sslrootcert=%2Fno%2Fsuch.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert=\"/no/such.pem\""), "{e}");
    }
}
