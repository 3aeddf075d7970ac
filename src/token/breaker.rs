//! The token endpoint's circuit breaker: after repeated failures (unreachable, 5xx, 429) it holds
//! every token request back for a cooling-off period, then lets one probe through; a `Retry-After`
//! from Maskinporten holds everything back at least that long. So an outage costs Maskinporten a
//! trickle of probes, not a retry storm from every slot of every replica.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Failures in a row, across all slots, that open the circuit.
const THRESHOLD: u32 = 5;
/// The first cooling-off period; it doubles with each failed probe, up to [`MAX_COOLDOWN`].
const FIRST_COOLDOWN: Duration = Duration::from_secs(5);
const MAX_COOLDOWN: Duration = Duration::from_secs(120);

#[derive(Default)]
struct State {
    failures: u32,
    /// Held back until then.
    open_until: Option<Instant>,
    /// A probe is under way: others wait for its outcome.
    probing: bool,
    /// Times it opened in a row, for the doubling cooldown.
    opened: u32,
}

/// What one request to the endpoint came to, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (a token, or a rejection of the grant).
    Answered,
    /// Unreachable, timed out, 5xx or 429; with the `Retry-After` it gave.
    Failed(Option<Duration>),
}

pub struct Breaker {
    state: Mutex<State>,
    open_gauge: Option<Gauge>,
}

impl Breaker {
    pub fn new(open_gauge: Option<Gauge>) -> Self {
        Breaker {
            state: Mutex::new(State::default()),
            open_gauge,
        }
    }

    /// `Ok` when a request may go out now; else how long until one may.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut st = crate::support::sync::lock(&self.state);
        let now = Instant::now();
        match st.open_until {
            Some(until) if now < until => Err(until - now),
            Some(_) if st.probing => Err(Duration::from_secs(1)),
            Some(_) => {
                st.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn record(&self, outcome: Outcome) {
        let mut st = crate::support::sync::lock(&self.state);
        let now = Instant::now();
        match outcome {
            Outcome::Answered => {
                if st.open_until.is_some() {
                    tracing::info!("token endpoint answers again: token requests resume");
                }
                *st = State::default();
            }
            Outcome::Failed(retry_after) => {
                st.failures += 1;
                let was_probe = std::mem::take(&mut st.probing);
                if was_probe || st.failures >= THRESHOLD {
                    let cooldown = FIRST_COOLDOWN
                        .saturating_mul(1 << st.opened.min(6))
                        .min(MAX_COOLDOWN);
                    st.opened += 1;
                    st.open_until = Some(now + cooldown.max(retry_after.unwrap_or_default()));
                    tracing::warn!(
                        failures = st.failures,
                        hold_seconds = cooldown.max(retry_after.unwrap_or_default()).as_secs(),
                        "token endpoint keeps failing: holding token requests back"
                    );
                } else if let Some(after) = retry_after {
                    // Maskinporten asked for a pause: every slot honours it, not only the one asking.
                    let until = now + after;
                    st.open_until = Some(st.open_until.map_or(until, |u| u.max(until)));
                }
            }
        }
        if let Some(g) = &self.open_gauge {
            g.set(i64::from(st.open_until.is_some()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_and_probes_once() {
        let b = Breaker::new(None);
        for _ in 0..THRESHOLD - 1 {
            assert!(b.admit().is_ok());
            b.record(Outcome::Failed(None));
        }
        assert!(b.admit().is_ok());
        b.record(Outcome::Failed(None));
        assert_eq!(b.admit(), Err(FIRST_COOLDOWN));
        tokio::time::advance(FIRST_COOLDOWN).await;
        assert!(b.admit().is_ok(), "one probe after the cooldown");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(Outcome::Failed(None));
        assert_eq!(
            b.admit(),
            Err(FIRST_COOLDOWN * 2),
            "a failed probe doubles the wait"
        );
        tokio::time::advance(FIRST_COOLDOWN * 2).await;
        assert!(b.admit().is_ok());
        b.record(Outcome::Answered);
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_everyone_back() {
        let b = Breaker::new(None);
        b.record(Outcome::Failed(Some(Duration::from_secs(30))));
        assert_eq!(b.admit(), Err(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.admit().is_ok());
    }
}
