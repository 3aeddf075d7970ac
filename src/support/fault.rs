//! What went wrong on the way: why portvakt cut a body short ([`BodyError`]), and what kind of
//! failure an upstream call met ([`Fault`], the `kind` label of `portvakt_upstream_errors_total`).
//! A leaf module: the body, the metrics, the upstream client and the error answers all read it.

use crate::support::cause::causes;
use std::fmt;
use std::time::Duration;

/// Why portvakt cut a body short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// No data for this long.
    Idle(Duration),
    /// More than this many bytes.
    TooLarge(u64),
    /// Slower on average than this many bytes a second.
    TooSlow(u64),
    /// Not whole within this long.
    Deadline(Duration),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Idle(d) => write!(f, "no data for {} s", d.as_secs()),
            BodyError::TooLarge(max) => write!(f, "the body is larger than {max} bytes"),
            BodyError::TooSlow(rate) => {
                write!(f, "the body came slower than {rate} bytes a second")
            }
            BodyError::Deadline(d) => write!(f, "the body was not whole within {} s", d.as_secs()),
        }
    }
}

impl std::error::Error for BodyError {}

/// The [`BodyError`] somewhere in an error's chain of causes, if portvakt cut the body.
pub fn cut_by_portvakt(e: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    causes(e).find_map(|err| err.downcast_ref::<BodyError>().copied())
}

/// Why an upstream call failed, as the `kind` of `portvakt_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No connection: refused, unresolvable, unroutable.
    Connect,
    /// No connection, headers or body data within the route's time limits.
    Timeout,
    /// The upstream closed or reset the connection before the exchange was done.
    Reset,
    /// The TLS handshake failed: certificate, name or protocol.
    Tls,
    /// Anything else: a malformed answer, an HTTP-level error.
    Protocol,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Connect => "connect",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Tls => "tls",
            Fault::Protocol => "protocol",
        }
    }

    /// Reads the kind off an error's chain of causes; `connecting` when it happened before a
    /// connection was made.
    pub fn of(e: &(dyn std::error::Error + 'static), connecting: bool) -> Fault {
        use std::io::ErrorKind;
        let mut fallback = if connecting {
            Fault::Connect
        } else {
            Fault::Protocol
        };
        for cause in causes(e) {
            if cause.downcast_ref::<rustls::Error>().is_some() {
                return Fault::Tls;
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                // rustls reports handshake failures as an io::Error wrapping its own (hyper-util
                // wraps that once more), and io::Error's source() skips the wrapped error.
                let mut inner = io.get_ref();
                while let Some(err) = inner {
                    if err.is::<rustls::Error>() {
                        return Fault::Tls;
                    }
                    inner = err
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::get_ref);
                }
                match io.kind() {
                    ErrorKind::TimedOut => return Fault::Timeout,
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
                        if !connecting =>
                    {
                        return Fault::Reset
                    }
                    _ => {}
                }
            }
            if cause.downcast_ref::<BodyError>().is_some() {
                return Fault::Timeout;
            }
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                if !connecting && (h.is_incomplete_message() || h.is_canceled()) {
                    fallback = Fault::Reset;
                }
            }
        }
        fallback
    }
}
