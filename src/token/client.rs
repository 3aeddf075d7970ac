//! Talks to Maskinporten's token endpoint: posts a fresh grant, reads the token or the error.

use super::breaker::{Breaker, Outcome};
use super::fetch_error::{clean, hint, mp_code, FetchError, Seen};
use super::grant::{self, GrantSpec};
use crate::config::Egress;
use crate::keys::SigningKey;
use crate::support::secret::Secret;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::time::Duration;

/// A token as Maskinporten issued it.
#[derive(Debug)]
pub struct Issued {
    pub access_token: Secret<String>,
    pub expires_in: u64,
    /// The scopes granted, when Maskinporten says.
    pub scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_uri: Option<String>,
}

/// One Maskinporten environment's token endpoint, shared by all clients, behind one circuit
/// breaker.
pub struct TokenEndpoint {
    http: reqwest::Client,
    url: String,
    audience: String,
    breaker: Breaker,
    clock_skew: Option<Gauge>,
}

impl TokenEndpoint {
    pub fn new(http: reqwest::Client, url: String, audience: String) -> Self {
        TokenEndpoint {
            http,
            url,
            audience,
            breaker: Breaker::new(None),
            clock_skew: None,
        }
    }

    /// Exports the clock skew seen in Maskinporten's answers, and whether the breaker is open.
    pub fn with_metrics(mut self, clock_skew: Gauge, circuit_open: Gauge) -> Self {
        self.clock_skew = Some(clock_skew);
        self.breaker = Breaker::new(Some(circuit_open));
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Signs a grant right now and exchanges it for a token, unless the circuit breaker holds
    /// requests back.
    pub async fn request(
        &self,
        client_id: &str,
        key: &SigningKey,
        spec: &GrantSpec,
    ) -> Result<Issued, FetchError> {
        if let Err(wait) = self.breaker.admit() {
            return Err(FetchError::Throttled {
                reason: "held back after repeated failures of the token endpoint".into(),
                retry_after: wait,
            });
        }
        let result = self.exchange(client_id, key, spec).await;
        self.breaker.record(match &result {
            Err(e) if e.is_transient() => Outcome::Failed(e.retry_after()),
            _ => Outcome::Answered,
        });
        result
    }

    async fn exchange(
        &self,
        client_id: &str,
        key: &SigningKey,
        spec: &GrantSpec,
    ) -> Result<Issued, FetchError> {
        let assertion = grant::sign(&self.audience, client_id, key, spec, grant::unix_now())
            .await
            .map_err(|e| match e {
                crate::keys::SignError::Software(e) => FetchError::Signing(e),
                crate::keys::SignError::Hsm(e) => FetchError::Hsm(e),
            })?;
        let response = self
            .http
            .post(&self.url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(describe_transport(&e)))?;
        let status = response.status();
        let skew = super::clock::skew(
            response.headers().get(http::header::DATE),
            grant::unix_now() as i64,
        );
        if let Some(skew) = skew {
            self.observe_skew(skew);
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| super::clock::retry_after(v, grant::unix_now() as i64));
        let body = response.bytes().await.map_err(|e| {
            FetchError::Unavailable(format!(
                "reading the answer failed: {}",
                describe_transport(&e)
            ))
        })?;
        let (error, description, code) = match read_answer(status.as_u16(), retry_after, &body) {
            Ok(issued) => return Ok(issued),
            Err(Refusal::Failed(e)) => return Err(e),
            Err(Refusal::Rejected {
                error,
                description,
                code,
            }) => (error, description, code),
        };
        let seen = Seen {
            supplier_org: key.certificate().and_then(|c| c.org_number.as_deref()),
            clock_skew: skew,
            key_created: crate::keys::client_key::created(key),
        };
        let hint = hint(code.as_deref(), &error, spec, &seen);
        Err(FetchError::Rejected {
            error,
            description,
            code,
            hint,
        })
    }
}

/// Why an answer from the token endpoint is not a token.
#[derive(Debug)]
pub enum Refusal {
    /// Unavailable, throttled, or not a token answer.
    Failed(FetchError),
    /// Maskinporten rejected the grant: its documented fields, cleaned (short, printable).
    Rejected {
        error: String,
        description: Option<String>,
        code: Option<String>,
    },
}

/// The token endpoint's answer, read: a token, or why not. Only the parsed, documented fields
/// are kept: the raw body never reaches logs or callers.
pub fn read_answer(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Issued, Refusal> {
    let invalid = |m: String| Refusal::Failed(FetchError::InvalidAnswer(m));
    if (200..300).contains(&status) {
        let answer: TokenAnswer = serde_json::from_slice(body)
            .map_err(|_| invalid(format!("HTTP {status} without access_token and expires_in")))?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(invalid("token_type is not Bearer".into()));
        }
        let expires_in = answer
            .expires_in
            .filter(|e| *e > 0)
            .ok_or_else(|| invalid("expires_in is missing or zero".into()))?;
        if answer.access_token.is_empty()
            || !answer.access_token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid("access_token is empty or not printable".into()));
        }
        return Ok(Issued {
            access_token: Secret::new(answer.access_token),
            expires_in,
            scope: answer.scope,
        });
    }
    if status >= 500 || status == 429 {
        return Err(Refusal::Failed(match retry_after {
            Some(retry_after) => FetchError::Throttled {
                reason: format!("HTTP {status}"),
                retry_after,
            },
            None => FetchError::Unavailable(format!("HTTP {status}")),
        }));
    }
    let (error, description, code) = match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(e) => {
            let code =
                mp_code(e.error_uri.as_deref()).or_else(|| mp_code(e.error_description.as_deref()));
            (e.error, e.error_description.map(|d| clean(&d)), code)
        }
        Err(_) => (format!("http_{status}"), None, None),
    };
    Err(Refusal::Rejected {
        error: clean(&error),
        description,
        code,
    })
}

impl TokenEndpoint {
    /// Maskinporten refuses grants more than 10 s off: warn well before that.
    fn observe_skew(&self, skew: i64) {
        if let Some(gauge) = &self.clock_skew {
            let before = gauge.set(skew);
            if skew.abs() > 5 && (before - skew).abs() >= 1 {
                tracing::warn!(
                    skew_seconds = skew,
                    "{}: Maskinporten refuses grants more than 10 s off; fix NTP on this machine",
                    super::clock::describe_skew(skew)
                );
            }
        }
    }
}

/// Builds the HTTP client for the token endpoint (and Altinn's exchange) on the shared rustls
/// configuration, through `egress`.
pub fn http_client(
    tls: rustls::ClientConfig,
    timeout: Duration,
    connect_timeout: Duration,
    egress: &Egress,
) -> Result<reqwest::Client, reqwest::Error> {
    let builder = match egress {
        // reqwest reads HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY itself.
        Egress::Environment => reqwest::Client::builder(),
        Egress::Direct => reqwest::Client::builder().no_proxy(),
        Egress::Proxy(server) => {
            let mut proxy = reqwest::Proxy::all(server.url.to_string())?.no_proxy(
                server
                    .no_proxy
                    .as_deref()
                    .and_then(reqwest::NoProxy::from_string),
            );
            if let (Some(user), Some(password)) = (&server.username, &server.password) {
                proxy = proxy.basic_auth(user, password.expose());
            }
            reqwest::Client::builder().proxy(proxy)
        }
    };
    builder
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout.min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portvakt/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else {
        // reqwest's message includes the endpoint URL, which holds no secret; the causes say why.
        crate::support::cause::chain(e)
    }
}
