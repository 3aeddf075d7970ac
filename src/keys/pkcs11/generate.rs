//! `portvakt keygen --pkcs11`: an RSA key pair made inside the token, whose private half can never
//! be read out (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`).

use super::{short, token, Token};
use crate::keys::{b64url, KeyError};
use crate::support::secret::Secret;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use std::path::Path;

/// The public half of a key made in a token.
pub struct Made {
    /// `{"keys": [{kty, alg, use, kid, n, e}]}`, as Samarbeidsportalen takes it.
    pub public_jwks: serde_json::Value,
}

/// The attributes of the new pair's two halves: the private one sensitive, never extractable and
/// for signing only; the public one for verifying; both kept in the token, with one label and id.
fn templates(label: &str, kid: &str, bits: usize) -> ([Attribute; 9], [Attribute; 10]) {
    // The same CKA_ID ties the two halves together, as PKCS#11 tools expect.
    let id = kid.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::ModulusBits((bits as u64).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    (public, private)
}

/// Makes a `bits`-bit RSA key pair labelled `label` in the token, with `kid` in its public JWK.
/// Refuses a label a private key has already.
pub fn generate(
    module: &Path,
    token_label: &str,
    pin: Secret<String>,
    label: &str,
    bits: usize,
    kid: &str,
) -> Result<Made, KeyError> {
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(KeyError::Invalid(format!(
            "{bits} bits: choose 2048, 3072 or 4096"
        )));
    }
    let token: std::sync::Arc<Token> = token(module, token_label, pin)?;
    let session = token.rw_session()?;
    let taken = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token.invalid(format!("the keys cannot be listed: {}", short(&e))))?;
    if !taken.is_empty() {
        return Err(token.invalid(format!(
            "a private key labelled `{label}` is in the token already: keygen never replaces a key; choose another --label"
        )));
    }
    let (public, private) = templates(label, kid, bits);
    let (public_key, _) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(|e| token.invalid(format!("the key pair could not be made: {}", short(&e))))?;
    let (mut n, mut e) = (None, None);
    let attrs = session
        .get_attributes(
            public_key,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| token.invalid(format!("the public key cannot be read: {}", short(&e))))?;
    for attr in attrs {
        match attr {
            Attribute::Modulus(v) => n = Some(crate::keys::der::x509::trim_leading_zeros(&v)),
            Attribute::PublicExponent(v) => {
                e = Some(crate::keys::der::x509::trim_leading_zeros(&v))
            }
            _ => {}
        }
    }
    let (Some(n), Some(e)) = (n, e) else {
        return Err(token.invalid("the token did not show the new public key".into()));
    };
    Ok(Made {
        public_jwks: serde_json::json!({"keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": b64url(&n),
            "e": b64url(&e),
        }]}),
    })
}
