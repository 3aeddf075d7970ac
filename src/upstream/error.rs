//! Why a request got no answer from the upstream.

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use std::time::Duration;

/// Why a request got no answer from the upstream.
#[derive(Debug)]
pub enum SendError {
    /// No connection: TCP, the outbound proxy or TLS failed.
    Connect(BoxError),
    /// hyper could not begin HTTP on the new connection.
    Handshake(hyper::Error),
    /// The connection failed while the request was sent or the answer's head read.
    Send(hyper::Error),
    /// No answer's head within the route's time limit.
    Timeout(Duration),
}

impl SendError {
    /// Whether no connection was made (nothing of the request was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Handshake(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Connect(_) => "connecting failed",
            SendError::Handshake(_) => "starting HTTP on the connection failed",
            SendError::Send(_) => "the exchange with the upstream failed",
            SendError::Timeout(_) => "no answer in time",
        })
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(&**e),
            SendError::Handshake(e) | SendError::Send(e) => Some(e),
            SendError::Timeout(_) => None,
        }
    }
}
