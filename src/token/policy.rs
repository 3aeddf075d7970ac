//! When to refresh a token and how long to wait after a failure: pure functions of time.

use std::time::Duration;
use tokio::time::Instant;

/// Refresh starts at this share of the lifetime, while the current token keeps serving.
const REFRESH_NUMERATOR: u32 = 2;
const REFRESH_DENOMINATOR: u32 = 3;
/// A token is never handed out with less than min(10 s, a third of its lifetime) left,
/// so it cannot expire while the request carrying it is on its way.
const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(10);

/// The moments that govern one cached token, all measured from when its request was sent
/// (not when the answer came), so network delay can only make the estimate conservative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub refresh_at: Instant,
    pub serve_until: Instant,
    pub expires_at: Instant,
}

pub fn schedule(requested_at: Instant, lifetime: Duration) -> Schedule {
    let margin = MAX_SAFETY_MARGIN.min(lifetime / 3);
    let expires_at = requested_at + lifetime;
    let serve_until = expires_at - margin;
    let refresh_at =
        (requested_at + lifetime * REFRESH_NUMERATOR / REFRESH_DENOMINATOR).min(serve_until);
    Schedule {
        refresh_at,
        serve_until,
        expires_at,
    }
}

/// Delay before the next fetch after `failures` failed fetches in a row: 1 s doubling to 60 s,
/// with "equal jitter" (half fixed, half random) so many proxies do not retry in step.
/// `random` is in [0, 1).
pub fn backoff(failures: u32, random: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    let full = Duration::from_secs(1u64 << exp).min(Duration::from_secs(60));
    full / 2 + full.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// Delay between the quick attempts inside one fetch when Maskinporten is unreachable or answers 5xx.
pub fn retry_delay(attempt: u32, random: f64) -> Duration {
    let full = Duration::from_millis(200u64 << attempt.min(4));
    full / 2 + full.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_follows_the_lifetime() {
        let t0 = Instant::now();
        let s = |secs| schedule(t0, Duration::from_secs(secs));
        // (lifetime, refresh after, serve until) in seconds
        for (life, refresh, serve) in [
            (599, 399, 589),
            (120, 80, 110),
            (3600, 2400, 3590),
            (3, 2, 2),
            (30, 20, 20),
        ] {
            let got = s(life);
            assert_eq!(
                (got.refresh_at - t0).as_secs(),
                refresh,
                "refresh for {life}"
            );
            assert_eq!((got.serve_until - t0).as_secs(), serve, "serve for {life}");
            assert_eq!(got.expires_at - t0, Duration::from_secs(life));
            assert!(got.refresh_at <= got.serve_until && got.serve_until < got.expires_at);
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(50, 0.0), Duration::from_secs(30));
        assert!(backoff(50, 0.99) <= Duration::from_secs(60));
    }

    #[test]
    fn retry_delay_grows() {
        assert_eq!(retry_delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(200));
        assert!(retry_delay(10, 0.99) < Duration::from_secs(4));
    }
}
