//! Giving freed memory back to the system after connections park.
//!
//! glibc's allocator keeps memory freed in the middle of its heaps: after a burst of 10,000
//! callers, each of whose hyper connection held about 20 KB while it was served, the process
//! stays 100 MB larger although the parked connections hold only their sockets
//! (docs/performance.md). `malloc_trim` returns the free pages. It runs at most once a second,
//! and only after connections parked since it last ran, so a steady load never pays for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

static PARKED: AtomicU64 = AtomicU64::new(0);

/// Counts a parked connection, and starts the trimming task the first time.
pub fn parked() {
    PARKED.fetch_add(1, Ordering::Relaxed);
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        tokio::spawn(async {
            let mut seen = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = PARKED.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    // The walk over the heaps takes milliseconds: not on a worker thread.
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
            }
        });
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; glibc locks each arena
    // while it releases that arena's free pages, so it is safe to call while other threads
    // allocate and free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
