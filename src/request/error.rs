//! Every answer portvakt makes itself: one error type and its status, in one place; its
//! problem+json body is written in `problem.rs`.

use crate::consent::ConsentError;
use crate::request::party::PartyError;
use crate::support::fault::{cut_by_portvakt, BodyError, Fault};
use crate::token::slot::TokenError;
use crate::token::FetchError;
use crate::upstream::{SendError, Target};
use http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request path")]
    NoRoute { path: String, prefixes: Vec<String> },
    #[error("the caller's address {peer} is not allowed{}", route_note(*.on_route))]
    CallerNotAllowed {
        peer: std::net::IpAddr,
        on_route: bool,
    },
    #[error("{}", if *.missing { "the request carries no API key" } else { "the API key is not valid for this route" })]
    ApiKey {
        missing: bool,
        header: http::HeaderName,
    },
    #[error("CONNECT is not served: portvakt is not a forward proxy")]
    Connect,
    #[error("absolute-form request targets are not served: portvakt is not a forward proxy")]
    AbsoluteForm,
    #[error("the request target is not an origin-form path and query (RFC 9112 3.2)")]
    InvalidTarget,
    #[error("an HTTP/1.1 request needs exactly one Host header, this one has {0}")]
    InvalidHost(usize),
    #[error("the transfer coding {0:?} is not supported: only chunked is")]
    UnsupportedTransferCoding(String),
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the caller sent no body data for {} s", .0.as_secs())]
    RequestBodyTimeout(Duration),
    #[error("the caller sent its body slower than {0} bytes a second")]
    RequestBodyTooSlow(u64),
    #[error("the caller's body was not whole within {} s", .0.as_secs())]
    RequestBodyDeadline(Duration),
    #[error("portvakt is serving its maximum of {0} requests at once")]
    Overloaded(usize),
    #[error("this caller's address has its share of {0} requests under way at once")]
    AddressOverloaded(usize),
    #[error("the path would leave the route's prefix once decoded")]
    PathEscapes,
    #[error("{0}")]
    Party(#[from] PartyError),
    #[error("{0}")]
    Consent(#[from] ConsentError),
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnreachable {
        upstream: String,
        reason: String,
        fault: Fault,
    },
    #[error("upstream {upstream} sent no response within {} s", after.as_secs())]
    UpstreamTimeout { upstream: String, after: Duration },
    #[error("upstream {upstream} failed: {reason}")]
    UpstreamFailed {
        upstream: String,
        reason: String,
        fault: Fault,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::CallerNotAllowed { .. } => StatusCode::FORBIDDEN,
            ProxyError::ApiKey { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::AbsoluteForm | ProxyError::InvalidTarget | ProxyError::InvalidHost(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBodyTimeout(_)
            | ProxyError::RequestBodyTooSlow(_)
            | ProxyError::RequestBodyDeadline(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::AddressOverloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::PathEscapes | ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Party(PartyError::NotAllowed { .. }) => StatusCode::FORBIDDEN,
            ProxyError::Party(_) => StatusCode::BAD_REQUEST,
            ProxyError::Consent(ConsentError::NotTaken { .. }) => StatusCode::FORBIDDEN,
            ProxyError::Consent(_) => StatusCode::BAD_REQUEST,
            ProxyError::Token(TokenError::WaitTimeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Token(TokenError::Failed { error, .. }) => match error {
                FetchError::Unavailable(_) | FetchError::Throttled { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                FetchError::Rejected { .. }
                | FetchError::InvalidAnswer(_)
                | FetchError::Exchange { .. } => StatusCode::BAD_GATEWAY,
                FetchError::ConsentRefused { .. } => StatusCode::FORBIDDEN,
                FetchError::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
                FetchError::Hsm(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type's slug: `urn:portvakt:problem:<slug>`.
    pub fn slug(&self) -> &'static str {
        self.kind().0
    }

    pub(super) fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ProxyError::NoRoute { .. } => ("no-route", "No route for this path"),
            ProxyError::CallerNotAllowed { .. } => ("caller-not-allowed", "Caller not allowed"),
            ProxyError::ApiKey { missing: true, .. } => ("api-key-missing", "API key missing"),
            ProxyError::ApiKey { missing: false, .. } => ("api-key-invalid", "API key not valid"),
            ProxyError::Connect => ("connect-refused", "CONNECT not served"),
            ProxyError::AbsoluteForm => ("absolute-form-refused", "Not a forward proxy"),
            ProxyError::InvalidTarget => ("target-invalid", "Request target not valid"),
            ProxyError::InvalidHost(_) => ("host-invalid", "Host header missing or repeated"),
            ProxyError::UnsupportedTransferCoding(_) => (
                "transfer-coding-unsupported",
                "Transfer coding not supported",
            ),
            ProxyError::BodyTooLarge { .. } => ("body-too-large", "Request body too large"),
            ProxyError::RequestBodyTimeout(_) => ("request-body-timeout", "Request body stalled"),
            ProxyError::RequestBodyTooSlow(_) => ("request-body-too-slow", "Request body too slow"),
            ProxyError::RequestBodyDeadline(_) => {
                ("request-body-deadline", "Request body took too long")
            }
            ProxyError::AddressOverloaded(_) => (
                "caller-overloaded",
                "Too many requests at once from this address",
            ),
            ProxyError::Overloaded(_) => ("overloaded", "Too many requests at once"),
            ProxyError::PathEscapes => ("path-escapes-route", "Path not allowed"),
            ProxyError::Party(PartyError::NotAllowed { .. }) => (
                "party-not-allowed",
                "Organisation not allowed on this route",
            ),
            ProxyError::Party(PartyError::Missing { .. }) => {
                ("party-missing", "No organisation named for this route")
            }
            ProxyError::Party(PartyError::Conflict { .. }) => {
                ("party-conflict", "More than one organisation named")
            }
            ProxyError::Consent(ConsentError::Missing { .. }) => {
                ("consent-missing", "No consent named for this route")
            }
            ProxyError::Consent(ConsentError::Invalid { .. }) => {
                ("consent-invalid", "Consent header not valid")
            }
            ProxyError::Consent(ConsentError::NotTaken { .. }) => {
                ("consent-not-allowed", "This route takes no consent")
            }
            ProxyError::RequestBody(_) => ("request-body-unreadable", "Request body unreadable"),
            ProxyError::Token(TokenError::WaitTimeout(_)) => {
                ("token-unavailable", "Maskinporten token unavailable")
            }
            ProxyError::Token(TokenError::Failed { error, .. }) => match error {
                FetchError::Unavailable(_) | FetchError::Throttled { .. } => {
                    ("token-unavailable", "Maskinporten token unavailable")
                }
                FetchError::Rejected { .. } => {
                    ("token-rejected", "Maskinporten rejected the grant")
                }
                FetchError::ConsentRefused { .. } => {
                    ("consent-refused", "Maskinporten refused the consent")
                }
                FetchError::InvalidAnswer(_) => (
                    "token-invalid-answer",
                    "Maskinporten's answer was not a token",
                ),
                FetchError::Signing(_) => ("grant-signing-failed", "The grant could not be signed"),
                FetchError::Hsm(_) => (
                    "hsm-unavailable",
                    "The HSM holding the client's key could not sign the grant",
                ),
                FetchError::Exchange { .. } => {
                    ("altinn-exchange-failed", "Altinn's token exchange failed")
                }
            },
            ProxyError::UpstreamUnreachable { .. } => {
                ("upstream-unreachable", "Upstream unreachable")
            }
            ProxyError::UpstreamTimeout { .. } => ("upstream-timeout", "Upstream timed out"),
            ProxyError::UpstreamFailed { .. } => ("upstream-failed", "Upstream failed"),
            ProxyError::Internal(_) => ("internal", "Internal error"),
        }
    }

    /// What went wrong reading the caller's body: portvakt's own limits, or the caller.
    pub fn request_body(e: &(dyn std::error::Error + 'static)) -> ProxyError {
        match cut_by_portvakt(e) {
            Some(BodyError::TooLarge(limit)) => ProxyError::BodyTooLarge { limit },
            Some(BodyError::Idle(after)) => ProxyError::RequestBodyTimeout(after),
            Some(BodyError::TooSlow(rate)) => ProxyError::RequestBodyTooSlow(rate),
            Some(BodyError::Deadline(after)) => ProxyError::RequestBodyDeadline(after),
            None => ProxyError::RequestBody(crate::support::cause::chain(e)),
        }
    }

    /// The caller's body failing on its way upstream, if that is what `e` says: cut by portvakt,
    /// or reported by hyper as a body error of its user (the caller stopped sending).
    pub fn in_request_body(e: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
        let callers = crate::support::cause::causes(e).any(|err| {
            err.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_user)
        });
        (callers || cut_by_portvakt(e).is_some()).then(|| ProxyError::request_body(e))
    }

    /// An upstream call that got no answer: timed out, never connected, or failed on the way.
    /// The caller's body failing on the way (too large, stalled, caller gone) is not the
    /// upstream's fault, and is answered as what it is.
    pub fn from_upstream(e: SendError, upstream: &Target) -> ProxyError {
        let upstream = upstream.to_string();
        if let SendError::Timeout(after) = e {
            return ProxyError::UpstreamTimeout { upstream, after };
        }
        let connecting = e.is_connect();
        let e: &(dyn std::error::Error + 'static) = &e;
        if let Some(error) = ProxyError::in_request_body(e) {
            return error;
        }
        let (reason, fault) = (crate::support::cause::chain(e), Fault::of(e, connecting));
        if connecting {
            ProxyError::UpstreamUnreachable {
                upstream,
                reason,
                fault,
            }
        } else {
            ProxyError::UpstreamFailed {
                upstream,
                reason,
                fault,
            }
        }
    }

    /// Whether the caller's connection is closed after this answer: its framing was refused, or
    /// its body was cut and the rest of it cannot be read in good time.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::UnsupportedTransferCoding(_)
                | ProxyError::RequestBodyTimeout(_)
                | ProxyError::RequestBodyTooSlow(_)
                | ProxyError::RequestBodyDeadline(_)
        )
    }

    /// Why portvakt cut the caller's body, for `portvakt_request_bodies_cut_total`.
    pub fn body_cut(&self) -> Option<&'static str> {
        match self {
            ProxyError::RequestBodyTimeout(_) => Some("idle"),
            ProxyError::RequestBodyTooSlow(_) => Some("too_slow"),
            ProxyError::RequestBodyDeadline(_) => Some("deadline"),
            _ => None,
        }
    }

    /// The upstream's part in the failure, for `portvakt_upstream_errors_total`.
    pub fn upstream_fault(&self) -> Option<Fault> {
        match self {
            ProxyError::UpstreamTimeout { .. } => Some(Fault::Timeout),
            ProxyError::UpstreamUnreachable { fault, .. }
            | ProxyError::UpstreamFailed { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

fn route_note(on_route: bool) -> &'static str {
    if on_route {
        " on this route"
    } else {
        ""
    }
}
