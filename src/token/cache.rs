//! The token cache: one slot per [`TokenKey`] (`slot.rs`), so routes that need the same token
//! share one. An Altinn token is a slot of its own, filled by exchanging its Maskinporten slot's
//! token, with the same rules and its own lifetime. A reload's new cache takes over the slots
//! (and their tokens) that are asked for again.

use super::altinn::AltinnExchange;
use super::slot::{Origin, TokenSlot};
use super::{ClientIdentity, TokenKey, TokenSource};
use crate::observe::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// All slots, so routes that need the same token share one.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    metrics: Arc<Metrics>,
    wait_timeout: Duration,
    slots: Mutex<HashMap<TokenKey, Arc<TokenSlot>>>,
    altinn_slots: Mutex<HashMap<(TokenKey, String), Arc<TokenSlot>>>,
    /// The previous configuration's slots, while a reload builds: reused when asked for again by
    /// the same client identity.
    inherited: HashMap<TokenKey, Arc<TokenSlot>>,
    inherited_altinn: HashMap<(TokenKey, String), Arc<TokenSlot>>,
}

impl TokenCache {
    /// `wait_timeout` bounds how long a request waits for a fetch under way.
    pub fn new(
        source: Arc<dyn TokenSource>,
        metrics: Arc<Metrics>,
        wait_timeout: Duration,
    ) -> Self {
        TokenCache {
            source,
            metrics,
            wait_timeout,
            slots: Mutex::new(HashMap::new()),
            altinn_slots: Mutex::new(HashMap::new()),
            inherited: HashMap::new(),
            inherited_altinn: HashMap::new(),
        }
    }

    /// Offers `previous`'s slots (with their cached tokens) to the slots this cache hands out.
    pub fn inherit(&mut self, previous: &TokenCache) {
        self.inherited = crate::support::sync::lock(&previous.slots).clone();
        self.inherited_altinn = crate::support::sync::lock(&previous.altinn_slots).clone();
    }

    /// Forgets the slots no route asked for again; returns how many were asked for again.
    pub fn settle(&mut self) -> usize {
        let slots = crate::support::sync::lock(&self.slots);
        let altinn = crate::support::sync::lock(&self.altinn_slots);
        let reused = slots
            .iter()
            .filter(|(k, s)| self.inherited.get(*k).is_some_and(|o| Arc::ptr_eq(o, s)))
            .count()
            + altinn
                .iter()
                .filter(|(k, s)| {
                    self.inherited_altinn
                        .get(*k)
                        .is_some_and(|o| Arc::ptr_eq(o, s))
                })
                .count();
        drop((slots, altinn));
        self.inherited.clear();
        self.inherited_altinn.clear();
        reused
    }

    /// The slot for `key`, created on first use.
    pub fn slot(&self, key: TokenKey, client: &Arc<ClientIdentity>) -> Arc<TokenSlot> {
        let mut slots = crate::support::sync::lock(&self.slots);
        Arc::clone(slots.entry(key.clone()).or_insert_with(|| {
            match self
                .inherited
                .get(&key)
                .filter(|s| Arc::ptr_eq(&s.client, client))
            {
                Some(old) => Arc::clone(old),
                None => self.new_slot(key, client, Origin::Maskinporten(Arc::clone(&self.source))),
            }
        }))
    }

    /// The slot for Altinn tokens exchanged from `key`'s Maskinporten tokens at `exchange`.
    pub fn altinn_slot(
        &self,
        key: TokenKey,
        client: &Arc<ClientIdentity>,
        exchange: &Arc<AltinnExchange>,
    ) -> Arc<TokenSlot> {
        let maskinporten = self.slot(key.clone(), client);
        let mut slots = crate::support::sync::lock(&self.altinn_slots);
        let id = (key.clone(), exchange.url().to_string());
        let inherited = self.inherited_altinn.get(&id).filter(|s| match &s.origin {
            Origin::Altinn {
                maskinporten: m, ..
            } => Arc::ptr_eq(m, &maskinporten),
            Origin::Maskinporten(_) => false,
        });
        if let Some(old) = inherited {
            return Arc::clone(slots.entry(id).or_insert_with(|| Arc::clone(old)));
        }
        Arc::clone(slots.entry(id).or_insert_with(|| {
            let origin = Origin::Altinn {
                maskinporten,
                exchange: Arc::clone(exchange),
            };
            self.new_slot(key, client, origin)
        }))
    }

    fn new_slot(
        &self,
        key: TokenKey,
        client: &Arc<ClientIdentity>,
        origin: Origin,
    ) -> Arc<TokenSlot> {
        TokenSlot::new(key, client, origin, &self.metrics, self.wait_timeout)
    }
}
