//! New RSA key pairs, in every form Samarbeidsportalen and portvakt take.

use super::{b64, b64url, der, pkcs8_rsa, KeyError};
use crate::support::secret::Secret;
use aws_lc_rs::rsa::KeyPair;

/// A freshly generated key pair in every form Samarbeidsportalen and portvakt take.
pub struct GeneratedKey {
    pub kid: String,
    /// `{"keys": [{kty, alg, use, e, n, kid}]}`: what is uploaded to Samarbeidsportalen.
    pub public_jwks: serde_json::Value,
    pub private_jwk: Secret<serde_json::Value>,
    /// The private JWK's JSON in standard base64, as `jwk_base64` and Altinn's tool take it.
    pub private_jwk_base64: Secret<String>,
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`), for `pem` + `kid`.
    pub pkcs8_pem: Secret<String>,
}

/// Generates an RSA key (2048, 3072 or 4096 bits) named `kid`.
pub fn generate(bits: usize, kid: &str) -> Result<GeneratedKey, KeyError> {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::KeySize;
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => {
            return Err(KeyError::Invalid(format!(
                "{other} bits: choose 2048, 3072 or 4096"
            )))
        }
    };
    let failed = || KeyError::Invalid("key generation failed".into());
    let pair = KeyPair::generate(size).map_err(|_| failed())?;
    let pkcs8 = pair.as_der().map_err(|_| failed())?;
    let pkcs8 = pkcs8.as_ref();
    let pkcs1 = pkcs8_rsa(pkcs8)?;
    let private = private_jwk(&pkcs1, kid)?;
    let public: serde_json::Map<String, serde_json::Value> = ["kty", "alg", "use", "e", "n", "kid"]
        .iter()
        .filter_map(|k| private.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let private = serde_json::Value::Object(private);
    let private_json = private.to_string();
    let pem_body = b64(pkcs8)
        .as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(GeneratedKey {
        kid: kid.to_string(),
        public_jwks: serde_json::json!({ "keys": [public] }),
        private_jwk_base64: Secret::new(b64(private_json.as_bytes())),
        private_jwk: Secret::new(private),
        pkcs8_pem: Secret::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----\n"
        )),
    })
}

/// An RSA private key (PKCS#1 DER) as a private JWK named `kid`, RS256, `use: sig`.
pub fn private_jwk(
    pkcs1: &[u8],
    kid: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, KeyError> {
    let failed = || KeyError::Invalid("not a readable RSA private key".into());
    let mut fields = der::Reader::new(pkcs1)
        .expect(der::SEQUENCE)
        .map_err(|_| failed())?
        .children();
    fields.expect(der::INTEGER).map_err(|_| failed())?; // version
    let mut private = serde_json::Map::new();
    private.insert("kty".into(), "RSA".into());
    private.insert("kid".into(), kid.into());
    private.insert("alg".into(), "RS256".into());
    private.insert("use".into(), "sig".into());
    for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        let value = fields.expect(der::INTEGER).map_err(|_| failed())?;
        let start = value.body.iter().position(|b| *b != 0).unwrap_or(0);
        private.insert(name.into(), b64url(&value.body[start..]).into());
    }
    Ok(private)
}

/// The private JWK of a key file as `portvakt keys adopt` takes it, and the key loaded from it: a
/// private JWK or JWK set (its last key), or a PEM key with the kid it was registered under.
pub fn adoptable(
    text: &[u8],
    kid: Option<&str>,
) -> Result<(serde_json::Value, super::SigningKey), KeyError> {
    let jwk = match kid {
        Some(kid) => {
            let pkcs1 = super::pem::rsa_pkcs1(text).map_err(KeyError::Invalid)?;
            serde_json::Value::Object(private_jwk(&pkcs1, kid)?)
        }
        None => {
            let value: serde_json::Value = serde_json::from_slice(text).map_err(|_| {
                KeyError::Invalid("neither a JWK nor, with --kid, a PEM key".into())
            })?;
            match value.get("keys").and_then(serde_json::Value::as_array) {
                Some(keys) => keys
                    .last()
                    .cloned()
                    .ok_or_else(|| KeyError::Invalid("the JWK set has no keys".into()))?,
                None => value,
            }
        }
    };
    // Loading it checks that it is a private RSA key of at least 2048 bits, with a kid.
    let key = super::jwk::load(jwk.to_string().as_bytes(), "jwk")?;
    Ok((jwk, key))
}
