//! How many Kafka connections the broker holds, in all and per client
//! address (Kafka's `max.connections` and `max.connections.per.ip`).
//!
//! Shared by every shard; consulted once per accepted connection, so a
//! mutex is cheap here. A connection over a limit is closed at once: a
//! client that opens thousands cannot take every slot (or, through their
//! frame reservations, the memory budget) from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    Address(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Total(n) => write!(
                f,
                "the broker holds its limit of {n} connections (--max-connections)"
            ),
            Self::Address(n) => write!(
                f,
                "this address holds its limit of {n} connections (--max-connections-per-ip)"
            ),
        }
    }
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            open: Mutex::default(),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent even if a holder panicked.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open();
        if open.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let n = open.by_address.entry(address).or_default();
        if *n >= self.max_per_address {
            return Err(Refused::Address(self.max_per_address));
        }
        *n += 1;
        open.total += 1;
        Ok(Admitted {
            limits: self.clone(),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::Address(2));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(c).unwrap_err(), Refused::Total(3));
        drop(a1);
        let _c1 = limits.admit(c).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::Total(3));
        assert!(limits.open().by_address.len() == 3);
    }
}
