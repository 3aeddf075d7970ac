//! The places among the requests served at once (`inbound.max_concurrent_requests`), and each
//! caller address's share of them (`inbound.max_concurrent_per_address`), so that one host, slow or
//! hostile, cannot take every place. A place is held to the answer's last byte. A leaf module.

use crate::sync::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    All(usize),
    /// The caller's address holds its whole share.
    Address(usize),
}

pub struct Permits {
    places: Arc<Semaphore>,
    max: usize,
    per_address: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One request's place; given back when dropped.
pub struct Permit {
    _place: OwnedSemaphorePermit,
    address: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Permits {
    pub fn new(max: usize, per_address: usize) -> Self {
        Permits {
            places: Arc::new(Semaphore::new(max)),
            max,
            per_address: per_address.clamp(1, max.max(1)),
            held: Arc::default(),
        }
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.max - self.places.available_permits()
    }

    /// A place for a request from `address`, if there is one within its share.
    pub fn take(&self, address: IpAddr) -> Result<Permit, Full> {
        // IPv4 callers on a dual-stack socket arrive as ::ffff:a.b.c.d: one host, one share.
        let address = address.to_canonical();
        // Every place taken says more than a share taken: it is checked first.
        let place = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| Full::All(self.max))?;
        let mut held = lock(&self.held);
        if held.get(&address).is_some_and(|n| *n >= self.per_address) {
            return Err(Full::Address(self.per_address));
        }
        *held.entry(address).or_insert(0) += 1;
        Ok(Permit {
            _place: place,
            address,
            held: Arc::clone(&self.held),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
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
        assert!(!lock(&permits.held).contains_key(&c));
    }
}
