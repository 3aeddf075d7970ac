//! The few connects that may turn out HTTP/2 made at once per upstream: more than one, so that
//! one stuck handshake does not hold every caller; few, so that a burst makes a few connections
//! and shares them. A connect that fails is handed at once to every request that waited for a
//! place meanwhile, instead of each trying its own, one after another.

use super::error::SendError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Connects made at once through one gate.
const PLACES: usize = 2;

pub(super) struct Gate {
    places: Semaphore,
    /// Connects that failed through this gate, and the last one's error.
    failed: AtomicUsize,
    last_failure: Mutex<Option<Arc<str>>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            places: Semaphore::new(PLACES),
            failed: AtomicUsize::new(0),
            last_failure: Mutex::new(None),
        }
    }
}

/// A place to connect in, and whether a connect failed while it was waited for.
pub(super) struct Place<'a> {
    gate: &'a Gate,
    failed_before: usize,
    _permit: SemaphorePermit<'a>,
}

impl Gate {
    /// Waits for a place.
    pub(super) async fn enter(&self) -> Result<Place<'_>, SendError> {
        let failed_before = self.failed.load(Ordering::Acquire);
        let permit = self
            .places
            .acquire()
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok(Place {
            gate: self,
            failed_before,
            _permit: permit,
        })
    }
}

impl Place<'_> {
    /// The error of a connect that failed while this place was waited for: the upstream is not
    /// answering now.
    pub(super) fn failed_meanwhile(&self) -> Result<(), SendError> {
        if self.gate.failed.load(Ordering::Acquire) == self.failed_before {
            return Ok(());
        }
        let failure = crate::support::sync::lock(&self.gate.last_failure).clone();
        let why = failure.map_or_else(|| "connecting failed".to_string(), |f| f.to_string());
        Err(SendError::Connect(why.into()))
    }

    /// Notes how the connect made in this place went, for those waiting.
    pub(super) fn outcome<T>(self, made: Result<T, SendError>) -> Result<T, SendError> {
        if let Err(e) = &made {
            let why: Arc<str> = crate::support::cause::chain(e).into();
            *crate::support::sync::lock(&self.gate.last_failure) = Some(why);
            self.gate.failed.fetch_add(1, Ordering::AcqRel);
        }
        made
    }
}
