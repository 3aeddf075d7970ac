//! Client keys: every supported form is loaded into one [`SigningKey`] that signs JWT grants.

mod der;
mod jwk;
mod pem;

use crate::secret::Secret;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use std::fmt;
use std::path::PathBuf;

/// Keys below this size are refused: Maskinporten's norm is 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Where a client's key comes from (`clients.<name>.key` in the config).
#[derive(Debug, Clone)]
pub enum KeySource {
    Pem { path: PathBuf, kid: String },
    Jwk { path: PathBuf },
    JwkBase64 { value: Secret<String> },
}

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

/// A loaded RSA private key ready to sign grants. `Debug` shows its identity, never the key.
pub struct SigningKey {
    encoding: EncodingKey,
    algorithm: Algorithm,
    kid: String,
    bits: usize,
    thumbprint: String,
    /// base64url modulus and exponent of the public key.
    public: (String, String),
    form: &'static str,
}

impl SigningKey {
    /// Checks an RSA private key given as PKCS#1 DER and wraps it for signing.
    fn from_pkcs1(
        pkcs1: &[u8],
        kid: String,
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
        let thumbprint = jwk_thumbprint(n, e);
        let public = (b64url(n), b64url(e));
        Ok(SigningKey {
            encoding: EncodingKey::from_rsa_der(pkcs1),
            algorithm,
            kid,
            bits,
            thumbprint,
            public,
            form,
        })
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn bits(&self) -> usize {
        self.bits
    }
    /// RFC 7638 thumbprint of the public key: identifies the key in the token cache and in `check`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
    pub fn form(&self) -> &'static str {
        self.form
    }

    /// The public half as a JWK (`kty, alg, use, kid, n, e`), as Samarbeidsportalen takes it.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "alg": format!("{:?}", self.algorithm),
            "use": "sig",
            "kid": self.kid,
            "n": self.public.0,
            "e": self.public.1,
        })
    }

    /// Loads a PEM key from memory (the embedded demo and mock keys).
    pub fn from_pem(text: &[u8], kid: &str) -> Result<Self, KeyError> {
        let pkcs1 = pem::rsa_pkcs1(text).map_err(KeyError::Invalid)?;
        SigningKey::from_pkcs1(&pkcs1, kid.to_string(), Algorithm::RS256, "pem")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("form", &self.form)
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Loads and checks a key from its source.
pub fn load(source: &KeySource) -> Result<SigningKey, KeyError> {
    match source {
        KeySource::Pem { path, kid } => SigningKey::from_pem(&read(path)?, kid)
            .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display()))),
        KeySource::Jwk { path } => {
            let text = read(path)?;
            jwk::load(&text, "jwk")
                .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
        }
        KeySource::JwkBase64 { value } => {
            let text = jwk::decode_base64(value.expose())?;
            jwk::load(&text, "jwk_base64")
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwk_thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n));
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}
