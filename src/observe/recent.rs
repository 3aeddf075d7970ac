//! The last answers portvakt could not serve, for the status page: when, which route, what.
//! Only the error's own message is kept, never the path or query (they may carry personal data).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

const KEPT: usize = 20;

#[derive(Debug, Clone)]
pub struct RecentError {
    pub at: SystemTime,
    pub route: String,
    pub status: u16,
    /// The problem type's slug, as in `urn:portvakt:problem:<slug>`.
    pub problem: &'static str,
    pub message: String,
    pub request_id: String,
}

/// A short ring of [`RecentError`]s; written only on the error path.
#[derive(Default)]
pub struct RecentErrors {
    entries: Mutex<VecDeque<RecentError>>,
}

impl RecentErrors {
    pub fn push(&self, error: RecentError) {
        let mut entries = crate::support::sync::lock(&self.entries);
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(error);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecentError> {
        crate::support::sync::lock(&self.entries)
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}
