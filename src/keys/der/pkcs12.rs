//! PKCS#12 (RFC 7292) files as virksomhetssertifikat issuers and `openssl pkcs12 -export` write them:
//! legacy ones (pbeWithSHA1And3-KeyTripleDES-CBC, pbeWithSHA1And40BitRC2-CBC, SHA-1 MAC) and modern
//! ones (PBES2 with PBKDF2 and AES, SHA-256 MAC). Hashes, HMAC, PBKDF2 and AES come from aws-lc-rs,
//! which portvakt already uses for TLS; only the two legacy block ciphers need RustCrypto's `des`
//! and `rc2`, which aws-lc-rs does not offer.

pub use super::pbe::Pkcs12Error;
use super::pbe::{bmp_password, decrypt, iterations, pkcs12_kdf, Hash, Result};
use super::{self as der, Element, Reader};
use aws_lc_rs::hmac;
use std::borrow::Cow;

/// What a PKCS#12 file holds: private keys (PKCS#8 DER) and certificates (DER), with their
/// `friendlyName` (the alias) and `localKeyId` (which pairs a key with its certificate).
#[derive(Default)]
pub struct Contents {
    pub keys: Vec<Bag>,
    pub certs: Vec<Bag>,
}

pub struct Bag {
    pub alias: Option<String>,
    pub local_key_id: Option<Vec<u8>>,
    pub der: Vec<u8>,
}

const DATA: &str = "1.2.840.113549.1.7.1";
const ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const KEY_BAG: &str = "1.2.840.113549.1.12.10.1.1";
const SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const SAFE_CONTENTS_BAG: &str = "1.2.840.113549.1.12.10.1.6";
const X509_CERTIFICATE: &str = "1.2.840.113549.1.9.22.1";
const FRIENDLY_NAME: &str = "1.2.840.113549.1.9.20";
const LOCAL_KEY_ID: &str = "1.2.840.113549.1.9.21";

/// Opens a PKCS#12 file: checks its integrity with the password, then decrypts every bag.
pub fn open(bytes: &[u8], password: &str) -> Result<Contents> {
    let pfx = Reader::new(bytes).expect(der::SEQUENCE)?;
    let mut parts = pfx.children();
    if parts.expect(der::INTEGER)?.small_uint()? != 3 {
        return Err(Pkcs12Error::NotPkcs12);
    }
    let auth_safe = content_info_data(&parts.expect(der::SEQUENCE)?)?;
    if let Some(mac) = parts.optional(der::SEQUENCE)? {
        verify_mac(&mac, &auth_safe, password)?;
    }
    let mut contents = Contents::default();
    let mut infos = Reader::new(&auth_safe).expect(der::SEQUENCE)?.children();
    while !infos.is_empty() {
        let info = infos.expect(der::SEQUENCE)?;
        let mut r = info.children();
        let kind = r.expect(der::OID)?.oid()?;
        let inner = r.expect(der::CONTEXT_0)?.children().next()?;
        let safe_contents: Cow<'_, [u8]> = match kind.as_str() {
            DATA => inner.octets()?,
            ENCRYPTED_DATA => Cow::Owned(encrypted_data(&inner, password)?),
            other => {
                return Err(Pkcs12Error::Unsupported(format!(
                    "content type {other} (public-key protected files are not supported)"
                )))
            }
        };
        read_bags(&safe_contents, password, &mut contents, 0)?;
    }
    Ok(contents)
}

/// A ContentInfo of type data: its octets.
fn content_info_data<'a>(info: &Element<'a>) -> Result<Cow<'a, [u8]>> {
    let mut r = info.children();
    match r.expect(der::OID)?.oid()?.as_str() {
        DATA => Ok(r.expect(der::CONTEXT_0)?.children().next()?.octets()?),
        other => Err(Pkcs12Error::Unsupported(format!(
            "authSafe of type {other} (only password-protected files are supported)"
        ))),
    }
}

fn encrypted_data(e: &Element<'_>, password: &str) -> Result<Vec<u8>> {
    let mut r = e.children();
    r.expect(der::INTEGER)?;
    let mut info = r.expect(der::SEQUENCE)?.children();
    info.expect(der::OID)?;
    let algorithm = info.expect(der::SEQUENCE)?;
    let content = info.next()?;
    // [0] IMPLICIT OCTET STRING: primitive (0x80) or, in BER, constructed (0xa0).
    if content.tag & 0xdf != 0x80 {
        return Err(Pkcs12Error::NotPkcs12);
    }
    let data = Element {
        tag: der::OCTET_STRING | (content.tag & 0x20),
        ..content
    }
    .octets()?;
    decrypt(&algorithm, &data, password)
}

fn read_bags(bytes: &[u8], password: &str, out: &mut Contents, depth: usize) -> Result<()> {
    if depth > 4 {
        return Err(Pkcs12Error::NotPkcs12);
    }
    let mut bags = Reader::new(bytes).expect(der::SEQUENCE)?.children();
    while !bags.is_empty() {
        let mut bag = bags.expect(der::SEQUENCE)?.children();
        let kind = bag.expect(der::OID)?.oid()?;
        let value = bag.expect(der::CONTEXT_0)?.children().next()?;
        let (alias, local_key_id) = match bag.optional(der::SET)? {
            Some(set) => attributes(&set)?,
            None => (None, None),
        };
        let der = match kind.as_str() {
            KEY_BAG => value.raw.to_vec(),
            SHROUDED_KEY_BAG => {
                let mut r = value.children();
                let algorithm = r.expect(der::SEQUENCE)?;
                let data = r.expect(der::OCTET_STRING)?.octets()?;
                decrypt(&algorithm, &data, password)?
            }
            CERT_BAG => {
                let mut r = value.children();
                if r.expect(der::OID)?.oid()? != X509_CERTIFICATE {
                    continue;
                }
                r.expect(der::CONTEXT_0)?
                    .children()
                    .next()?
                    .octets()?
                    .into_owned()
            }
            SAFE_CONTENTS_BAG => {
                read_bags(value.raw, password, out, depth + 1)?;
                continue;
            }
            // CRLs and secret bags carry nothing portvakt uses.
            _ => continue,
        };
        let bag = Bag {
            alias,
            local_key_id,
            der,
        };
        if matches!(kind.as_str(), KEY_BAG | SHROUDED_KEY_BAG) {
            out.keys.push(bag);
        } else {
            out.certs.push(bag);
        }
    }
    Ok(())
}

fn attributes(set: &Element<'_>) -> Result<(Option<String>, Option<Vec<u8>>)> {
    let (mut alias, mut id) = (None, None);
    let mut r = set.children();
    while !r.is_empty() {
        let mut attribute = r.expect(der::SEQUENCE)?.children();
        let oid = attribute.expect(der::OID)?.oid()?;
        let Some(value) = attribute.expect(der::SET)?.children().next().ok() else {
            continue;
        };
        match oid.as_str() {
            FRIENDLY_NAME => alias = Some(value.bmp_string()),
            LOCAL_KEY_ID => id = Some(value.octets()?.into_owned()),
            _ => {}
        }
    }
    Ok((alias, id))
}

/// The MAC over the authenticated safe: the password check. A mismatch means a wrong password.
fn verify_mac(mac_data: &Element<'_>, auth_safe: &[u8], password: &str) -> Result<()> {
    let mut r = mac_data.children();
    let mut digest_info = r.expect(der::SEQUENCE)?.children();
    let (oid, _) = der::algorithm(&digest_info.expect(der::SEQUENCE)?)?;
    let expected = digest_info.expect(der::OCTET_STRING)?.octets()?;
    let salt = r.expect(der::OCTET_STRING)?.octets()?;
    let iterations = match r.optional(der::INTEGER)? {
        Some(i) => iterations(i.small_uint()?)?,
        None => 1,
    };
    let hash = Hash::from_digest_oid(&oid)?;
    let key = pkcs12_kdf(
        &hash,
        &bmp_password(password),
        &salt,
        3,
        iterations,
        hash.len(),
    );
    let key = hmac::Key::new(hash.hmac, &key);
    hmac::verify(&key, auth_safe, &expected).map_err(|_| Pkcs12Error::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_pkcs12() {
        assert_eq!(
            open(b"-----BEGIN PRIVATE KEY-----", "x").err(),
            Some(Pkcs12Error::NotPkcs12)
        );
    }
}
