//! Room for list pages, shared by the watch stores of a process.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many bytes of list pages (their keys and values; decoded, a page
/// takes more) the watch stores sharing it hold at once, beyond each
/// list's first page (at most [`crate::WatchStoreConfig::page_size`] keys).
///
/// Without it, every store that lists reads its next page while it
/// delivers the current one: an agent listing eight large remotes at once
/// holds sixteen pages of 8 MiB, decoded, for a consumer that takes one
/// page at a time. The memory is given back afterwards, but the heap it
/// grew is left fragmented by the long-lived entries allocated meanwhile.
/// With a budget, a store reads ahead only while the budget has room, and
/// otherwise delivers its page first and then waits for room for the next
/// one (holding none: stores never wait on each other's pages).
#[derive(Debug, Clone)]
pub struct ListBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl ListBudget {
    /// 32 MiB: four pages of 8 MiB, enough to keep etcd and the consumer
    /// busy at once.
    pub const DEFAULT_BYTES: usize = 32 << 20;

    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Room for a page of `bytes` (a page larger than the whole budget
    /// takes all of it), if the budget has it now.
    pub(crate) fn try_take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.kib
            .clone()
            .try_acquire_many_owned(self.kib_of(bytes))
            .ok()
    }

    /// Room for a page of `bytes`, once the budget has it.
    pub(crate) async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        self.kib
            .clone()
            .acquire_many_owned(self.kib_of(bytes))
            .await
            .expect("the budget's semaphore is never closed")
    }

    fn kib_of(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib)
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.kib.available_permits() * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_take_room_until_given_back() {
        let budget = ListBudget::new(10 << 10);
        let a = budget.try_take(6 << 10).expect("room for the first");
        assert!(budget.try_take(6 << 10).is_none(), "no room for a second");
        let small = budget.try_take(1).expect("1 byte takes 1 KiB");
        assert_eq!(budget.available(), 3 << 10);
        drop(a);
        drop(small);
        assert_eq!(budget.available(), 10 << 10);
        // Larger than the budget: all of it, not a wait for ever.
        let all = budget.take(1 << 30).await;
        assert_eq!(budget.available(), 0);
        drop(all);
        assert_eq!(budget.available(), 10 << 10);
    }

    #[tokio::test]
    async fn a_waiter_gets_room_when_a_page_is_given_back() {
        let budget = ListBudget::new(8 << 10);
        let held = budget.try_take(8 << 10).unwrap();
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(4 << 10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter got room")
            .unwrap();
        assert_eq!(budget.available(), 4 << 10);
        drop(got);
    }
}
