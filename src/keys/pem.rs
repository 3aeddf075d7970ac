//! PEM-encoded RSA private keys, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).

use jsonwebtoken::EncodingKey;

/// The key as PKCS#1 DER, whichever of the two PEM forms it came in.
pub fn rsa_pkcs1(text: &[u8]) -> Result<Vec<u8>, String> {
    let s = String::from_utf8_lossy(text);
    if s.contains("ENCRYPTED PRIVATE KEY") {
        return Err("the PEM key is encrypted: decrypt it (openssl pkcs8 -in key.pem -out plain.pem) and protect the file instead".into());
    }
    if s.contains("BEGIN EC PRIVATE KEY") || s.contains("BEGIN OPENSSH PRIVATE KEY") {
        return Err("not an RSA key: Maskinporten takes RSA keys only (RS256/RS384/RS512)".into());
    }
    if !s.contains("PRIVATE KEY-----") {
        return Err(
            "no PEM private key found (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)".into(),
        );
    }
    EncodingKey::from_rsa_pem(text)
        .map(|k| k.as_bytes().to_vec())
        .map_err(|_| "not a readable RSA private key in PKCS#8 or PKCS#1 PEM".to_string())
}
