//! `inbound.tls`: TLS on the proxy listener, with client certificates from `client_ca` when set.
//! Loaded and checked at startup, every problem at its field.

use super::reader::{join, Reader};
use super::values::ca_file;
use super::CaFile;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS on the proxy listener, loaded and checked at startup.
#[derive(Clone)]
pub struct InboundTls {
    pub cert: PathBuf,
    /// When set, callers must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for InboundTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundTls")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

pub(super) fn inbound_tls(
    r: &mut Reader,
    v: &Value,
    path: &str,
    base: &Path,
) -> Option<InboundTls> {
    let m = r.mapping(v, path, &super::schema::TLS.keys())?;
    let cert_path = join(path, "cert");
    let key_path = join(path, "key");
    let cert = r
        .required_string(m.get("cert"), &cert_path)
        .map(|c| base.join(c));
    let key = r
        .required_string(m.get("key"), &key_path)
        .map(|k| base.join(k));
    let client_ca = r
        .string(m.get("client_ca"), &join(path, "client_ca"))
        .and_then(|f| ca_file(r, &base.join(f), &join(path, "client_ca")));
    let (cert, key) = (cert?, key?);
    let chain = chain(r, &cert, &cert_path)?;
    let private = private_key(r, &key, &key_path)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            r.issue(path, format!("TLS setup failed: {e}"));
            return None;
        }
    };
    let builder = match &client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(r, ca, path, provider)?),
    };
    let mut server = match builder.with_single_cert(chain, private) {
        Ok(s) => s,
        Err(e) => {
            r.issue(
                &key_path,
                format!("{} does not go with {}: {e}", key.display(), cert.display()),
            );
            return None;
        }
    };
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(InboundTls {
        cert,
        client_ca: client_ca.map(|c| c.path),
        server: Arc::new(server),
    })
}

fn describe_pem(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no key found".into(),
        _ => "the file is not valid PEM".into(),
    }
}

/// The server's certificate chain from its PEM file.
fn chain(r: &mut Reader, cert: &Path, cert_path: &str) -> Option<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    match CertificateDer::pem_file_iter(cert).and_then(|c| c.collect::<Result<Vec<_>, _>>()) {
        Ok(chain) if !chain.is_empty() => Some(chain),
        Ok(_) => {
            r.issue(
                cert_path,
                format!(
                    "{}: no PEM certificate (BEGIN CERTIFICATE) in the file",
                    cert.display()
                ),
            );
            None
        }
        Err(e) => {
            r.issue(
                cert_path,
                format!("{}: cannot read the certificates: {e}", cert.display()),
            );
            None
        }
    }
}

/// The server's private key from its PEM file; the key's own bytes never reach an error message.
fn private_key(r: &mut Reader, key: &Path, key_path: &str) -> Option<PrivateKeyDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => Some(k),
        Err(e) => {
            r.issue(
                key_path,
                format!(
                    "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {}",
                    key.display(),
                    describe_pem(&e)
                ),
            );
            None
        }
    }
}

/// The verifier of callers' certificates: those issued by one of the CAs in `client_ca`.
fn client_verifier(
    r: &mut Reader,
    ca: &CaFile,
    path: &str,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let CaFile {
        certs,
        path: ca_path,
    } = ca;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        if let Err(e) = roots.add(c.clone()) {
            r.issue(
                &join(path, "client_ca"),
                format!("{}: not a usable CA certificate: {e}", ca_path.display()),
            );
            return None;
        }
    }
    match rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
    {
        Ok(verifier) => Some(verifier),
        Err(e) => {
            r.issue(
                &join(path, "client_ca"),
                format!("{}: {e}", ca_path.display()),
            );
            None
        }
    }
}
