//! Digdir's self-service API for one client's keys: `GET` and `POST /clients/{id}/jwks`, with a token
//! of the administration client. Only 5xx answers and transport failures are tried again; a 4xx is
//! explained, since sending it again would get the same answer.

use crate::config::SelfService;
use crate::support::secret::Secret;
use crate::token::{client::TokenEndpoint, grant::GrantSpec};
use serde_json::{json, Value};
use std::time::Duration;

/// Attempts for one call, when Digdir answers 5xx or cannot be reached.
const ATTEMPTS: u32 = 3;

/// A registered key as `GET /jwks` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub kid: String,
    /// Unix seconds, as Digdir reports it.
    pub exp: Option<i64>,
    /// The public JWK as listed (`exp` included).
    pub jwk: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the administration client got no token: {0}")]
    AdminToken(String),
    #[error("Digdir's self-service API refused {what} ({status}): {explanation}")]
    Refused {
        what: &'static str,
        status: u16,
        explanation: String,
    },
    #[error("Digdir's self-service API is unavailable for {what}: {reason}")]
    Unavailable { what: &'static str, reason: String },
}

pub struct Api {
    http: reqwest::Client,
    base_url: String,
    endpoint: std::sync::Arc<TokenEndpoint>,
    admin_client_id: String,
    admin_key: std::sync::Arc<crate::keys::SigningKey>,
    scopes: Vec<String>,
    /// The administration token and when to fetch another: once 3/4 of its life is gone, so a
    /// renewer that lives for months never calls with an expired one.
    token: Option<(Secret<String>, tokio::time::Instant)>,
    /// Pause before another attempt; short in tests.
    pub retry_pause: Duration,
}

impl Api {
    pub fn new(
        selfservice: &SelfService,
        http: reqwest::Client,
        endpoint: std::sync::Arc<TokenEndpoint>,
    ) -> Self {
        Api {
            http,
            base_url: selfservice.base_url.clone(),
            endpoint,
            admin_client_id: selfservice.client_id.clone(),
            admin_key: std::sync::Arc::clone(&selfservice.key),
            scopes: selfservice.scopes.clone(),
            token: None,
            retry_pause: Duration::from_secs(1),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn admin_token(&mut self) -> Result<Secret<String>, ApiError> {
        if let Some((token, renew_at)) = &self.token {
            if tokio::time::Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let spec = GrantSpec::new(&self.scopes, None, None, &[]);
        let issued = self
            .endpoint
            .request(&self.admin_client_id, &self.admin_key, &spec)
            .await
            .map_err(|e| ApiError::AdminToken(e.to_string()))?;
        let life = Duration::from_secs(issued.expires_in.saturating_mul(3) / 4);
        let renew_at = tokio::time::Instant::now() + life;
        self.token = Some((issued.access_token.clone(), renew_at));
        Ok(issued.access_token)
    }

    /// The client's registered keys.
    pub async fn registered(&mut self, client_id: &str) -> Result<Vec<Registered>, ApiError> {
        let body = self.call("reading the keys", client_id, None).await?;
        let keys =
            body.get("keys")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::Unavailable {
                    what: "reading the keys",
                    reason: "the answer has no `keys` list".into(),
                })?;
        Ok(keys
            .iter()
            .map(|k| Registered {
                kid: k["kid"].as_str().unwrap_or_default().to_string(),
                exp: k.get("exp").and_then(Value::as_i64),
                jwk: k.clone(),
            })
            .collect())
    }

    /// Replaces the client's whole set with `keys` (public JWKs, each with `use`, `alg` and `exp`).
    pub async fn replace(&mut self, client_id: &str, keys: &[Value]) -> Result<(), ApiError> {
        let body = json!({ "keys": keys });
        self.call("registering the keys", client_id, Some(body))
            .await
            .map(drop)
    }

    async fn call(
        &mut self,
        what: &'static str,
        client_id: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/clients/{client_id}/jwks", self.base_url);
        let mut last = String::new();
        // A 401 is answered once with a new token (Digdir may have revoked or expired the one
        // held); a second 401 is a refusal.
        let mut fresh_after_401 = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.retry_pause * attempt).await;
            }
            let token = self.admin_token().await?;
            let request = match &body {
                None => self.http.get(&url),
                Some(b) => self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b.to_string()),
            };
            let answer = match request
                .header("authorization", format!("Bearer {}", token.expose()))
                .header("accept", "application/json")
                .send()
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    last = if e.is_timeout() {
                        "timed out".into()
                    } else {
                        format!(
                            "cannot reach {}: {}",
                            self.base_url,
                            crate::support::cause::chain(&e)
                        )
                    };
                    continue;
                }
            };
            let status = answer.status().as_u16();
            let text = answer.bytes().await.unwrap_or_default();
            let json: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            match status {
                200..=299 => return Ok(json),
                401 if !fresh_after_401 => {
                    fresh_after_401 = true;
                    self.token = None;
                    last = format!("{status} {}", digdir_message(&json));
                }
                500..=599 => last = format!("{status} {}", digdir_message(&json)),
                _ => {
                    return Err(ApiError::Refused {
                        what,
                        status,
                        explanation: explain(status, &json),
                    })
                }
            }
        }
        Err(ApiError::Unavailable { what, reason: last })
    }
}

/// `GET /jwks`'s answer: `{"keys": [...]}`, each key with a kid (Digdir's rule: letters, digits,
/// `.`, `_`, `-`), at most a few dozen. Anything else is refused rather than half read, since the
/// set is posted back.
pub fn parse_listing(body: &Value) -> Result<Vec<Registered>, String> {
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the answer has no `keys` list")?;
    if keys.len() > 64 {
        return Err(format!("the answer lists {} keys", keys.len()));
    }
    keys.iter()
        .map(|k| {
            let kid = k
                .get("kid")
                .and_then(Value::as_str)
                .filter(|kid| {
                    !kid.is_empty() && kid.len() <= 256 && crate::keys::in_kid_alphabet(kid)
                })
                .ok_or("a listed key has no readable kid")?;
            Ok(Registered {
                kid: kid.to_string(),
                exp: k.get("exp").and_then(Value::as_i64),
                jwk: k.clone(),
            })
        })
        .collect()
}

/// Digdir's own words: `errors[].errorMessage`, else `error_description`.
fn digdir_message(body: &Value) -> String {
    let messages: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("errorMessage").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let text = if messages.is_empty() {
        body.get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("no explanation")
            .to_string()
    } else {
        messages.join("; ")
    };
    // Digdir's text is shown to an operator: bounded and printable.
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// What a refusal means, for the operator: Digdir's words (bounded, printable) and the likely fix.
pub fn explain(status: u16, body: &Value) -> String {
    let said = digdir_message(body);
    match status {
        401 => format!("{said}: the administration client's token was not accepted"),
        403 => format!("{said}: the administration client lacks the scope or does not belong to the client's organisation; check selfservice.client_id and its scopes (add idporten:dcr.write if Digdir asks for it)"),
        404 => format!("{said}: Digdir has no client with this client_id"),
        409 => format!("{said}: a kid was sent twice or is already taken"),
        _ => said,
    }
}
