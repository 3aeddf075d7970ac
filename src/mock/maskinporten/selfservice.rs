//! Digdir's self-service API for a client's keys (`/api/v1/clients/{id}/jwks`), with Digdir's rules:
//! the administration client's token must carry `idporten:dcr.read` to read and `idporten:dcr.modify`
//! (or `.write`) to change, for a client of its own organisation; a POST replaces the whole set, of at
//! most five keys, each with `use`, an RSA `kty`, RS256 or RS512, no private part, and a kid not given
//! twice (409); `exp` defaults to a year, which is also its limit; a newly posted kid is accepted by
//! the token endpoint only after the propagation delay.

use super::{json_answer, now, Answer, Inner, Registered};
use crate::server::CallerBody;
use crate::support::sync::lock;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

const YEAR: i64 = 365 * 86_400;
const MAX_KEYS: usize = 5;

/// One call as it reached the mock, for tests.
#[derive(Debug, Clone)]
pub struct SelfServiceCall {
    pub method: String,
    pub client_id: String,
    pub status: u16,
    /// The posted set, for a POST.
    pub body: Option<Value>,
}

fn problem(status: StatusCode, message: &str) -> Answer {
    json_answer(
        status,
        &json!({
            "status": status.as_u16(),
            "timestamp": crate::token::clock::http_date(crate::support::time::unix_now() as i64),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
            "errors": [{"errorMessage": message, "isFieldError": true, "objectName": "Client", "fieldIdentifier": "jwks"}],
            "error": "invalid_request",
            "error_description": message,
        }),
    )
}

pub(super) async fn handle(inner: &Inner, request: Request<CallerBody>, client_id: &str) -> Answer {
    let method = request.method().clone();
    let (answer, body) = answer(inner, request, client_id).await;
    lock(&inner.selfservice_calls).push(SelfServiceCall {
        method: method.to_string(),
        client_id: client_id.to_string(),
        status: answer.status().as_u16(),
        body,
    });
    answer
}

async fn answer(
    inner: &Inner,
    request: Request<CallerBody>,
    client_id: &str,
) -> (Answer, Option<Value>) {
    {
        let mut failing = lock(&inner.selfservice_failures);
        if let Some((status, left)) = failing.as_mut() {
            let status = *status;
            *left -= 1;
            if *left == 0 {
                *failing = None;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (
                problem(status, "Nedstrøms tjeneste er ikke tilgjengelig"),
                None,
            );
        }
    }
    let needed = if request.method() == Method::GET {
        &["idporten:dcr.read"][..]
    } else {
        &["idporten:dcr.modify", "idporten:dcr.write"][..]
    };
    let org = match admin(inner, &request, needed) {
        Ok(org) => org,
        Err((status, why)) => return (problem(status, &why), None),
    };
    let Some(client) = lock(&inner.clients).get(client_id).cloned() else {
        return (problem(StatusCode::NOT_FOUND, "Fant ikke klient"), None);
    };
    if client.org != org {
        return (
            problem(
                StatusCode::FORBIDDEN,
                "the administration client's organisation does not own this client",
            ),
            None,
        );
    }
    match *request.method() {
        Method::GET => (
            json_answer(StatusCode::OK, &listing(inner, client_id)),
            None,
        ),
        Method::DELETE => {
            if let Some(c) = lock(&inner.clients).get_mut(client_id) {
                c.keys.clear();
                c.registered.clear();
            }
            (
                crate::request::body::full(StatusCode::NO_CONTENT, "application/json", ""),
                None,
            )
        }
        Method::POST => {
            let body = match Limited::new(request.into_body(), 256 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return (problem(StatusCode::BAD_REQUEST, "unreadable body"), None),
            };
            let Ok(set) = serde_json::from_slice::<Value>(&body) else {
                return (problem(StatusCode::BAD_REQUEST, "not JSON"), None);
            };
            (replace(inner, client_id, &set), Some(set))
        }
        _ => (
            problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            None,
        ),
    }
}

/// The organisation of a valid administration token with one of the `needed` scopes.
fn admin(
    inner: &Inner,
    request: &Request<CallerBody>,
    needed: &[&str],
) -> Result<String, (StatusCode, String)> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            "a valid access token is required".to_string(),
        )
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let key = crate::mock::decoding_key(&inner.signing);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    // An expired token is refused the moment it expires, as Digdir's API does.
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|_| unauthorized())?
        .claims;
    let scopes: HashSet<&str> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    if !needed.iter().any(|s| scopes.contains(s)) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("the access token lacks the scope {}", needed.join(" or ")),
        ));
    }
    Ok(claims["consumer"]["ID"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("0192:")
        .to_string())
}

/// The registered set as `GET /jwks` shows it: public keys with their `exp`.
pub(super) fn listing(inner: &Inner, client_id: &str) -> Value {
    let clients = lock(&inner.clients);
    let Some(client) = clients.get(client_id) else {
        return json!({ "keys": [] });
    };
    let mut keys: Vec<Value> = client
        .registered
        .iter()
        .map(|(kid, r)| {
            let mut jwk = r.jwk.clone();
            jwk["kid"] = json!(kid);
            jwk["exp"] = json!(r.exp);
            jwk
        })
        .collect();
    keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
    json!({ "keys": keys, "created": "2026-01-01T00:00:00Z", "last_updated": crate::token::clock::http_date(now(inner)) })
}

/// A POST: checks the whole set by Digdir's rules, then replaces the client's keys with it.
fn replace(inner: &Inner, client_id: &str, set: &Value) -> Answer {
    let bad = |m: &str| problem(StatusCode::BAD_REQUEST, m);
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return bad("the body must be {\"keys\": [...]}");
    };
    if keys.len() > MAX_KEYS {
        return bad("Maks 5 pr request: a client may have at most 5 keys");
    }
    let at = now(inner);
    let mut kids = HashSet::new();
    let mut checked = Vec::new();
    for key in keys {
        let field = |name: &str| key.get(name).and_then(Value::as_str);
        let Some(kid) = field("kid").filter(|k| !k.is_empty() && crate::keys::in_kid_alphabet(k))
        else {
            return bad("kid is required and may hold only letters, digits, . _ and -");
        };
        if field("kty") != Some("RSA") {
            return bad("kty must be RSA");
        }
        if field("use") != Some("sig") {
            return bad("use is required and must be sig");
        }
        if !matches!(field("alg"), Some("RS256" | "RS512")) {
            return bad("alg must be RS256 or RS512");
        }
        if field("n").is_none() || field("e").is_none() {
            return bad("n and e are required");
        }
        if ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|k| key.get(*k).is_some())
        {
            return bad("a private key must not be posted");
        }
        let exp = match key.get("exp") {
            None => at + YEAR,
            Some(v) => match v.as_i64() {
                Some(exp) if exp > at && exp <= at + YEAR => exp,
                Some(exp) if exp <= at => return bad("exp is in the past"),
                _ => return bad("exp may be at most one year ahead"),
            },
        };
        if !kids.insert(kid.to_string()) {
            return problem(StatusCode::CONFLICT, "Conflict. Duplicate keys in request.");
        }
        let public = json!({"kty": "RSA", "use": "sig", "alg": field("alg"), "n": field("n"), "e": field("e")});
        checked.push((kid.to_string(), public, exp));
    }
    let delay = inner.key_propagation.load(Ordering::SeqCst) as i64;
    let mut clients = lock(&inner.clients);
    let Some(client) = clients.get_mut(client_id) else {
        return problem(StatusCode::NOT_FOUND, "Fant ikke klient");
    };
    let mut registered = std::collections::HashMap::new();
    client.keys.clear();
    for (kid, public, exp) in checked {
        let same = client
            .registered
            .get(&kid)
            .filter(|r| r.jwk["n"] == public["n"] && r.jwk["e"] == public["e"]);
        let usable_from = same.map_or(at + delay, |r| r.usable_from);
        client.keys.insert(
            kid.clone(),
            (
                public["n"].as_str().unwrap_or_default().to_string(),
                public["e"].as_str().unwrap_or_default().to_string(),
            ),
        );
        registered.insert(
            kid,
            Registered {
                jwk: public,
                exp,
                usable_from,
            },
        );
    }
    client.registered = registered;
    drop(clients);
    json_answer(StatusCode::CREATED, &listing(inner, client_id))
}
