//! Desired-versus-actual diffing of map contents (sans-IO).

use std::collections::BTreeMap;

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileStats {
    /// Keys that were missing and were added.
    pub inserted: usize,
    /// Keys whose value differed and was replaced.
    pub updated: usize,
    /// Keys that were present but not desired and were removed.
    pub deleted: usize,
}

/// The minimal set of writes that turns `current` into `desired`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilePlan<K, V> {
    /// Inserts and updates, in DESCENDING key order (see [`plan`]).
    pub upserts: Vec<(K, V)>,
    /// Keys to delete, applied after the upserts.
    pub deletes: Vec<K>,
    /// Counts of the above.
    pub stats: ReconcileStats,
}

/// Diffs `current` against `desired`.
///
/// Upserts come in descending key order and before deletes: for the
/// services map (whose keys order the master slot 0 before slots 1..n of
/// the same frontend) this writes new backend slots before the master entry
/// that makes them reachable, and shrinks the master count before its
/// surplus slots disappear, so the datapath never selects a missing slot.
pub fn plan<K, V>(current: &BTreeMap<K, V>, desired: &BTreeMap<K, V>) -> ReconcilePlan<K, V>
where
    K: Ord + Clone,
    V: PartialEq + Clone,
{
    let mut stats = ReconcileStats::default();
    let mut upserts = Vec::new();
    for (key, value) in desired.iter().rev() {
        match current.get(key) {
            None => {
                stats.inserted += 1;
                upserts.push((key.clone(), value.clone()));
            }
            Some(existing) if existing != value => {
                stats.updated += 1;
                upserts.push((key.clone(), value.clone()));
            }
            Some(_) => {}
        }
    }
    let deletes: Vec<K> = current
        .keys()
        .filter(|key| !desired.contains_key(key))
        .cloned()
        .collect();
    stats.deleted = deletes.len();
    ReconcilePlan {
        upserts,
        deletes,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(u32, u32)]) -> BTreeMap<u32, u32> {
        entries.iter().copied().collect()
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let m = map(&[(1, 1), (2, 2)]);
        let p = plan(&m, &m);
        assert!(p.upserts.is_empty() && p.deletes.is_empty());
        assert_eq!(p.stats, ReconcileStats::default());
    }

    #[test]
    fn inserts_updates_and_deletes() {
        let current = map(&[(1, 1), (2, 2), (3, 3)]);
        let desired = map(&[(2, 20), (3, 3), (4, 4), (5, 5)]);
        let p = plan(&current, &desired);
        assert_eq!(p.upserts, vec![(5, 5), (4, 4), (2, 20)]);
        assert_eq!(p.deletes, vec![1]);
        assert_eq!(
            p.stats,
            ReconcileStats {
                inserted: 2,
                updated: 1,
                deleted: 1
            }
        );
    }

    #[test]
    fn empty_desired_deletes_everything() {
        let p = plan(&map(&[(1, 1), (2, 2)]), &BTreeMap::new());
        assert_eq!(p.deletes, vec![1, 2]);
        assert_eq!(p.stats.deleted, 2);
    }
}
