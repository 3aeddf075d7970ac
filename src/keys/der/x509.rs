//! The parts of an X.509 certificate portvakt reads: subject (and the org number in it), validity and
//! the RSA public key. Chain verification is Maskinporten's job (and the mock's, with webpki).

use super::{self as der, Element, Malformed, Reader};

/// A certificate from a virksomhetssertifikat file, with the fields `check`, metrics and the key
/// checks need.
#[derive(Clone)]
pub struct Certificate {
    pub der: Vec<u8>,
    /// The subject as `C=NO, O=..., serialNumber=..., CN=...`, in certificate order.
    pub subject: String,
    pub issuer: String,
    pub subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    /// The organisation number from `serialNumber` or `organizationIdentifier` (`NTRNO-<orgno>`).
    pub org_number: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// The RSA public key's modulus and exponent (big-endian, no leading zeros); `None` when not RSA.
    pub rsa: Option<(Vec<u8>, Vec<u8>)>,
    /// The `RSAPublicKey` DER from the subject public key info, as signature checks take it.
    pub rsa_public_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("org_number", &self.org_number)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

impl Certificate {
    pub fn parse(bytes: &[u8]) -> Result<Certificate, Malformed> {
        let cert = Reader::new(bytes).expect(der::SEQUENCE)?;
        let mut tbs = cert.children().expect(der::SEQUENCE)?.children();
        tbs.optional(der::CONTEXT_0)?; // version
        tbs.expect(der::INTEGER)?; // serial number
        tbs.expect(der::SEQUENCE)?; // signature algorithm
        let issuer = tbs.expect(der::SEQUENCE)?;
        let mut validity = tbs.expect(der::SEQUENCE)?.children();
        let not_before = time(&validity.next()?)?;
        let not_after = time(&validity.next()?)?;
        if not_after < not_before {
            // Never valid: taking it would only move the error to the first token fetch.
            return Err(Malformed("validity ends before it begins"));
        }
        let subject = tbs.expect(der::SEQUENCE)?;
        let spki = tbs.expect(der::SEQUENCE)?;
        let mut spki_parts = spki.children();
        let (algorithm, _) = der::algorithm(&spki_parts.expect(der::SEQUENCE)?)?;
        let key_bits = spki_parts.expect(der::BIT_STRING)?;
        let (rsa, rsa_public_der) = if algorithm == RSA_ENCRYPTION {
            let public_der = key_bits
                .body
                .split_first()
                .filter(|(unused, _)| **unused == 0)
                .map(|(_, der)| der)
                .ok_or(Malformed("bad public key bits"))?;
            let mut parts = Reader::new(public_der).expect(der::SEQUENCE)?.children();
            let n = trim_leading_zeros(parts.expect(der::INTEGER)?.body);
            let e = trim_leading_zeros(parts.expect(der::INTEGER)?.body);
            (Some((n, e)), Some(public_der.to_vec()))
        } else {
            (None, None)
        };
        let attributes = name_attributes(&subject)?;
        let org_number = attributes.iter().find_map(|(oid, value)| {
            matches!(oid.as_str(), "2.5.4.5" | "2.5.4.97")
                .then(|| org_number(value))
                .flatten()
        });
        Ok(Certificate {
            der: bytes.to_vec(),
            subject: render_name(&attributes),
            issuer: render_name(&name_attributes(&issuer)?),
            subject_raw: subject.raw.to_vec(),
            issuer_raw: issuer.raw.to_vec(),
            org_number,
            not_before,
            not_after,
            rsa,
            rsa_public_der,
        })
    }

    /// Whether `other` issued this certificate (by name; signatures are the verifier's business).
    pub fn issued_by(&self, other: &Certificate) -> bool {
        self.issuer_raw == other.subject_raw
    }

    pub fn is_self_issued(&self) -> bool {
        self.issuer_raw == self.subject_raw
    }
}

/// The org number in `910753614` (Buypass' serialNumber) or `NTRNO-910753614` (organizationIdentifier);
/// anything else is not an org number.
fn org_number(value: &str) -> Option<String> {
    let digits = value.strip_prefix("NTRNO-").unwrap_or(value).trim();
    (digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_string())
}

/// An unsigned big-endian integer without its leading zero bytes, as JWK and x5c comparisons take it.
pub fn trim_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

fn name_attributes(name: &Element<'_>) -> Result<Vec<(String, String)>, Malformed> {
    let mut out = Vec::new();
    let mut rdns = name.children();
    while !rdns.is_empty() {
        let mut set = rdns.expect(der::SET)?.children();
        while !set.is_empty() {
            let mut pair = set.expect(der::SEQUENCE)?.children();
            let oid = pair.expect(der::OID)?.oid()?;
            out.push((oid, string_value(&pair.next()?)));
        }
    }
    Ok(out)
}

fn string_value(e: &Element<'_>) -> String {
    match e.tag {
        // BMPString: UTF-16BE.
        0x1e => e.bmp_string(),
        // TeletexString: in practice Latin-1.
        0x14 => e.body.iter().map(|b| *b as char).collect(),
        _ => String::from_utf8_lossy(e.body).into_owned(),
    }
}

fn render_name(attributes: &[(String, String)]) -> String {
    attributes
        .iter()
        .map(|(oid, value)| {
            let name = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.5" => "serialNumber",
                "2.5.4.97" => "organizationIdentifier",
                "1.2.840.113549.1.9.1" => "emailAddress",
                other => other,
            };
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(e: &Element<'_>) -> Result<i64, Malformed> {
    let bad = Malformed("bad certificate time");
    let text = std::str::from_utf8(e.body).map_err(|_| bad.clone())?;
    let digits = text.strip_suffix('Z').ok_or(bad.clone())?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let (year, rest) = match (e.tag, digits.len()) {
        (der::UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().map_err(|_| bad.clone())?;
            // RFC 5280: UTCTime years 50-99 are 19xx, 00-49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (der::GENERALIZED_TIME, 14) => {
            (digits[..4].parse().map_err(|_| bad.clone())?, &digits[4..])
        }
        _ => return Err(bad),
    };
    let field = |i: usize| -> u8 { rest[i..i + 2].parse().unwrap_or(u8::MAX) };
    let (month, day, hour, minute, second) = (field(0), field(2), field(4), field(6), field(8));
    crate::support::time::from_civil(year, month, day, hour, minute, second).ok_or(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_that_ends_before_it_begins_is_malformed() {
        // Found by the keys fuzzer: notBefore 2030, notAfter 2021.
        let der = include_bytes!("../../../fuzz/regressions/keys/cert-not-before-after-not-after");
        let err = Certificate::parse(der).map(|_| ()).unwrap_err();
        assert_eq!(err.0, "validity ends before it begins");
    }

    #[test]
    fn org_numbers_in_both_subject_styles() {
        assert_eq!(org_number("991825827").as_deref(), Some("991825827"));
        assert_eq!(org_number("NTRNO-910753614").as_deref(), Some("910753614"));
        assert_eq!(org_number("UNDERENHET-123"), None);
        assert_eq!(org_number("12345"), None);
    }
}
