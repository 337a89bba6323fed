//! Room for fetch answers: what a shard's fetches have read and not yet
//! written to their clients, within a quarter of the memory budget.
//!
//! A fetch reserves its room before it reads anything and holds it until
//! its answer is written. One client address holds at most half of a
//! shard's room, so clients that ask and never read (their answers wait out
//! `--frame-read-timeout-ms` before their connections are closed) slow
//! only themselves: everyone else still finds the other half free. (A
//! quarter was measured to halve the consume throughput of one client
//! pipelining eight 4 MiB fetches; see BENCHMARKS.md.)

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::sync::Semaphore;

use super::shard::Reservation;

/// The least room an answer waits for when less is free.
pub const ANSWER_FLOOR: u64 = 1 << 20;

/// Sharing is swept of idle addresses when it has this many (and then at
/// twice the number left).
const SWEEP_AT: usize = 1024;

/// Per-address shares of a room: each client address may hold at most
/// `per_address` of it (an answer room's, a shard's request frames').
#[derive(Debug)]
pub struct Shares {
    per_address: u64,
    shares: RefCell<HashMap<Rc<str>, Rc<Semaphore>>>,
    sweep_at: Cell<usize>,
}

impl Shares {
    pub fn new(per_address: u64) -> Self {
        Self {
            per_address,
            shares: RefCell::default(),
            sweep_at: Cell::new(SWEEP_AT),
        }
    }

    /// The share of `host`.
    pub fn share(&self, host: &Rc<str>) -> Rc<Semaphore> {
        let mut shares = self.shares.borrow_mut();
        if let Some(s) = shares.get(host) {
            return s.clone();
        }
        if shares.len() >= self.sweep_at.get() {
            // An address none of whose reservations is held has its whole share.
            shares.retain(|_, s| s.available() < self.per_address);
            self.sweep_at.set((shares.len() * 2).max(SWEEP_AT));
        }
        let s = Rc::new(Semaphore::new(self.per_address));
        shares.insert(host.clone(), s.clone());
        s
    }

    /// Waits for `units` (at most an address's share) of `host`'s share
    /// alone: a reservation of the share, to be held with one of a room.
    pub async fn hold(&self, host: &Rc<str>, units: u64) -> Reservation {
        let share = self.share(host);
        let units = units.clamp(1, self.per_address);
        let pending = Pending {
            share: &share,
            room: &share,
            share_units: 0,
        };
        // Never closed, so acquire cannot fail.
        let _ignored = share.acquire(units).await;
        std::mem::forget(pending);
        Reservation::of(share.clone(), None, units)
    }

    /// Waits for `units` (at most an address's share) of `host`'s share,
    /// then of `room`. The share first: an address at its limit waits
    /// without holding any of the room others need.
    pub async fn reserve(&self, room: &Rc<Semaphore>, host: &Rc<str>, units: u64) -> Reservation {
        let share = self.share(host);
        let units = units.clamp(1, self.per_address);
        let mut pending = Pending {
            share: &share,
            room,
            share_units: 0,
        };
        // Neither semaphore is ever closed, so acquire cannot fail.
        let _ignored = share.acquire(units).await;
        pending.share_units = units;
        let _ignored = room.acquire(units).await;
        std::mem::forget(pending);
        Reservation::of(room.clone(), Some(share.clone()), units)
    }
}

#[derive(Debug)]
pub struct AnswerRoom {
    room: Rc<Semaphore>,
    shares: Shares,
}

impl AnswerRoom {
    /// `bytes` of room, of which one address holds at most half (and at
    /// least [`ANSWER_FLOOR`]).
    pub fn new(bytes: u64) -> Self {
        let per_address = (bytes / 2).max(ANSWER_FLOOR).min(bytes);
        Self {
            room: Rc::new(Semaphore::new(bytes)),
            shares: Shares::new(per_address),
        }
    }

    /// Room for an answer of up to `ask` bytes for a client at `host`: as
    /// much of `ask` as is free now, in the address's share and in all;
    /// when less than [`ANSWER_FLOOR`] is, it waits for that much.
    pub async fn reserve(&self, host: &Rc<str>, ask: u64) -> Reservation {
        let share = self.shares.share(host);
        let ask = ask.clamp(1, self.shares.per_address);
        let free = share.available().min(self.room.available());
        let units = ask.min(free.max(ask.min(ANSWER_FLOOR)));
        self.shares.reserve(&self.room, host, units).await
    }

    /// Room for up to `ask` bytes if any is free now, without waiting (for
    /// a fetch that may not wait: see `api::fetch`).
    pub fn try_reserve(&self, host: &Rc<str>, ask: u64) -> Option<Reservation> {
        let share = self.shares.share(host);
        let ask = ask.clamp(1, self.shares.per_address);
        let units = ask.min(share.available().min(self.room.available()));
        if units == 0 || !share.try_acquire(units).unwrap_or(false) {
            return None;
        }
        if !self.room.try_acquire(units).unwrap_or(false) {
            share.signal(units);
            return None;
        }
        Some(Reservation::of(self.room.clone(), Some(share), units))
    }

    /// Grows an answer's room to `units` (at most an address's share) when
    /// that much more is free now: an answer's first batch is sent whole
    /// even when it is larger than the room it had. It never waits, since
    /// the answer already holds what it read (two answers each waiting for
    /// the other's room would never be written); an answer that finds no
    /// more room goes past it by that one batch.
    pub fn grow(&self, reservation: &mut Reservation, units: u64) {
        let units = units.min(self.shares.per_address);
        let Some(extra) = units.checked_sub(reservation.units()).filter(|&n| n > 0) else {
            return;
        };
        let share = reservation.share().cloned();
        if share
            .as_ref()
            .is_some_and(|s| !s.try_acquire(extra).unwrap_or(false))
        {
            return;
        }
        if self.room.try_acquire(extra).unwrap_or(false) {
            reservation.add(extra);
        } else if let Some(share) = share {
            share.signal(extra);
        }
    }

    /// Room free now, in all.
    #[cfg(test)]
    fn free(&self) -> u64 {
        self.room.available()
    }
}

/// A reservation being made: if its fetch is dropped while it waits, the
/// share it already took goes back, and the waiters behind it are woken
/// (glommio takes a woken waiter off the queue before it runs, so one
/// dropped then would leave the rest asleep).
struct Pending<'a> {
    share: &'a Semaphore,
    room: &'a Semaphore,
    share_units: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.share.signal(self.share_units);
        self.room.signal(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<Fut: std::future::Future<Output = ()> + 'static>(
        f: impl FnOnce() -> Fut + Send + 'static,
    ) {
        kafscale_shard::block_on(f).unwrap();
    }

    #[test]
    fn one_address_holds_at_most_half_and_others_still_find_room() {
        run(|| async {
            let room = Rc::new(AnswerRoom::new(16 << 20));
            let greedy: Rc<str> = "10.0.0.1".into();
            let other: Rc<str> = "10.0.0.2".into();
            let first = room.reserve(&greedy, 64 << 20).await;
            assert_eq!(first.units(), 8 << 20, "half at most");
            // The greedy address's next answer waits for its own share...
            let waiting = {
                let room = room.clone();
                let greedy = greedy.clone();
                glommio::spawn_local(async move { room.reserve(&greedy, 1 << 20).await })
            };
            glommio::yield_if_needed().await;
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            assert_eq!(room.free(), 8 << 20, "the waiting answer holds nothing");
            // ...while another address gets what it asks at once.
            let theirs = room.reserve(&other, 2 << 20).await;
            assert_eq!(theirs.units(), 2 << 20);
            drop(first);
            let second = waiting.await;
            assert_eq!(second.units(), 1 << 20);
            drop((second, theirs));
            assert_eq!(room.free(), 16 << 20, "everything given back");
        });
    }

    #[test]
    fn an_answer_takes_what_is_free_and_waits_only_for_the_floor() {
        const MIB: u64 = 1 << 20;
        run(|| async {
            // 8 MiB, half of it (4 MiB) per address.
            let room = AnswerRoom::new(8 * MIB);
            let hosts: Vec<Rc<str>> = (0..4).map(|i| format!("10.0.0.{i}").into()).collect();
            let mut held = vec![room.reserve(&hosts[0], 5 * MIB).await];
            assert_eq!(held[0].units(), 4 * MIB, "an address's share at most");
            held.push(room.reserve(&hosts[1], 7 * MIB / 2).await);
            assert_eq!(room.free(), MIB / 2);
            // Less than the floor is free, so the next waits for 1 MiB.
            let late = room.reserve(&hosts[2], 2 * MIB);
            futures::pin_mut!(late);
            assert!(
                futures_lite::future::poll_once(late.as_mut())
                    .await
                    .is_none()
            );
            drop(held);
            let mut got = late.await;
            assert_eq!(got.units(), MIB);
            room.grow(&mut got, 64 * MIB);
            assert_eq!(got.units(), 4 * MIB, "grown to the address's share at most");
            let mut other = room.reserve(&hosts[1], 2 * MIB).await;
            let _rest = room.reserve(&hosts[3], 2 * MIB).await;
            assert_eq!(room.free(), 0);
            room.grow(&mut other, 4 * MIB);
            assert_eq!(other.units(), 2 * MIB, "no wait when nothing more is free");
            drop((other, _rest));
            drop(got);
            assert_eq!(room.free(), 8 * MIB);
        });
    }

    #[test]
    fn a_reservation_dropped_while_it_waits_gives_back_what_it_took() {
        const MIB: u64 = 1 << 20;
        run(|| async {
            // 4 MiB, 2 MiB per address; two other addresses fill it.
            let room = AnswerRoom::new(4 * MIB);
            let hosts: Vec<Rc<str>> = (0..3).map(|i| format!("10.0.0.{i}").into()).collect();
            let full = (
                room.reserve(&hosts[1], 2 * MIB).await,
                room.reserve(&hosts[2], 2 * MIB).await,
            );
            {
                // Takes its address's share, then waits for the room...
                let waiting = room.reserve(&hosts[0], MIB);
                futures::pin_mut!(waiting);
                assert!(
                    futures_lite::future::poll_once(waiting.as_mut())
                        .await
                        .is_none()
                );
                // ...and its fetch is dropped.
            }
            drop(full);
            let again = room.reserve(&hosts[0], 2 * MIB).await;
            assert_eq!(again.units(), 2 * MIB, "the address's whole share is back");
        });
    }
}
