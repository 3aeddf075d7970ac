//! Keys that come with a certificate: a virksomhetssertifikat in a PKCS#12 file or in an HSM, and
//! any key inside an HSM. The certificate is checked (valid now, the key's own) and sent as `x5c`.

use super::der::pkcs12;
use super::{b64, b64url, pkcs11, pkcs8_rsa, Certificate, KeyError, Signer, SigningKey};
use jsonwebtoken::Algorithm;
use std::sync::Arc;

impl SigningKey {
    /// Loads a virksomhetssertifikat: the key (by `alias` when the file holds several), its
    /// certificate, and the chain above it. The certificate must be valid now and match the key.
    pub fn from_pkcs12(
        bytes: &[u8],
        password: &str,
        alias: Option<&str>,
        chain: bool,
        now_unix: i64,
    ) -> Result<Self, KeyError> {
        let invalid = |m: String| KeyError::Invalid(m);
        let contents = pkcs12::open(bytes, password).map_err(|e| invalid(e.to_string()))?;
        let aliases = || {
            let names: Vec<&str> = contents
                .keys
                .iter()
                .map(|k| k.alias.as_deref().unwrap_or("(no alias)"))
                .collect();
            names.join(", ")
        };
        let key = match alias {
            Some(alias) => contents
                .keys
                .iter()
                .find(|k| k.alias.as_deref() == Some(alias))
                .ok_or_else(|| {
                    invalid(format!(
                        "no private key with alias `{alias}` in the file; it holds: {}",
                        aliases()
                    ))
                })?,
            None => match contents.keys.as_slice() {
                [one] => one,
                [] => return Err(invalid("the file holds no private key".into())),
                _ => {
                    return Err(invalid(format!(
                        "the file holds {} private keys ({}): set `alias` to pick one",
                        contents.keys.len(),
                        aliases()
                    )))
                }
            },
        };
        let pkcs1 = pkcs8_rsa(&key.der)?;
        let mut signing = SigningKey::from_pkcs1(&pkcs1, None, Algorithm::RS256, "pkcs12")?;
        let mut certs = Vec::with_capacity(contents.certs.len());
        for bag in &contents.certs {
            let cert = Certificate::parse(&bag.der)
                .map_err(|_| invalid("a certificate in the file cannot be read".into()))?;
            certs.push((bag.local_key_id.clone(), cert));
        }
        let matches_key = |c: &Certificate| {
            c.rsa
                .as_ref()
                .is_some_and(|(n, _)| b64url(n) == signing.public.0)
        };
        let leaf = certs
            .iter()
            .find(|(id, c)| id.is_some() && *id == key.local_key_id && matches_key(c))
            .or_else(|| certs.iter().find(|(_, c)| matches_key(c)))
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                invalid("the file holds no certificate for its private key (the certificate's public key must match)".into())
            })?;
        let certs: Vec<Certificate> = certs.into_iter().map(|(_, c)| c).collect();
        signing.attach(leaf, &certs, chain, now_unix)?;
        Ok(signing)
    }

    /// Makes `leaf` the certificate sent as `x5c` (with its chain from `certs` when asked for),
    /// once it is known to be valid now.
    fn attach(
        &mut self,
        leaf: Certificate,
        certs: &[Certificate],
        chain: bool,
        now_unix: i64,
    ) -> Result<(), KeyError> {
        if now_unix < leaf.not_before {
            return Err(KeyError::Invalid(format!(
                "the certificate ({}) is not valid until {}",
                leaf.subject,
                crate::support::time::date(leaf.not_before)
            )));
        }
        if now_unix > leaf.not_after {
            return Err(KeyError::Invalid(format!(
                "the certificate ({}) expired on {}: install the renewed virksomhetssertifikat",
                leaf.subject,
                crate::support::time::date(leaf.not_after)
            )));
        }
        let mut x5c = vec![b64(&leaf.der)];
        if chain {
            let mut current = &leaf;
            while !current.is_self_issued() && x5c.len() < 8 {
                let Some(issuer) = certs.iter().find(|c| current.issued_by(c)) else {
                    break;
                };
                x5c.push(b64(&issuer.der));
                current = issuer;
            }
        }
        self.x5c = Some(x5c);
        self.certificate = Some(Arc::new(leaf));
        Ok(())
    }

    /// A key inside an HSM. With a `kid` it is a registered key; without, the certificate stored
    /// under the key's label is sent as `x5c` (and with `chain`, the CA certificates in the token).
    pub fn from_hsm(
        found: pkcs11::Found,
        kid: Option<String>,
        chain: bool,
        now_unix: i64,
    ) -> Result<Self, KeyError> {
        let placement = found.key.placement();
        let certificate = found.certificate.map(|der| Certificate::parse(&der));
        let mut key = SigningKey::new(
            Signer::Hsm(Arc::new(found.key)),
            (&found.modulus, &found.exponent),
            kid,
            Algorithm::RS256,
            "pkcs11",
        );
        if key.kid.is_some() {
            return Ok(key);
        }
        let leaf = match certificate {
            Some(Ok(cert)) => cert,
            Some(Err(_)) => {
                return Err(KeyError::Invalid(format!(
                    "the certificate labelled `{}` in the token cannot be read",
                    placement.label
                )))
            }
            None => {
                return Err(KeyError::Invalid(format!(
                    "no certificate labelled `{}` in the token, and no kid: set `kid` for a key registered in Samarbeidsportalen, or store the virksomhetssertifikat's certificate under the key's label",
                    placement.label
                )))
            }
        };
        if leaf.rsa.as_ref().map(|(n, _)| b64url(n)) != Some(key.public.0.clone()) {
            return Err(KeyError::Invalid(format!(
                "the certificate labelled `{}` ({}) is not the key's: its public key differs",
                placement.label, leaf.subject
            )));
        }
        let others: Vec<Certificate> = found
            .others
            .iter()
            .filter_map(|der| Certificate::parse(der).ok())
            .collect();
        key.attach(leaf, &others, chain, now_unix)?;
        Ok(key)
    }
}
