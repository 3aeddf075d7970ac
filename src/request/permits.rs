//! The places among the requests served at once (`inbound.max_concurrent_requests`), and each
//! caller address's share of them (`inbound.max_concurrent_per_address`), so that one host, slow or
//! hostile, cannot take every place. A place is held to the answer's last byte. A leaf module.

use crate::support::sync::lock;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    All(usize),
    /// The caller's address holds its whole share.
    Address(usize),
}

pub struct Permits {
    max: usize,
    per_address: usize,
    held: Arc<Mutex<Held>>,
}

/// The places taken, in all and by address, under one lock: a place is only ever tried for,
/// never waited for, so a counter does what a semaphore would, and taking or giving back a place
/// costs one lock and one hash of the address.
#[derive(Default)]
struct Held {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One request's place; given back when dropped.
pub struct Permit {
    address: IpAddr,
    held: Arc<Mutex<Held>>,
}

impl Permits {
    pub fn new(max: usize, per_address: usize) -> Self {
        Permits {
            max,
            per_address: per_address.clamp(1, max.max(1)),
            held: Arc::default(),
        }
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        lock(&self.held).total
    }

    /// A place for a request from `address`, if there is one within its share.
    pub fn take(&self, address: IpAddr) -> Result<Permit, Full> {
        // IPv4 callers on a dual-stack socket arrive as ::ffff:a.b.c.d: one host, one share.
        let address = address.to_canonical();
        let mut held = lock(&self.held);
        // Every place taken says more than a share taken: it is checked first.
        if held.total >= self.max {
            return Err(Full::All(self.max));
        }
        // A share is full only with at least one place held, so a refusal leaves no empty entry.
        let mine = held.by_address.entry(address).or_insert(0);
        if *mine >= self.per_address {
            return Err(Full::Address(self.per_address));
        }
        *mine += 1;
        held.total += 1;
        Ok(Permit {
            address,
            held: Arc::clone(&self.held),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.total = held.total.saturating_sub(1);
        if let Entry::Occupied(mut mine) = held.by_address.entry(self.address) {
            *mine.get_mut() -= 1;
            if *mine.get() == 0 {
                mine.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_takes_its_share_and_no_more() {
        let permits = Permits::new(4, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let first = permits.take(a).unwrap();
        let _second = permits.take(mapped).unwrap();
        assert_eq!(permits.take(a).err(), Some(Full::Address(2)));
        let _b1 = permits.take(b).unwrap();
        let _b2 = permits.take(b).unwrap();
        assert_eq!(permits.in_flight(), 4);
        drop(first);
        assert_eq!(permits.in_flight(), 3);
        let _again = permits.take(a).unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(permits.take(c).err(), Some(Full::All(4)));
        assert!(!lock(&permits.held).by_address.contains_key(&c));
        drop(_again);
        assert_eq!(permits.in_flight(), 3);
        drop((_second, _b1, _b2));
        assert_eq!(permits.in_flight(), 0);
        assert!(
            lock(&permits.held).by_address.is_empty(),
            "no address left behind"
        );
    }
}
