//! The ring buffer of events a Hubble server keeps: one writer (the agent's
//! flow reader) pushes in batches, any number of readers copy out entries
//! by sequence number. A reader that falls more than the capacity behind
//! learns how many entries it lost and continues at the oldest one.
//!
//! Entries are cheap to clone (the agent's flow records share their
//! endpoint data), so readers copy them out under the lock in chunks and
//! do the expensive work (building protobuf flows, filtering) outside it.

use std::sync::Mutex;

use tokio::sync::watch;

/// A ring's capacity: a power of two minus one (Cilium's
/// `hubble-event-buffer-capacity` rule), between 1 and 2^24 − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity(usize);

/// Why a number is not a [`Capacity`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid flow buffer capacity {0}: it must be a power of two minus one between 1 and 16777215 (e.g. 4095, 65535)"
)]
pub struct CapacityError(usize);

impl Capacity {
    /// The largest capacity.
    pub const MAX: usize = (1 << 24) - 1;

    /// Cilium's default (`hubble-event-buffer-capacity: 4095`).
    pub const DEFAULT: Self = Self(4095);

    pub fn new(n: usize) -> Result<Self, CapacityError> {
        if n == 0 || n > Self::MAX || !(n + 1).is_power_of_two() {
            return Err(CapacityError(n));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> usize {
        self.0
    }
}

impl std::str::FromStr for Capacity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: usize = s
            .parse()
            .map_err(|_| format!("invalid flow buffer capacity {s:?}: not a number"))?;
        Self::new(n).map_err(|e| e.to_string())
    }
}

/// A position in the ring: the number of entries written before it.
pub type Seq = u64;

/// What a reader finds at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// `n` entries were copied out.
    Entries(usize),
    /// The position was overwritten: `lost` entries are gone and the
    /// oldest one still held is at `resume`.
    Lost { lost: u64, resume: Seq },
    /// Nothing written at or after the position yet.
    End,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Ring<T> {
    inner: Mutex<Inner<T>>,
    capacity: Capacity,
    /// The next sequence number to be written, for readers that follow.
    written: watch::Sender<Seq>,
}

#[derive(Debug)]
struct Inner<T> {
    /// `capacity + 1` slots; one is never readable (it is the next write).
    slots: Vec<Option<T>>,
    next: Seq,
}

impl<T: Clone> Ring<T> {
    pub fn new(capacity: Capacity) -> Self {
        let slots = (0..=capacity.get()).map(|_| None).collect();
        Self {
            inner: Mutex::new(Inner { slots, next: 0 }),
            capacity,
            written: watch::Sender::new(0),
        }
    }

    /// How many entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity.get()
    }

    /// How many entries it holds now.
    pub fn len(&self) -> usize {
        let next = self.lock().next;
        usize::try_from(next).map_or(self.capacity(), |n| n.min(self.capacity()))
    }

    pub fn is_empty(&self) -> bool {
        self.lock().next == 0
    }

    /// The next sequence number to be written.
    pub fn next_seq(&self) -> Seq {
        self.lock().next
    }

    /// The oldest sequence number still held.
    pub fn oldest_seq(&self) -> Seq {
        self.lock().oldest(self.capacity)
    }

    /// Appends one entry.
    pub fn push(&self, entry: T) {
        self.push_batch(std::iter::once(entry));
    }

    /// Appends entries under one lock and wakes followers once.
    pub fn push_batch(&self, entries: impl IntoIterator<Item = T>) {
        let next = {
            let mut inner = self.lock();
            let mask = inner.slots.len() - 1;
            for entry in entries {
                let slot = usize::try_from(inner.next).unwrap_or(usize::MAX) & mask;
                inner.slots[slot] = Some(entry);
                inner.next += 1;
            }
            inner.next
        };
        self.written.send_replace(next);
    }

    /// Copies up to `max` entries starting at `from` into `out` (appended),
    /// oldest first.
    pub fn read(&self, from: Seq, max: usize, out: &mut Vec<T>) -> Read {
        let inner = self.lock();
        let oldest = inner.oldest(self.capacity);
        if from < oldest {
            return Read::Lost {
                lost: oldest - from,
                resume: oldest,
            };
        }
        if from >= inner.next {
            return Read::End;
        }
        let n = usize::try_from(inner.next - from).map_or(max, |n| n.min(max));
        let mask = inner.slots.len() - 1;
        out.extend((0..n).filter_map(|i| {
            let slot = usize::try_from(from + i as u64).unwrap_or(usize::MAX) & mask;
            inner.slots[slot].clone()
        }));
        Read::Entries(n)
    }

    /// Copies up to `max` entries ending just before `before` into `out`
    /// (appended, oldest first), never older than the oldest held; returns
    /// the sequence number of the first one copied.
    pub fn read_back(&self, before: Seq, max: usize, out: &mut Vec<T>) -> Seq {
        let inner = self.lock();
        let before = before.min(inner.next);
        let start = before
            .saturating_sub(max as u64)
            .max(inner.oldest(self.capacity));
        let mask = inner.slots.len() - 1;
        out.extend((start..before).filter_map(|seq| {
            let slot = usize::try_from(seq).unwrap_or(usize::MAX) & mask;
            inner.slots[slot].clone()
        }));
        start
    }

    /// Waits until an entry at or after `seq` is written. Returns at once if
    /// one already is.
    pub async fn wait_for(&self, seq: Seq) {
        let mut rx = self.written.subscribe();
        // The sender lives as long as the ring, which outlives this borrow.
        let _ = rx.wait_for(|next| *next > seq).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panicking writer leaves whole entries behind; keep serving them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Inner<T> {
    fn oldest(&self, capacity: Capacity) -> Seq {
        self.next.saturating_sub(capacity.get() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_power_of_two_minus_one() {
        assert!(Capacity::new(4095).is_ok());
        assert!(Capacity::new(1).is_ok());
        assert_eq!(Capacity::new(4096), Err(CapacityError(4096)));
        assert!(Capacity::new(0).is_err());
        assert!(Capacity::new(1 << 25).is_err());
        assert!(
            "4096"
                .parse::<Capacity>()
                .unwrap_err()
                .contains("power of two")
        );
    }

    #[test]
    fn readers_see_entries_in_order_and_learn_what_they_lost() {
        let ring = Ring::new(Capacity::new(7).unwrap());
        assert_eq!(ring.read(0, 10, &mut Vec::new()), Read::End);
        ring.push_batch(0..5u32);
        let mut out = Vec::new();
        assert_eq!(ring.read(0, 3, &mut out), Read::Entries(3));
        assert_eq!(ring.read(3, 10, &mut out), Read::Entries(2));
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert_eq!(ring.len(), 5);

        ring.push_batch(5..20u32);
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.oldest_seq(), 13);
        assert_eq!(
            ring.read(5, 10, &mut out),
            Read::Lost {
                lost: 8,
                resume: 13
            }
        );
        out.clear();
        assert_eq!(ring.read(13, 100, &mut out), Read::Entries(7));
        assert_eq!(out, (13..20).collect::<Vec<_>>());
    }

    #[test]
    fn reading_backwards_stops_at_the_oldest_entry() {
        let ring = Ring::new(Capacity::new(7).unwrap());
        ring.push_batch(0..10u32);
        let mut out = Vec::new();
        assert_eq!(ring.read_back(10, 2, &mut out), 8);
        assert_eq!(out, vec![8, 9]);
        out.clear();
        assert_eq!(ring.read_back(8, 100, &mut out), 3);
        assert_eq!(out, vec![3, 4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn followers_wake_on_a_write() {
        let ring = std::sync::Arc::new(Ring::new(Capacity::new(3).unwrap()));
        let waiter = tokio::spawn({
            let ring = ring.clone();
            async move { ring.wait_for(0).await }
        });
        ring.push(1u8);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
