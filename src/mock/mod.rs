//! Test doubles that run for real on loopback: a mock Maskinporten, a mock Altinn token exchange
//! an echo upstream, and a stand-in Kubernetes API server.
//! Used by `portvakt demo` and the test suite; never by `portvakt run`.

pub mod altinn;
pub mod consents;
pub mod kubernetes;
pub mod maskinporten;
pub mod upstream;

pub use altinn::MockAltinn;
pub use consents::ConsentStore;
pub use kubernetes::MockKubernetes;
pub use maskinporten::{MockClient, MockMaskinporten, Mode};
pub use upstream::EchoUpstream;

/// The mock Maskinporten's own signing key. A fixed, public test key: it signs mock tokens only.
pub const MOCK_SIGNING_KEY_PEM: &str = include_str!("keys/mock-signing.pem");
/// The mock Altinn's signing key. A fixed, public test key: it signs mock Altinn tokens only.
pub const MOCK_ALTINN_KEY_PEM: &str = include_str!("keys/mock-altinn.pem");
/// The demo client's key, registered with the mock. A fixed, public test key: never use it elsewhere.
pub const DEMO_CLIENT_KEY_PEM: &str = include_str!("keys/demo-client.pem");

/// Serves `handler` on `listener` (over TLS with `tls`) in a task of its own, until the returned
/// sender says so or is dropped: the one way every mock here is started.
fn serve<H, F, B>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
) -> tokio::sync::watch::Sender<bool>
where
    H: Fn(http::Request<crate::server::CallerBody>, std::net::SocketAddr) -> F
        + Clone
        + Send
        + Sync
        + Unpin
        + 'static,
    F: std::future::Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::server::serve(
        listener,
        crate::server::Limits {
            tls,
            ..Default::default()
        },
        handler,
        stop,
        std::time::Duration::from_secs(1),
    ));
    shutdown
}

/// A TLS acceptor for a loopback test server (ALPN h2 and http/1.1) from PEM files.
pub fn tls_acceptor(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    tls_acceptor_offering(cert_pem, key_pem, &[b"h2", b"http/1.1"])
}

/// As [`tls_acceptor`], offering the protocols in `alpn`.
pub fn tls_acceptor_offering(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| invalid(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| invalid(&e))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The public half of `key`, for checking what it signed.
pub(crate) fn decoding_key(key: &crate::keys::SigningKey) -> jsonwebtoken::DecodingKey {
    let jwk = key.public_jwk();
    let part = |name: &str| jwk[name].as_str().unwrap_or_default().to_string();
    jsonwebtoken::DecodingKey::from_rsa_components(&part("n"), &part("e"))
        .unwrap_or_else(|_| jsonwebtoken::DecodingKey::from_secret(b"invalid"))
}

/// The token in an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Verifies an RS256 access token as an API would: signature, and `exp` still ahead with no leeway.
pub(crate) fn verify(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
) -> jsonwebtoken::errors::Result<serde_json::Map<String, serde_json::Value>> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
    jsonwebtoken::decode(token, key, &validation).map(|data| data.claims)
}
