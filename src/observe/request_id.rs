//! `x-request-id`: the caller's, when it is a sane token, else one made here. It ties the caller's
//! logs, portvakt's and the upstream's together.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longer ids, or ones with spaces or control bytes, are replaced: they would let a caller forge
/// or bloat log lines.
const MAX_LEN: usize = 128;

/// The request's id, written into `headers` when it was missing or unusable, so it goes upstream.
pub fn of(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&HEADER).filter(|v| usable(v.as_bytes())) {
        return id.clone();
    }
    let id = generate();
    headers.insert(HEADER, id.clone());
    id
}

tokio::task_local! {
    /// The id of the request a task works for, so work it starts (a token fetch) can name it.
    static CURRENT: HeaderValue;
}

/// Runs `work` as the work of request `id`. Not an `async fn`: that would hold `work` twice in
/// its state, once as the argument and once inside the scope.
pub fn scope<F: std::future::Future>(id: HeaderValue, work: F) -> Scoped<F> {
    CURRENT.scope(id, work)
}

/// A future that runs as the work of a request.
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<HeaderValue, F>;

/// The id of the request this task works for, if any.
pub fn current() -> Option<HeaderValue> {
    CURRENT.try_with(HeaderValue::clone).ok()
}

/// The id as text for logs; an id is always visible ASCII, so this never falls back in practice.
pub fn as_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

fn usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 hex digits. Unique is all an id needs to be, so a fast thread-local
/// generator does, with no system call per request.
fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(of(&mut h), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = of(&mut h);
            assert_eq!(id.len(), 32);
            assert_eq!(h[HEADER], id);
        }
        let mut h = HeaderMap::new();
        let (a, b) = (of(&mut h.clone()), of(&mut h));
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
