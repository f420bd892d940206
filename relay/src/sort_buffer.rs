//! The reorder window that merges the flows of many nodes in time order.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    time::{SystemTime, UNIX_EPOCH},
};

use hubble_api::observer::GetFlowsResponse;

/// A point in time as `GetFlowsResponse.time` holds it: seconds, then
/// nanoseconds, since the Unix epoch. A response without a time sorts as the
/// epoch (Cilium's `GetTime().AsTime()` on nil).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SortKey {
    seconds: i64,
    nanos: i32,
}

impl SortKey {
    pub(crate) fn of(response: &GetFlowsResponse) -> Self {
        response.time.as_ref().map_or(Self::EPOCH, |t| Self {
            seconds: t.seconds,
            nanos: t.nanos,
        })
    }

    const EPOCH: Self = Self {
        seconds: 0,
        nanos: 0,
    };

    pub(crate) fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos() as i32,
            },
            Err(_) => Self::EPOCH,
        }
    }
}

/// A bounded min-heap on `GetFlowsResponse.time` (Cilium's relay
/// `sortFlows`): responses from every node go in, the oldest come out, so
/// the output is in time order as long as no response arrives later than
/// the window allows. The window is the capacity (a full buffer releases its
/// oldest response on every push) and the drain age (the owner calls
/// [`SortBuffer::pop_older_than`] on a tick, releasing what has waited long
/// enough). The order is therefore approximately global: a response that
/// arrives after newer ones already left comes out late, never dropped.
///
/// Responses with the same time leave in arrival order.
#[derive(Debug)]
pub(crate) struct SortBuffer {
    heap: BinaryHeap<Reverse<Entry>>,
    capacity: usize,
    arrivals: u64,
}

#[derive(Debug)]
struct Entry {
    key: SortKey,
    arrival: u64,
    response: GetFlowsResponse,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key, self.arrival).cmp(&(other.key, other.arrival))
    }
}

impl SortBuffer {
    /// A buffer that holds at most `capacity` responses (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            heap: BinaryHeap::with_capacity(capacity + 1),
            capacity,
            arrivals: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Adds `response`; when the buffer was full, returns the oldest of the
    /// responses it held and the new one.
    pub(crate) fn push(&mut self, response: GetFlowsResponse) -> Option<GetFlowsResponse> {
        self.arrivals += 1;
        self.heap.push(Reverse(Entry {
            key: SortKey::of(&response),
            arrival: self.arrivals,
            response,
        }));
        if self.heap.len() > self.capacity {
            self.pop()
        } else {
            None
        }
    }

    /// The responses older than `cutoff`, oldest first.
    pub(crate) fn pop_older_than(&mut self, cutoff: SortKey) -> Vec<GetFlowsResponse> {
        let mut out = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(e)| e.key < cutoff) {
            out.extend(self.pop());
        }
        out
    }

    /// Everything, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<GetFlowsResponse> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(r) = self.pop() {
            out.push(r);
        }
        out
    }

    fn pop(&mut self) -> Option<GetFlowsResponse> {
        self.heap.pop().map(|Reverse(e)| e.response)
    }
}

/// The sort buffer's capacity for a request (Cilium's `qlen`): `max_len`, or
/// `number × peers` when that is smaller and not zero, since no more
/// responses than that can arrive (without `follow`).
pub(crate) fn sort_buffer_len(max_len: usize, number: u64, peers: usize) -> usize {
    let wanted = number.saturating_mul(peers as u64);
    if wanted > 0 && wanted < max_len as u64 {
        wanted as usize
    } else {
        max_len.max(1)
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn at(seconds: i64, nanos: i32, node: &str) -> GetFlowsResponse {
        GetFlowsResponse {
            time: Some(Timestamp { seconds, nanos }),
            node_name: node.into(),
            ..Default::default()
        }
    }

    fn names(responses: &[GetFlowsResponse]) -> Vec<&str> {
        responses.iter().map(|r| r.node_name.as_str()).collect()
    }

    #[test]
    fn interleaved_nodes_come_out_in_time_order() {
        let mut buffer = SortBuffer::new(100);
        // Two nodes, each in order, arriving one node after the other.
        for r in [
            at(10, 0, "a1"),
            at(12, 0, "a2"),
            at(14, 0, "a3"),
            at(11, 0, "b1"),
            at(13, 0, "b2"),
            at(13, 0, "b3"),
        ] {
            assert!(buffer.push(r).is_none());
        }
        assert_eq!(names(&buffer.drain()), ["a1", "b1", "a2", "b2", "b3", "a3"]);
    }

    #[test]
    fn nanoseconds_break_ties_then_arrival() {
        let mut buffer = SortBuffer::new(10);
        for r in [
            at(5, 2, "late"),
            at(5, 1, "early"),
            at(5, 1, "early-second"),
        ] {
            buffer.push(r);
        }
        let untimed = GetFlowsResponse {
            node_name: "untimed".into(),
            ..Default::default()
        };
        buffer.push(untimed);
        assert_eq!(
            names(&buffer.drain()),
            ["untimed", "early", "early-second", "late"]
        );
    }

    #[test]
    fn a_full_buffer_releases_its_oldest() {
        let mut buffer = SortBuffer::new(2);
        assert!(buffer.push(at(3, 0, "c")).is_none());
        assert!(buffer.push(at(1, 0, "a")).is_none());
        // The new one is older than everything held: it leaves at once.
        assert_eq!(buffer.push(at(0, 0, "z")).unwrap().node_name, "z");
        assert_eq!(buffer.push(at(2, 0, "b")).unwrap().node_name, "a");
        assert_eq!(buffer.len(), 2);
        assert_eq!(names(&buffer.drain()), ["b", "c"]);
    }

    #[test]
    fn the_drain_tick_releases_what_waited_long_enough() {
        let mut buffer = SortBuffer::new(100);
        for r in [at(1, 0, "a"), at(2, 500, "b"), at(3, 0, "c")] {
            buffer.push(r);
        }
        let cutoff = SortKey {
            seconds: 2,
            nanos: 500,
        };
        assert_eq!(names(&buffer.pop_older_than(cutoff)), ["a"]);
        let cutoff = SortKey {
            seconds: 2,
            nanos: 501,
        };
        assert_eq!(names(&buffer.pop_older_than(cutoff)), ["b"]);
        assert_eq!(buffer.len(), 1);
        let now = SortKey::from_system_time(SystemTime::now());
        assert_eq!(names(&buffer.pop_older_than(now)), ["c"]);
    }

    #[test]
    fn queue_length_is_per_node_number_when_smaller() {
        assert_eq!(sort_buffer_len(100, 0, 4), 100);
        assert_eq!(sort_buffer_len(100, 20, 4), 80);
        assert_eq!(sort_buffer_len(100, 25, 4), 100);
        assert_eq!(sort_buffer_len(100, 30, 4), 100);
        assert_eq!(sort_buffer_len(100, 20, 0), 100);
        assert_eq!(sort_buffer_len(100, u64::MAX, 3), 100);
        assert_eq!(sort_buffer_len(0, 0, 3), 1);
    }
}
