//! Which key verifies a grant: a key registered for the client (by kid, not past its `exp`), or
//! the public key of a virksomhetssertifikat sent as `x5c`, its chain checked against the trusted
//! CAs and its organisation the client's.

use super::refusal::{refuse, Refusal};
use super::Inner;
use crate::support::sync::lock;
use jsonwebtoken::DecodingKey;
use std::sync::Arc;

/// A registered key, found by the grant's `kid`.
pub(super) fn registered_key(
    client: &super::MockClient,
    kid: &str,
    now: i64,
) -> Result<DecodingKey, Refusal> {
    let (n, e) = client.keys.get(kid).ok_or_else(|| {
        refuse(
            "invalid_grant",
            "MP-124",
            format!("Invalid assertion: no key with kid {kid} registered for the client"),
        )
    })?;
    let meta = client.registered.get(kid);
    if meta.is_some_and(|m| m.usable_from > now) {
        return Err(refuse(
            "invalid_grant",
            "MP-124",
            format!("Invalid assertion: Unknown key identifier (kid) for client: {kid}"),
        ));
    }
    if client.expired_kids.contains(kid) || meta.is_some_and(|m| m.exp <= now) {
        return Err(refuse(
            "invalid_grant",
            "MP-121",
            format!("Invalid assertion: the key with kid {kid} has expired"),
        ));
    }
    DecodingKey::from_rsa_components(n, e)
        .map_err(|_| refuse("invalid_grant", "MP-124", "registered key unusable"))
}

/// A virksomhetssertifikat in `x5c`: standard base64 DER, leaf first, chaining to a trusted CA,
/// valid now, for client authentication, and issued to the client's organisation.
pub(super) fn certificate_key(
    inner: &Inner,
    client: &super::MockClient,
    x5c: &[String],
) -> Result<DecodingKey, Refusal> {
    use base64::Engine as _;
    use rustls_pki_types::{CertificateDer, UnixTime};
    if !client.keys.is_empty() {
        return Err(refuse(
            "invalid_grant",
            "MP-120",
            "Invalid assertion: this client uses registered keys, send kid",
        ));
    }
    let malformed = || {
        refuse(
            "invalid_grant",
            "MP-123",
            "Invalid assertion: malformed x5c",
        )
    };
    let ders: Vec<CertificateDer<'static>> = x5c
        .iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map(CertificateDer::from)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| malformed())?;
    let (leaf, intermediates) = ders.split_first().ok_or_else(malformed)?;
    let cert = crate::keys::Certificate::parse(leaf).map_err(|_| malformed())?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in lock(&inner.trusted_cas).iter() {
        let _ = roots.add(ca.clone());
    }
    let invalid = |why: String| {
        refuse(
            "invalid_grant",
            "MP-120",
            format!("Invalid assertion: certificate invalid: {why}"),
        )
    };
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .map_err(|e| invalid(e.to_string()))?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map_err(|e| invalid(e.to_string()))?;
    if cert.org_number.as_deref() != Some(client.org.as_str()) {
        return Err(refuse(
            "invalid_grant",
            "MP-122",
            format!(
                "Invalid assertion: the certificate belongs to {}, not the client's organisation {}",
                cert.org_number.as_deref().unwrap_or("no organisation"),
                client.org
            ),
        ));
    }
    let public = cert.rsa_public_der.as_deref().ok_or_else(|| {
        refuse(
            "invalid_grant",
            "MP-124",
            "Invalid assertion: the certificate's key is not RSA",
        )
    })?;
    Ok(DecodingKey::from_rsa_der(public))
}
