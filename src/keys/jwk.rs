//! Private JWKs and JWK sets, as files or base64 (as Altinn's `altinn-jwks export key --base64` prints them).

use super::{der, KeyError, SigningKey};
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

/// Decodes the base64 form: standard alphabet with or without padding, URL-safe accepted too.
pub fn decode_base64(value: &str) -> Result<Vec<u8>, KeyError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&compact).ok())
        .ok_or_else(|| KeyError::Invalid("jwk_base64 is not valid base64".into()))
}

/// Loads a private RSA JWK, or the last key of a JWK set (the newest, as Altinn's tool keeps them).
pub fn load(text: &[u8], form: &'static str) -> Result<SigningKey, KeyError> {
    let invalid = |m: &str| KeyError::Invalid(m.to_string());
    let value: Value = serde_json::from_slice(text).map_err(|_| invalid("not a JSON JWK"))?;
    let jwk = match value.get("keys") {
        Some(Value::Array(keys)) => keys
            .last()
            .ok_or_else(|| invalid("the JWK set has no keys"))?,
        Some(_) => return Err(invalid("`keys` in the JWK set is not a list")),
        None => &value,
    };
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    match field("kty") {
        Some("RSA") => {}
        Some(other) => {
            return Err(KeyError::Invalid(format!(
                "the JWK is {other}, not RSA: Maskinporten takes RSA keys only"
            )))
        }
        None => return Err(invalid("the JWK has no kty")),
    }
    let kid = field("kid").filter(|k| !k.is_empty()).ok_or_else(|| {
        invalid("the JWK has no kid: Maskinporten needs the key id registered for it")
    })?;
    let algorithm = match field("alg") {
        None | Some("RS256") => Algorithm::RS256,
        Some("RS384") => Algorithm::RS384,
        Some("RS512") => Algorithm::RS512,
        Some(other) => {
            return Err(KeyError::Invalid(format!(
                "the JWK's alg {other} is not RS256, RS384 or RS512"
            )))
        }
    };
    // Altinn's tool writes `"oth": []`; only a non-empty list means a multi-prime key.
    if jwk
        .get("oth")
        .and_then(Value::as_array)
        .is_some_and(|o| !o.is_empty())
    {
        return Err(invalid("multi-prime RSA keys (oth) are not supported"));
    }
    if field("d").is_none() {
        return Err(invalid(
            "this is a public JWK: portvakt needs the private key (with d, p, q, dp, dq, qi)",
        ));
    }
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(8);
    for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        let encoded =
            field(name).ok_or_else(|| KeyError::Invalid(format!("the JWK lacks `{name}`")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| KeyError::Invalid(format!("the JWK's `{name}` is not base64url")))?;
        parts.push(bytes);
    }
    let pkcs1 = der::rsa_private_key([
        &parts[0], &parts[1], &parts[2], &parts[3], &parts[4], &parts[5], &parts[6], &parts[7],
    ]);
    SigningKey::from_pkcs1(&pkcs1, Some(kid.to_string()), algorithm, form)
}
