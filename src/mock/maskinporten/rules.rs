//! The checks Maskinporten makes on a JWT grant, and the token it issues when they pass.

use super::grant_keys::{certificate_key, registered_key};
pub(super) use super::refusal::{refuse, Refusal};
use super::{Inner, SIGNING_KID};
use crate::support::sync::lock;
use http::StatusCode;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

/// The claims Maskinporten documents for a grant; anything else is "Invalid assertion".
const DOCUMENTED_CLAIMS: &[&str] = &[
    "aud",
    "iss",
    "iat",
    "exp",
    "jti",
    "scope",
    "resource",
    "consumer_org",
    "authorization_details",
    "pid",
    "iss_onbehalfof",
];
const MAX_GRANT_LIFETIME: i64 = 120;
const MAX_CLOCK_SKEW: i64 = 10;

/// The checks Maskinporten makes on a grant, in the order it makes them.
pub(super) fn check_grant(
    inner: &Inner,
    assertion: &str,
    header: &jsonwebtoken::Header,
    claims: &Map<String, Value>,
) -> Result<Value, Refusal> {
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
    ) {
        return Err(refuse(
            "invalid_grant",
            "MP-124",
            "Invalid assertion: alg must be RS256, RS384 or RS512",
        ));
    }
    if let Some(extra) = claims
        .keys()
        .find(|k| !DOCUMENTED_CLAIMS.contains(&k.as_str()))
    {
        return Err(refuse(
            "invalid_grant",
            "MP-000",
            format!("Invalid assertion: undocumented claim {extra}"),
        ));
    }
    let client_id = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let client = lock(&inner.clients)
        .get(client_id)
        .cloned()
        .ok_or_else(|| {
            refuse(
                "invalid_grant",
                "MP-100",
                "Invalid assertion: client not found",
            )
        })?;
    let key = match (&header.kid, &header.x5c) {
        (Some(kid), None) => registered_key(&client, kid, super::now(inner))?,
        (None, Some(x5c)) => certificate_key(inner, &client, x5c)?,
        _ => {
            return Err(refuse(
                "invalid_grant",
                "MP-123",
                "Invalid assertion: exactly one of kid and x5c is required",
            ))
        }
    };
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation).map_err(|_| {
        refuse(
            "invalid_grant",
            "MP-124",
            "Invalid assertion: signature does not verify with the client's key",
        )
    })?;
    if claims.get("aud") != Some(&Value::String(inner.issuer.clone())) {
        return Err(refuse(
            "invalid_grant",
            "MP-110",
            format!("Invalid assertion: aud must be {}", inner.issuer),
        ));
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(refuse(
            "invalid_grant",
            "MP-130",
            "Invalid assertion: iat and exp are required numbers",
        ));
    };
    let now = super::now(inner);
    if exp - iat > MAX_GRANT_LIFETIME || exp <= iat {
        return Err(refuse(
            "invalid_grant",
            "MP-130",
            "Invalid assertion: exp - iat must be at most 120 seconds",
        ));
    }
    if (iat - now).abs() > MAX_CLOCK_SKEW || exp < now {
        return Err(refuse(
            "invalid_grant",
            "MP-130",
            "Invalid assertion: iat is not within 10 seconds of the server's clock",
        ));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    let Some(jti) = jti else {
        return Err(refuse(
            "invalid_grant",
            "MP-012",
            "Invalid assertion: jti is required",
        ));
    };
    if !lock(&inner.jtis).insert(jti.to_string()) {
        return Err(refuse(
            "invalid_grant",
            "MP-012",
            "Invalid assertion: jti has been used before",
        ));
    }
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.is_empty() {
        return Err(refuse("invalid_scope", "MP-200", "scope is missing"));
    }
    if let Some(missing) = scopes.iter().find(|s| !client.scopes.contains(**s)) {
        return Err(refuse(
            "invalid_scope",
            "MP-200",
            format!("Invalid scope: client lacks {missing}"),
        ));
    }
    let mut consumer = client.org.clone();
    let mut supplier = None;
    if let Some(org) = claims.get("consumer_org") {
        let org = org.as_str().unwrap_or_default();
        if org.len() != 9 || !org.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                "invalid_request",
                "MP-250",
                "consumer_org must be a 9-digit organisation number",
            ));
        }
        if org == client.org {
            return Err(refuse(
                "invalid_request",
                "MP-250",
                "consumer_org is the client's own organisation",
            ));
        }
        if let Some(s) = scopes.iter().find(|s| {
            !client
                .delegations
                .contains(&(org.to_string(), (**s).to_string()))
        }) {
            return Err(refuse(
                "forbidden",
                "MP-251",
                format!("{org} has not delegated {s} to the supplier"),
            ));
        }
        supplier = Some(client.org.clone());
        consumer = org.to_string();
    }
    let details = match claims.get("authorization_details") {
        Some(details) => Some(authorization_details(
            inner, &client, details, &consumer, now,
        )?),
        None => None,
    };
    if let Some(resource) = claims.get("resource") {
        let ok = resource.is_string()
            || resource
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(refuse(
                "invalid_request",
                "MP-000",
                "resource must be a string or a list of strings",
            ));
        }
    }

    let expires_in = inner.expires_in.load(Ordering::SeqCst) as i64;
    let actor =
        |org: &str| json!({ "authority": "iso6523-actorid-upis", "ID": format!("0192:{org}") });
    let mut token = json!({
        "iss": inner.issuer,
        "client_id": client.client_id,
        "client_amr": if header.x5c.is_some() { "virksomhetssertifikat" } else { "private_key_jwt" },
        "token_type": "Bearer",
        "scope": scope,
        "consumer": actor(&consumer),
        "iat": now,
        "exp": now + expires_in,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(supplier) = supplier {
        token["supplier"] = actor(&supplier);
        token["delegation_source"] = json!("https://www.altinn.no/");
    }
    if let Some(resource) = claims.get("resource") {
        token["aud"] = resource.clone();
    }
    if let Some(details) = details {
        token["authorization_details"] = details;
    }
    let mut jwt_header = jsonwebtoken::Header::new(Algorithm::RS256);
    jwt_header.kid = Some(SIGNING_KID.into());
    let access_token = inner
        .signing
        .encoding_key()
        .ok_or(())
        .and_then(|key| jsonwebtoken::encode(&jwt_header, &token, key).map_err(|_| ()))
        .map_err(|_| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            code: "MP-000",
            description: "signing failed".into(),
        })?;
    Ok(
        json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in, "scope": scope }),
    )
}

/// RFC 9396 `authorization_details` as Maskinporten checks them for Altinn: one system user per
/// grant, known for this client's system, with the `externalRef` it was created with; consents
/// with an id and a person. Returns the details as the token carries them.
fn authorization_details(
    inner: &Inner,
    client: &super::MockClient,
    details: &Value,
    consumer: &str,
    now: i64,
) -> Result<Value, Refusal> {
    let malformed = |why: &str| {
        refuse(
            "invalid_request",
            "MP-301",
            format!("authorization_details: {why}"),
        )
    };
    let items = details
        .as_array()
        .ok_or_else(|| malformed("must be a list"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut system_users = 0;
    for item in items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("every entry needs a string type"))?;
        let mut item = item.clone();
        match kind {
            "urn:altinn:systemuser" => {
                system_users += 1;
                if system_users > 1 {
                    return Err(malformed("only one system user per grant"));
                }
                let party = &item["systemuser_org"];
                if party["authority"] != "iso6523-actorid-upis" {
                    return Err(malformed(
                        "systemuser_org.authority must be iso6523-actorid-upis",
                    ));
                }
                let org = party["ID"]
                    .as_str()
                    .and_then(|id| id.strip_prefix("0192:"))
                    .filter(|org| org.len() == 9 && org.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        malformed("systemuser_org.ID must be 0192:<organisation number>")
                    })?
                    .to_string();
                let Some(registered) = client.system_users.get(&org) else {
                    return Err(refuse(
                        "invalid_request",
                        "MP-302",
                        format!("no system user for {org} is connected to the client's system"),
                    ));
                };
                let sent = item.get("externalRef").and_then(Value::as_str);
                if sent != registered.as_deref() {
                    return Err(refuse(
                        "invalid_request",
                        "MP-303",
                        match registered {
                            Some(_) => format!("the system user for {org} has an externalRef: the grant must name it"),
                            None => format!("the system user for {org} has no externalRef"),
                        },
                    ));
                }
                // Stable per client and organisation, as a real system user's id is.
                let digest = aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    format!("{}/{org}", client.client_id).as_bytes(),
                );
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest.as_ref()[..16]);
                let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
                item["systemuser_id"] = json!([id.to_string()]);
            }
            "urn:altinn:consent" => {
                let id_ok = item
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok());
                let from_ok = item.get("from").and_then(Value::as_str).is_some_and(|f| {
                    f.starts_with("urn:altinn:person:identifier-no:")
                        || f.starts_with("urn:altinn:organization:identifier-no:")
                });
                if !id_ok || !from_ok {
                    return Err(malformed("a consent needs id (a UUID) and from (urn:altinn:person:identifier-no:...)"));
                }
                // RFC 9396 section 5's error for details the server will not grant; Digdir
                // documents no MP code for a consent.
                item = inner
                    .consents
                    .check(&item, consumer, now)
                    .map_err(|why| refuse("invalid_authorization_details", "", why.0))?;
            }
            _ => {}
        }
        out.push(item);
    }
    Ok(Value::Array(out))
}
