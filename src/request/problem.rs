//! A [`ProxyError`] as the caller reads it: an `application/problem+json` answer (RFC 9457) with
//! `type`, `title`, `status`, `detail`, the route, and for a refused grant Maskinporten's own
//! words; `Retry-After` where waiting helps; `Connection: close` after a refused framing.

use super::error::ProxyError;
use crate::request::body::{full, Body};
use crate::request::party::PartyError;
use crate::token::slot::TokenError;
use crate::token::FetchError;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Either;
use serde_json::{json, Map, Value};
use std::time::Duration;

impl ProxyError {
    /// How long a caller should wait before trying again, where that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Token(TokenError::Failed {
                error:
                    FetchError::Unavailable(_) | FetchError::Throttled { .. } | FetchError::Hsm(_),
                retry_after,
            }) => Some(*retry_after),
            ProxyError::Token(TokenError::WaitTimeout(_))
            | ProxyError::Overloaded(_)
            | ProxyError::AddressOverloaded(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    fn detail(&self) -> String {
        match self {
            ProxyError::NoRoute { path, prefixes } => {
                format!("no route matches {path}; the configured prefixes are {}", prefixes.join(", "))
            }
            ProxyError::Token(TokenError::Failed { error: FetchError::Rejected { error, description, code, hint, .. } | FetchError::ConsentRefused { error, description, code, hint }, .. }) => {
                let mut d = format!("Maskinporten answered {error}");
                if let Some(code) = code {
                    d.push_str(&format!(" ({code})"));
                }
                if let Some(desc) = description {
                    d.push_str(&format!(": {desc}"));
                }
                d.push_str(&format!(". Hint: {hint}"));
                d
            }
            ProxyError::Token(TokenError::Failed { error: FetchError::Exchange { reason, hint, .. }, .. }) => {
                format!("Altinn's token exchange failed: {reason}. Hint: {hint}")
            }
            ProxyError::PathEscapes => {
                "the path contains `.`/`..` segments, empty segments (`//`), encoded slashes, backslashes, NUL or double-encoded escapes, which could leave the route's prefix; the request was not forwarded".into()
            }
            ProxyError::ApiKey { header, .. } => {
                format!("{self}: send this route's key in the {header} header")
            }
            ProxyError::InvalidTarget => "the request target may hold only a path and a query in RFC 3986 characters: no `#` fragment, no raw spaces, quotes, braces or non-ASCII bytes (percent-encode them); the request was not forwarded".into(),
            ProxyError::UnsupportedTransferCoding(_) => format!("{self}; send the body with Content-Length or plain chunked framing, and name a content coding in Content-Encoding instead; the request was not forwarded"),
            ProxyError::AbsoluteForm => "portvakt routes by path only: send the request to portvakt with a path (GET /nav/...), not a full URL as to a forward proxy".into(),
            other => other.to_string(),
        }
    }

    /// The `application/problem+json` answer (RFC 9457) naming the route.
    pub fn to_response(&self, route: Option<&str>) -> Response<Body> {
        let problem = self.problem(route);
        let mut response =
            full(problem.status, "application/problem+json", problem.body).map(Either::Right);
        if self.ends_connection() {
            // The body's framing cannot be trusted: nothing more is read from this connection.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = problem.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// The answer's parts: its status, `Retry-After` in seconds, and the problem+json body.
    pub fn problem(&self, route: Option<&str>) -> Problem {
        let (slug, title) = self.kind();
        let status = self.status();
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("urn:portvakt:problem:{slug}")));
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(self.detail()));
        if let Some(route) = route {
            body.insert("route".into(), json!(route));
        }
        if let ProxyError::Token(TokenError::Failed {
            error:
                FetchError::Rejected {
                    error,
                    description,
                    code,
                    ..
                }
                | FetchError::ConsentRefused {
                    error,
                    description,
                    code,
                    ..
                },
            ..
        }) = self
        {
            body.insert("maskinporten_error".into(), json!(error));
            if let Some(description) = description {
                body.insert("maskinporten_error_description".into(), json!(description));
            }
            if let Some(code) = code {
                body.insert("maskinporten_code".into(), json!(code));
            }
        }
        if let ProxyError::Token(TokenError::Failed {
            error: FetchError::Exchange { status, .. },
            ..
        }) = self
        {
            body.insert("altinn_status".into(), json!(status));
        }
        if let ProxyError::Party(
            PartyError::NotAllowed { allowed, .. } | PartyError::Missing { allowed, .. },
        ) = self
        {
            body.insert("allowed".into(), json!(allowed));
        }
        Problem {
            status,
            retry_after: self
                .retry_after()
                .map(|after| (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)),
            body: Value::Object(body).to_string(),
        }
    }
}

/// One of portvakt's own answers, before it becomes a response.
pub struct Problem {
    pub status: StatusCode,
    /// Whole seconds, at least 1.
    pub retry_after: Option<u64>,
    pub body: String,
}
