//! Talks to Maskinporten's token endpoint: posts a fresh grant, reads the token or the error.

use super::breaker::{Breaker, Outcome};
use super::grant::{self, GrantSpec};
use crate::config::Egress;
use crate::keys::SigningKey;
use crate::support::secret::Secret;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::time::Duration;

/// Why no token came back. Cloned to every request that waited for the same fetch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Maskinporten refused the grant (4xx): retrying the same grant will not help.
    #[error("Maskinporten rejected the grant: {error}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Rejected {
        error: String,
        description: Option<String>,
        code: Option<String>,
        hint: String,
    },
    /// Maskinporten refused a grant for its consent (unknown, expired, withdrawn, not accepted,
    /// or given to another organisation): the caller's consent, not the route, is at fault.
    #[error("Maskinporten refused the consent: {error}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    ConsentRefused {
        error: String,
        description: Option<String>,
        code: Option<String>,
        hint: String,
    },
    /// Unreachable, timed out, 5xx or 429: worth retrying later.
    #[error("Maskinporten is unavailable: {0}")]
    Unavailable(String),
    /// Unavailable, and it is known when to ask again: Maskinporten's `Retry-After`, or the circuit
    /// breaker holding requests back.
    #[error("Maskinporten is unavailable: {reason}; next attempt in {} s", retry_after.as_secs().max(1))]
    Throttled {
        reason: String,
        retry_after: Duration,
    },
    #[error("Maskinporten's answer is not a token: {0}")]
    InvalidAnswer(String),
    #[error("the grant could not be signed: {0}")]
    Signing(String),
    /// The HSM holding the client's key could not sign (unreachable, session lost and not
    /// re-established): a token still valid keeps serving.
    #[error("the HSM holding the client's key could not sign the grant: {0}")]
    Hsm(String),
    /// Altinn's token exchange failed: not reachable (`status` None), or answered without a token.
    #[error("Altinn's token exchange failed: {reason}")]
    Exchange {
        status: Option<u16>,
        reason: String,
        hint: String,
    },
}

impl FetchError {
    /// The label for the token fetch metric.
    pub fn result_label(&self) -> &'static str {
        match self {
            FetchError::Rejected { .. } => "rejected",
            FetchError::ConsentRefused { .. } => "consent_refused",
            FetchError::Unavailable(_) | FetchError::Throttled { .. } => "unavailable",
            FetchError::InvalidAnswer(_) => "invalid_answer",
            FetchError::Signing(_) => "signing_failed",
            FetchError::Hsm(_) => "hsm_unavailable",
            FetchError::Exchange { .. } => "exchange_failed",
        }
    }

    /// Worth a quick second attempt within the same fetch: the other side was unreachable or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unavailable(_) | FetchError::Throttled { .. } => true,
            FetchError::Exchange { status, .. } => status.is_none_or(|s| s >= 500 || s == 429),
            _ => false,
        }
    }

    /// When it is worth asking again, where the other side said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maskinporten's MP code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            FetchError::Rejected { code, .. } | FetchError::ConsentRefused { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }

    /// The `code` label of the token fetch metric: the MP code, else the OAuth error (both come
    /// from small fixed sets), or Altinn's HTTP status.
    pub fn code_label(&self) -> String {
        match self {
            FetchError::Rejected {
                code: Some(code), ..
            }
            | FetchError::ConsentRefused {
                code: Some(code), ..
            } => code.clone(),
            FetchError::Rejected { error, .. } | FetchError::ConsentRefused { error, .. } => {
                error.clone()
            }
            FetchError::Exchange {
                status: Some(status),
                ..
            } => status.to_string(),
            _ => String::new(),
        }
    }

    /// One line an operator can act on.
    pub fn hint(&self) -> Option<&str> {
        match self {
            FetchError::Rejected { hint, .. }
            | FetchError::ConsentRefused { hint, .. }
            | FetchError::Exchange { hint, .. } => Some(hint),
            _ => None,
        }
    }
}

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

/// The `MP-123` code at the end of `error_uri` (or inside a description).
fn mp_code(text: Option<&str>) -> Option<String> {
    let text = text?;
    let start = text.rfind("MP-")?;
    let digits: String = text[start + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(5)
        .collect();
    // Maskinporten's codes are three digits (MP-100 to MP-199); a run of digits is no code, and
    // the code becomes a metric label, which must stay short.
    (1..=4)
        .contains(&digits.len())
        .then(|| format!("MP-{digits}"))
}

/// The system user's organisation in the grant, if it names one.
fn systemuser_org(spec: &GrantSpec) -> Option<String> {
    let details: serde_json::Value =
        serde_json::from_str(spec.authorization_details.as_deref()?).ok()?;
    details.as_array()?.iter().find_map(|d| {
        let id = d.get("systemuser_org")?.get("ID")?.as_str()?;
        Some(id.strip_prefix("0192:").unwrap_or(id).to_string())
    })
}

/// Keeps an error field short and printable, with no fødselsnummer: it goes into logs and
/// problem+json details.
fn clean(s: &str) -> String {
    let short: String = s.chars().filter(|c| !c.is_control()).take(300).collect();
    crate::consent::mask_person_numbers(&short).into_owned()
}

/// What portvakt knows besides the grant when it explains a rejection.
#[derive(Debug, Default)]
pub struct Seen<'a> {
    /// The client's own organisation, when its virksomhetssertifikat names it.
    pub supplier_org: Option<&'a str>,
    /// Seconds Maskinporten's clock (its `Date` header) is ahead of this machine's.
    pub clock_skew: Option<i64>,
    /// When the key was made, where its kid or certificate tells.
    pub key_created: Option<i64>,
}

/// What an operator should do about a rejection, from Maskinporten's error codes.
pub fn hint(code: Option<&str>, error: &str, spec: &GrantSpec, seen: &Seen) -> String {
    let scope = &spec.scope;
    let supplier = seen.supplier_org.map_or_else(
        || "this client's organisation (the supplier)".to_string(),
        |o| format!("supplier {o}"),
    );
    let clock = match seen.clock_skew {
        Some(s) if s.abs() > 5 => format!(
            "{}: fix NTP on this machine",
            super::clock::describe_skew(s)
        ),
        Some(s) => format!(
            "{} (within 5 s), so check the grant's iat/exp",
            super::clock::describe_skew(s)
        ),
        None => "check this machine's clock (NTP): Maskinporten allows 10 s".to_string(),
    };
    let systemuser = systemuser_org(spec);
    match code {
        Some("MP-100") => "client not found: check client_id, and that maskinporten.environment is the one the client was created in (test and prod are separate worlds)".into(),
        Some("MP-110") => "wrong audience: maskinporten.environment or issuer does not match the token endpoint".into(),
        Some("MP-120") => "the virksomhetssertifikat was not accepted: it must be a valid Buypass or Commfides certificate for this environment (test certificates in test, prod in prod), or the client uses registered keys and needs kid".into(),
        Some("MP-124") => "the signature was not accepted: the kid is not registered on the client, or the key does not match it; upload the public JWK in Samarbeidsportalen (portvakt keygen writes it)".into(),
        Some("MP-121") => {
            let made = seen
                .key_created
                .map(|t| format!(" (this one dates from {})", crate::support::time::date(t)))
                .unwrap_or_default();
            format!("the registered key has expired: keys live at most one year after upload{made}; create a new one with portvakt keygen and register it in Samarbeidsportalen")
        }
        Some("MP-122") => "the virksomhetssertifikat belongs to another organisation than the client: use the certificate of the organisation that owns the client".into(),
        Some("MP-123") => "the grant's x5c or kid is malformed: x5c must be standard base64 DER, leaf first".into(),
        Some("MP-130") => format!("the grant was outside Maskinporten's time window: {clock}"),
        Some("MP-012") => "the grant was reused (same jti): another process may be replaying grants".into(),
        Some("MP-200" | "MP-201") => format!("the client lacks scope {scope}: ask the API owner for access (for ks:fiks, KS must register the organisation first)"),
        Some("MP-250" | "MP-251") => match &spec.consumer_org {
            Some(org) => format!("no delegation in Altinn from consumer {org} to {supplier} for scope {scope}: {org} must delegate it (Altinn > Tilgangsstyring > Delegere), and must have the scope itself"),
            None => format!("the consumer lacks scope {scope} or has not delegated it"),
        },
        Some("MP-303") => match &systemuser {
            Some(org) => format!("the system user for {org} was not accepted with this externalRef: set externalRef on the route (or in systemuser_orgs) exactly as the system user was created, or leave it out if it has none"),
            None => "authorization_details was not accepted: check externalRef".into(),
        },
        Some("MP-302") => match &systemuser {
            Some(org) => format!("{org} has no system user for this client's system: the organisation must create (approve) one in Altinn for the system registered with this client_id"),
            None => "authorization_details names a party Maskinporten does not know".into(),
        },
        Some("MP-301") => "authorization_details is malformed: for a system user it is type urn:altinn:systemuser with systemuser_org {authority: iso6523-actorid-upis, ID: 0192:<orgno>}".into(),
        _ => match error {
            "invalid_scope" => format!("the client lacks scope {scope}: ask the API owner for access"),
            "invalid_client" | "invalid_grant" => format!("check client_id, key and kid against Samarbeidsportalen; {clock}"),
            "forbidden" | "access_denied" => format!("access to scope {scope} was refused: check delegations in Altinn"),
            "invalid_request" => "the grant was malformed: check resource and authorization_details".into(),
            _ => "see Maskinporten's error description".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mp_codes() {
        assert_eq!(
            mp_code(Some(
                "https://docs.digdir.no/maskinporten_feilsoking#MP-121"
            ))
            .as_deref(),
            Some("MP-121")
        );
        assert_eq!(
            mp_code(Some("Invalid scope (MP-200)")).as_deref(),
            Some("MP-200")
        );
        assert_eq!(mp_code(Some("nothing")), None);
        assert_eq!(mp_code(None), None);
        // Found by the fuzzer: a run of digits became an unbounded metric label.
        assert_eq!(mp_code(Some(&format!("(MP-{})", "2".repeat(300)))), None);
    }

    #[test]
    fn hints_name_the_scope() {
        let spec = GrantSpec::new(&["nav:x".to_string()], None, None, &[]);
        let seen = Seen::default();
        assert!(hint(Some("MP-200"), "invalid_scope", &spec, &seen).contains("lacks scope nav:x"));
        assert!(hint(None, "invalid_scope", &spec, &seen).contains("ask the API owner"));
    }

    #[test]
    fn hints_name_the_key_date_the_clock_and_the_parties() {
        let spec = GrantSpec::new(&["nav:x".to_string()], None, Some("910753614"), &[]);
        let seen = Seen {
            supplier_org: Some("991825827"),
            clock_skew: Some(-42),
            key_created: Some(1_761_955_200), // 2025-11-01
        };
        assert!(hint(Some("MP-121"), "invalid_grant", &spec, &seen)
            .contains("(this one dates from 2025-11-01)"));
        assert!(hint(Some("MP-130"), "invalid_grant", &spec, &seen)
            .contains("this machine's clock is 42 s ahead of Maskinporten's: fix NTP"));
        assert!(hint(Some("MP-251"), "forbidden", &spec, &seen).contains(
            "no delegation in Altinn from consumer 910753614 to supplier 991825827 for scope nav:x"
        ));
        let user = serde_json::json!({"type": "urn:altinn:systemuser", "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:889640782"}});
        let spec = GrantSpec::new(&["altinn:x".to_string()], None, None, &[user]);
        assert!(hint(Some("MP-303"), "invalid_request", &spec, &seen)
            .contains("the system user for 889640782 was not accepted with this externalRef"));
    }
}
