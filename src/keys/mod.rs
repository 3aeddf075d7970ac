//! Client keys: every supported form is loaded into one [`SigningKey`] that signs JWT grants.

mod certified;
pub mod client_key;
pub mod der;
mod generate;
pub mod jwk;
pub mod keyset;
pub mod pem;
pub mod pkcs11;
mod source;

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
pub use client_key::ClientKey;
pub use der::x509::Certificate;
pub use generate::{adoptable, generate, GeneratedKey};
use jsonwebtoken::{Algorithm, EncodingKey};
pub use source::{load, KeySource, SecretValue};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Whether every character of `s` is one Digdir allows in a kid: letters, digits, `.`, `_`, `-`.
pub fn in_kid_alphabet(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Keys below this size are refused: Maskinporten's norm is 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How a key signs: in this process, or inside an HSM.
enum Signer {
    Software(EncodingKey),
    Hsm(Arc<pkcs11::HsmKey>),
}

/// Why a grant could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    Software(String),
    /// The HSM holding the key could not sign: its module, token and what it said.
    #[error("the HSM could not sign: {0}")]
    Hsm(String),
}

/// A loaded RSA private key ready to sign grants. `Debug` shows its identity, never the key.
pub struct SigningKey {
    signer: Signer,
    algorithm: Algorithm,
    /// The registered key's id; `None` for a virksomhetssertifikat, which is sent as `x5c`.
    kid: Option<String>,
    certificate: Option<Arc<Certificate>>,
    /// Standard base64 DER of the leaf (and the chain when asked for), as the grant header takes it.
    x5c: Option<Vec<String>>,
    bits: usize,
    thumbprint: String,
    /// base64url modulus and exponent of the public key.
    public: (String, String),
    form: &'static str,
    /// For a key from a keyset: when it was made, and the `exp` Digdir gave its registration.
    registration: Option<Registration>,
}

/// What a keyset knows of its active key's registration with Digdir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub created: i64,
    /// Unix seconds; `None` until the renewer has read it back from Digdir.
    pub exp: Option<i64>,
    /// When a renewal pass last reached its end.
    pub last_pass: Option<i64>,
}

impl SigningKey {
    /// Checks an RSA private key given as PKCS#1 DER and wraps it for signing.
    fn from_pkcs1(
        pkcs1: &[u8],
        kid: Option<String>,
        algorithm: Algorithm,
        form: &'static str,
    ) -> Result<Self, KeyError> {
        let pair = KeyPair::from_der(pkcs1).map_err(|e| match e.description_() {
            "TooSmall" => KeyError::Invalid(format!(
                "the RSA key is smaller than {MIN_RSA_BITS} bits; Maskinporten needs at least {MIN_RSA_BITS}"
            )),
            other => KeyError::Invalid(format!("not a usable RSA private key ({other})")),
        })?;
        let bits = pair.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(KeyError::Invalid(format!(
                "the RSA key has {bits} bits; Maskinporten needs at least {MIN_RSA_BITS}"
            )));
        }
        let public = pair.public_key();
        let (n, e) = (
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        Ok(SigningKey::new(
            Signer::Software(EncodingKey::from_rsa_der(pkcs1)),
            (n, e),
            kid,
            algorithm,
            form,
        ))
    }

    fn new(
        signer: Signer,
        (n, e): (&[u8], &[u8]),
        kid: Option<String>,
        algorithm: Algorithm,
        form: &'static str,
    ) -> Self {
        SigningKey {
            signer,
            algorithm,
            kid,
            certificate: None,
            x5c: None,
            bits: n.len() * 8,
            thumbprint: jwk_thumbprint(n, e),
            public: (b64url(n), b64url(e)),
            form,
            registration: None,
        }
    }

    /// The key as a keyset's active key, with what is known of its registration.
    pub fn with_registration(mut self, registration: Registration) -> Self {
        self.registration = Some(registration);
        self
    }

    pub fn registration(&self) -> Option<Registration> {
        self.registration
    }

    /// The key for `jsonwebtoken`, when it is held in this process (not for an HSM key).
    pub fn encoding_key(&self) -> Option<&EncodingKey> {
        match &self.signer {
            Signer::Software(key) => Some(key),
            Signer::Hsm(_) => None,
        }
    }

    /// Where an HSM key is kept; `None` for a key held in this process.
    pub fn hsm(&self) -> Option<pkcs11::Placement> {
        match &self.signer {
            Signer::Software(_) => None,
            Signer::Hsm(key) => Some(key.placement()),
        }
    }

    /// Signs a JWS signing input (`header.claims`) and gives the base64url signature. An HSM
    /// signs on a blocking thread, so that a slow HSM holds up only the fetch that waits for it.
    pub async fn sign(&self, message: String) -> Result<String, SignError> {
        match &self.signer {
            Signer::Software(key) => {
                jsonwebtoken::crypto::sign(message.as_bytes(), key, self.algorithm)
                    .map_err(|e| SignError::Software(e.to_string()))
            }
            Signer::Hsm(key) => {
                let key = Arc::clone(key);
                let signature = tokio::task::spawn_blocking(move || key.sign(message.as_bytes()))
                    .await
                    .map_err(|e| SignError::Hsm(format!("the signing thread failed: {e}")))?
                    .map_err(SignError::Hsm)?;
                Ok(b64url(&signature))
            }
        }
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The registered key id the grant names; `None` for a virksomhetssertifikat.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// The virksomhetssertifikat's leaf certificate, for a PKCS#12 key.
    pub fn certificate(&self) -> Option<&Certificate> {
        self.certificate.as_deref()
    }
    /// The grant header's `x5c`, for a PKCS#12 key.
    pub fn x5c(&self) -> Option<&[String]> {
        self.x5c.as_deref()
    }
    pub fn bits(&self) -> usize {
        self.bits
    }
    /// RFC 7638 thumbprint of the public key: identifies the key in logs and in `check`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
    pub fn form(&self) -> &'static str {
        self.form
    }
    /// What the operator knows the key by: its kid, or the certificate's subject.
    pub fn label(&self) -> String {
        match (&self.kid, &self.certificate) {
            (Some(kid), _) => format!("kid {kid}"),
            (None, Some(cert)) => format!("certificate {}", cert.subject),
            (None, None) => format!("key {}", self.thumbprint),
        }
    }
    /// Whether `other` signs the same way: same key, same kid or certificate. A reloaded file that
    /// gives the same identity is no rotation.
    pub fn same_identity(&self, other: &SigningKey) -> bool {
        self.thumbprint == other.thumbprint
            && self.kid == other.kid
            && self.x5c == other.x5c
            && self.algorithm == other.algorithm
    }

    /// The public half as a JWK (`kty, alg, use, kid, n, e`), as Samarbeidsportalen takes it.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "alg": format!("{:?}", self.algorithm),
            "use": "sig",
            "kid": self.kid.as_deref().unwrap_or(&self.thumbprint),
            "n": self.public.0,
            "e": self.public.1,
        })
    }

    /// Loads a PEM key from memory (the embedded demo and mock keys).
    pub fn from_pem(text: &[u8], kid: &str) -> Result<Self, KeyError> {
        let pkcs1 = pem::rsa_pkcs1(text).map_err(KeyError::Invalid)?;
        SigningKey::from_pkcs1(&pkcs1, Some(kid.to_string()), Algorithm::RS256, "pem")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("form", &self.form)
            .field("hsm", &self.hsm())
            .field("kid", &self.kid)
            .field("certificate", &self.certificate)
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// The RSA key inside a PKCS#8 PrivateKeyInfo, as PKCS#1.
fn pkcs8_rsa(pkcs8: &[u8]) -> Result<Vec<u8>, KeyError> {
    let unreadable = || KeyError::Invalid("the private key in the file cannot be read".into());
    let info = der::Reader::new(pkcs8)
        .expect(der::SEQUENCE)
        .map_err(|_| unreadable())?;
    let mut r = info.children();
    r.expect(der::INTEGER).map_err(|_| unreadable())?;
    let algorithm = r.expect(der::SEQUENCE).map_err(|_| unreadable())?;
    let (oid, _) = der::algorithm(&algorithm).map_err(|_| unreadable())?;
    if oid != "1.2.840.113549.1.1.1" {
        let kind = match oid.as_str() {
            "1.2.840.10045.2.1" => "an EC key",
            "1.3.101.112" => "an Ed25519 key",
            _ => "not an RSA key",
        };
        return Err(KeyError::Invalid(format!(
            "the private key is {kind}: Maskinporten takes RSA keys only (RS256/RS384/RS512)"
        )));
    }
    let key = r.expect(der::OCTET_STRING).map_err(|_| unreadable())?;
    Ok(key.octets().map_err(|_| unreadable())?.into_owned())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwk_thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n));
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}
