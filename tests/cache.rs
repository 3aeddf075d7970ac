//! The token cache on a paused clock, with a scripted token source instead of sockets: single
//! flight, refresh ahead, the safety margin, backoff and the waiting bound, to the second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portvakt::keys::{ClientKey, SigningKey};
use portvakt::observe::metrics::Metrics;
use portvakt::support::secret::Secret;
use portvakt::token::client::Issued;
use portvakt::token::slot::TokenError;
use portvakt::token::{
    ClientIdentity, FetchError, FetchFuture, GrantSpec, TokenCache, TokenKey, TokenSlot,
    TokenSource,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers fetches from a script (default: a 60 s token), after `delay`, numbering the tokens.
struct Script {
    calls: AtomicUsize,
    answers: Mutex<VecDeque<Result<u64, FetchError>>>,
    delay: Duration,
    /// The kid of the key each fetch signed with.
    kids: Mutex<Vec<String>>,
}

impl TokenSource for Script {
    fn fetch<'a>(
        &'a self,
        _client_id: &'a str,
        key: &'a SigningKey,
        _grant: &'a GrantSpec,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.kids
                .lock()
                .unwrap()
                .push(key.kid().unwrap_or_default().to_string());
            tokio::time::sleep(self.delay).await;
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(60));
            answer.map(|expires_in| Issued {
                access_token: Secret::new(format!("token-{n}")),
                expires_in,
                scope: None,
            })
        })
    }
}

fn unavailable() -> Result<u64, FetchError> {
    Err(FetchError::Unavailable("HTTP 503".into()))
}

fn rejected() -> Result<u64, FetchError> {
    Err(FetchError::Rejected {
        error: "invalid_scope".into(),
        description: None,
        code: Some("MP-200".into()),
        hint: "ask the API owner".into(),
    })
}

fn setup(
    answers: Vec<Result<u64, FetchError>>,
    delay: Duration,
    wait: Duration,
) -> (Arc<Script>, Arc<TokenSlot>) {
    let (script, slot, _) = setup_with_key(answers, delay, wait);
    (script, slot)
}

fn demo_key(kid: &str) -> Arc<SigningKey> {
    Arc::new(SigningKey::from_pem(portvakt::mock::DEMO_CLIENT_KEY_PEM.as_bytes(), kid).unwrap())
}

fn setup_with_key(
    answers: Vec<Result<u64, FetchError>>,
    delay: Duration,
    wait: Duration,
) -> (Arc<Script>, Arc<TokenSlot>, Arc<ClientKey>) {
    let script = Arc::new(Script {
        calls: AtomicUsize::new(0),
        answers: Mutex::new(answers.into()),
        delay,
        kids: Mutex::new(Vec::new()),
    });
    let cache = TokenCache::new(
        Arc::clone(&script) as Arc<dyn TokenSource>,
        Arc::new(Metrics::new()),
        wait,
    );
    let client = Arc::new(ClientIdentity {
        name: Arc::new("c".into()),
        client_id: "id".into(),
        key: Arc::new(ClientKey::new(demo_key("kid-1"))),
    });
    let token_key = TokenKey {
        client: Arc::clone(&client.name),
        grant: GrantSpec::new(&["s".to_string()], None, None, &[]),
    };
    let key = Arc::clone(&client.key);
    (script, cache.slot(token_key, &client), key)
}

async fn bearer(slot: &Arc<TokenSlot>) -> String {
    slot.get()
        .await
        .unwrap()
        .bearer()
        .to_str()
        .unwrap()
        .to_string()
}

/// Lets spawned background work run to completion on the paused clock.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn fifty_waiters_on_a_cold_cache_share_one_fetch() {
    let (script, slot) = setup(vec![], Duration::from_millis(300), Duration::from_secs(10));
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move { bearer(&slot).await })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.await.unwrap(), "Bearer token-1");
    }
    assert_eq!(script.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_while_the_current_token_keeps_serving() {
    let (script, slot) = setup(
        vec![Ok(60), Ok(60)],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    tokio::time::advance(Duration::from_secs(38)).await;
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    assert_eq!(
        script.calls.load(Ordering::SeqCst),
        1,
        "no refresh before 2/3 of the lifetime"
    );
    tokio::time::advance(Duration::from_secs(3)).await; // 41 s: past 40 s
    assert_eq!(
        bearer(&slot).await,
        "Bearer token-1",
        "the current token serves while the refresh runs"
    );
    assert_eq!(slot.status().state, "refreshing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bearer(&slot).await, "Bearer token-2");
    assert_eq!(script.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn while_maskinporten_is_down_the_token_serves_to_its_hard_expiry_then_503() {
    // The refresh keeps failing as unavailable, so token-1 is all there is: past its 10 s safety
    // margin (50 s) it still serves, as nothing fresher can be had, until it expires at 60 s.
    let answers = vec![Ok(60)]
        .into_iter()
        .chain(std::iter::repeat_with(unavailable).take(30))
        .collect();
    let (_script, slot) = setup(answers, Duration::ZERO, Duration::from_secs(10));
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    tokio::time::advance(Duration::from_secs(41)).await;
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    settle().await;
    tokio::time::advance(Duration::from_secs(8)).await; // 49 s
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    tokio::time::advance(Duration::from_millis(1500)).await; // 50.5 s: inside the margin
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    assert_eq!(slot.status().state, "stale");
    tokio::time::advance(Duration::from_secs(10)).await; // 60.5 s: expired
    settle().await;
    match slot.get().await {
        Err(TokenError::Failed {
            error: FetchError::Unavailable(_),
            retry_after,
        }) => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
        }
        other => panic!("expected no token after its expiry, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejected_refresh_keeps_the_safety_margin() {
    // Maskinporten answers but refuses: the margin holds, so the caller learns why at 50 s.
    let answers = vec![Ok(60)]
        .into_iter()
        .chain(std::iter::repeat_with(rejected).take(30))
        .collect();
    let (_script, slot) = setup(answers, Duration::ZERO, Duration::from_secs(10));
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    tokio::time::advance(Duration::from_secs(41)).await;
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    settle().await;
    tokio::time::advance(Duration::from_millis(9500)).await; // 50.5 s
    match slot.get().await {
        Err(TokenError::Failed {
            error: FetchError::Rejected { .. },
            ..
        }) => {}
        other => panic!("expected the rejection inside the margin, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_quickly_inside_one_fetch() {
    let (script, slot) = setup(
        vec![unavailable(), unavailable(), Ok(60)],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert_eq!(bearer(&slot).await, "Bearer token-3");
    assert_eq!(script.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_grant_is_answered_from_memory_until_the_backoff_passes() {
    let (script, slot) = setup(
        vec![rejected(), rejected(), Ok(60)],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    for _ in 0..5 {
        assert!(matches!(
            slot.get().await,
            Err(TokenError::Failed {
                error: FetchError::Rejected { .. },
                ..
            })
        ));
    }
    assert_eq!(
        script.calls.load(Ordering::SeqCst),
        1,
        "rejections are not retried per request"
    );
    assert_eq!(slot.status().state, "failing");
    tokio::time::advance(Duration::from_millis(1001)).await; // first backoff: 0.5 to 1 s
    assert!(slot.get().await.is_err());
    assert_eq!(script.calls.load(Ordering::SeqCst), 2);
    assert!(slot.get().await.is_err(), "inside the second backoff");
    assert_eq!(script.calls.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_millis(2001)).await; // second backoff: 1 to 2 s
    assert_eq!(bearer(&slot).await, "Bearer token-3");
    assert_eq!(slot.status().state, "valid");
}

#[tokio::test(start_paused = true)]
async fn waiters_give_up_after_the_bound_and_later_ones_join_the_same_fetch() {
    let (script, slot) = setup(vec![], Duration::from_secs(3600), Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    assert!(matches!(slot.get().await, Err(TokenError::WaitTimeout(_))));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(matches!(slot.get().await, Err(TokenError::WaitTimeout(_))));
    assert_eq!(script.calls.load(Ordering::SeqCst), 1);
    assert_eq!(slot.status().state, "fetching");
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_is_not_served_a_token_fetched_with_the_old_one() {
    let (script, slot, key) = setup_with_key(
        vec![Ok(600), Ok(600)],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    assert_eq!(bearer(&slot).await, "Bearer token-1");
    key.replace(demo_key("kid-2"));
    // The old token has 10 minutes left, but it came from the old key.
    assert_eq!(bearer(&slot).await, "Bearer token-2");
    assert_eq!(bearer(&slot).await, "Bearer token-2");
    assert_eq!(*script.kids.lock().unwrap(), ["kid-1", "kid-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_is_tried_at_once_after_the_old_one_was_refused() {
    let (script, slot, key) = setup_with_key(
        vec![rejected(), Ok(600)],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert!(matches!(slot.get().await, Err(TokenError::Failed { .. })));
    // Backing off: the same key is not tried again at once.
    assert!(matches!(slot.get().await, Err(TokenError::Failed { .. })));
    assert_eq!(script.calls.load(Ordering::SeqCst), 1);
    key.replace(demo_key("kid-2"));
    assert_eq!(bearer(&slot).await, "Bearer token-2");
    assert_eq!(*script.kids.lock().unwrap(), ["kid-1", "kid-2"]);
}
