//! Altinn's token exchange: a Maskinporten token in, an Altinn token out. Many Altinn APIs (apps,
//! storage, events, notifications) accept only the latter.

use super::client::Issued;
use super::fetch_error::FetchError;
use crate::support::secret::Secret;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use serde_json::{Map, Value};

/// One exchange endpoint (TT02, prod, or a mock), shared by the routes that name it.
#[derive(Debug, Clone)]
pub struct AltinnExchange {
    http: reqwest::Client,
    url: String,
}

impl AltinnExchange {
    pub fn new(http: reqwest::Client, url: String) -> Self {
        AltinnExchange { http, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET` the exchange endpoint with the Maskinporten token as Bearer. The Altinn token lives by
    /// its own `exp`, so `expires_in` is computed from it and not taken from the Maskinporten token.
    pub async fn exchange(&self, maskinporten_bearer: &HeaderValue) -> Result<Issued, FetchError> {
        let failed = |status: Option<u16>, reason: String| FetchError::Exchange {
            status,
            hint: hint(status),
            reason,
        };
        let response = self
            .http
            .get(&self.url)
            .header(AUTHORIZATION, maskinporten_bearer.clone())
            .send()
            .await
            .map_err(|e| failed(None, transport(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            failed(
                None,
                format!("reading the answer failed: {}", transport(&e)),
            )
        })?;
        read_answer(status.as_u16(), &body, super::grant::unix_now())
            .map_err(|reason| failed(Some(status.as_u16()), reason))
    }
}

/// Altinn's answer, read: the token and its lifetime from its own `exp` at `now`, or why not.
/// Altinn's error bodies are not documented; the status says enough and no body is echoed.
pub fn read_answer(status: u16, body: &[u8], now: u64) -> Result<Issued, String> {
    if !(200..300).contains(&status) {
        return Err(format!("Altinn answered HTTP {status}"));
    }
    let token = altinn_token(body)
        .ok_or_else(|| "the answer is not a JWT (bare or as a JSON string)".to_string())?;
    let exp = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(&token)
        .ok()
        .and_then(|claims| claims.get("exp").and_then(Value::as_u64))
        .ok_or_else(|| "the Altinn token has no exp claim".to_string())?;
    if exp <= now {
        return Err(format!(
            "the Altinn token expired {} s ago when it arrived: check this machine's clock",
            now - exp
        ));
    }
    Ok(Issued {
        access_token: Secret::new(token),
        expires_in: exp - now,
        scope: None,
    })
}

/// The JWT in the body: bare, or as a JSON string in quotes (Altinn has answered both ways).
fn altinn_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let token = if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()?
    } else {
        text.to_string()
    };
    let jwt_shaped = token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
    jwt_shaped.then_some(token)
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else {
        crate::support::cause::chain(e)
    }
}

/// What an operator should check when the exchange fails.
fn hint(status: Option<u16>) -> String {
    match status {
        None => "Altinn could not be reached: check the network path (and egress proxy) to platform.altinn.no / platform.tt02.altinn.no".into(),
        Some(401) => "Altinn did not accept the Maskinporten token: TT02 takes tokens from Maskinporten test and prod from prod, and the token needs an Altinn scope (altinn:...)".into(),
        Some(403) => "Altinn refused the organisation: check that the scope is granted to it and, with delegation, that the consumer delegated it in Altinn".into(),
        Some(404) => "no exchange endpoint at this URL: use altinn_exchange: tt02 or prod, or the full URL of .../authentication/api/v1/exchange/maskinporten".into(),
        Some(s) if s >= 500 || s == 429 => "Altinn is unavailable or busy; portvakt retries with backoff".into(),
        Some(200) => "Altinn answered, but not with a token: check that altinn_exchange points at the exchange endpoint".into(),
        Some(_) => "see Altinn's status for the exchange endpoint".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::altinn_token;

    #[test]
    fn reads_bare_and_quoted_tokens() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln";
        assert_eq!(altinn_token(jwt.as_bytes()).as_deref(), Some(jwt));
        assert_eq!(
            altinn_token(format!("\"{jwt}\"\n").as_bytes()).as_deref(),
            Some(jwt)
        );
        for bad in ["", "\"\"", "not a token", "{\"token\":1}", "a.b"] {
            assert_eq!(altinn_token(bad.as_bytes()), None, "{bad}");
        }
    }
}
