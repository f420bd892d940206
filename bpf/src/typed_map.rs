//! A typed handle on one pinned BPF map, with batched writes and
//! desired-state reconciliation.

use std::{
    collections::BTreeMap,
    io,
    marker::PhantomData,
    ops::ControlFlow,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::{
    reconcile::{ReconcileStats, plan},
    record::{Record, as_bytes, from_bytes, pack},
    syscall,
};

/// Elements per batch syscall.
const BATCH: usize = 8192;

/// errno of kernels or map types without batch support.
const ENOTSUPP: i32 = 524;

/// A map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The pinned map could not be opened.
    #[error("cannot open pinned map {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The pinned map was created with other key or value sizes (an older
    /// object layout); it must be removed before this version can use it.
    #[error(
        "pinned map {path} has key/value sizes {found_key}/{found_value}, this datapath needs \
         {key}/{value}"
    )]
    Incompatible {
        path: PathBuf,
        key: usize,
        value: usize,
        found_key: u32,
        found_value: u32,
    },
    /// Reading one entry failed.
    #[error("cannot look up an entry of map {map}")]
    Lookup {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    /// Writing one entry failed.
    #[error("cannot update an entry of map {map}")]
    Update {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    /// Deleting one entry failed.
    #[error("cannot delete an entry of map {map}")]
    Delete {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    /// A batch update stopped early.
    #[error("batch update of map {map} failed after {applied} of {total} entries")]
    BatchUpdate {
        map: &'static str,
        applied: usize,
        total: usize,
        #[source]
        source: io::Error,
    },
    /// A batch delete stopped early.
    #[error("batch delete of map {map} failed after {applied} of {total} keys")]
    BatchDelete {
        map: &'static str,
        applied: usize,
        total: usize,
        #[source]
        source: io::Error,
    },
    /// Listing the map failed.
    #[error("cannot dump map {map}")]
    Dump {
        map: &'static str,
        #[source]
        source: io::Error,
    },
}

impl MapError {
    /// How many entries of a batch the kernel applied before it stopped
    /// (0 for a failure that is not a batch's).
    pub fn applied(&self) -> usize {
        match self {
            Self::BatchUpdate { applied, .. } | Self::BatchDelete { applied, .. } => *applied,
            _ => 0,
        }
    }
}

/// A handle on a pinned map with keys `K` and values `V` (`#[repr(C)]`
/// types mirrored in `c/datapath.h`). Operations take `&self`: the kernel
/// serialises concurrent writers per element.
#[derive(Debug)]
pub struct TypedMap<K, V> {
    fd: OwnedFd,
    name: &'static str,
    /// `max_entries` as the kernel created the map (a reused pinned map keeps
    /// its original size, whatever the configuration now asks for).
    capacity: u32,
    _records: PhantomData<fn() -> (K, V)>,
}

impl<K, V> TypedMap<K, V>
where
    K: Record + Ord,
    V: Record + PartialEq,
{
    /// Opens the map pinned at `dir/name`, checking its key and value sizes.
    pub fn open_pinned(dir: &Path, name: &'static str) -> Result<Self, MapError> {
        let path = dir.join(name);
        let fd = syscall::obj_get(&path).map_err(|source| MapError::Open {
            path: path.clone(),
            source,
        })?;
        let info = syscall::map_info(fd.as_fd()).map_err(|source| MapError::Open {
            path: path.clone(),
            source,
        })?;
        if info.key_size as usize != size_of::<K>() || info.value_size as usize != size_of::<V>() {
            return Err(MapError::Incompatible {
                path,
                key: size_of::<K>(),
                value: size_of::<V>(),
                found_key: info.key_size,
                found_value: info.value_size,
            });
        }
        Ok(Self {
            fd,
            name,
            capacity: info.max_entries,
            _records: PhantomData,
        })
    }

    /// The map's name (also its pin file name).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many entries the map holds at most, as the kernel reports it.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The value stored under `key` (for the LPM ipcache: the longest
    /// matching prefix).
    pub fn get(&self, key: &K) -> Result<Option<V>, MapError> {
        let mut value = vec![0u8; size_of::<V>()];
        let found =
            syscall::lookup(self.fd.as_fd(), as_bytes(key), &mut value).map_err(|source| {
                MapError::Lookup {
                    map: self.name,
                    source,
                }
            })?;
        Ok(found.then(|| from_bytes(&value)))
    }

    /// Inserts or replaces one entry.
    pub fn upsert(&self, key: &K, value: &V) -> Result<(), MapError> {
        syscall::update(self.fd.as_fd(), as_bytes(key), as_bytes(value)).map_err(|source| {
            MapError::Update {
                map: self.name,
                source,
            }
        })
    }

    /// Removes one entry; `false` if it was not there.
    pub fn delete(&self, key: &K) -> Result<bool, MapError> {
        syscall::delete(self.fd.as_fd(), as_bytes(key)).map_err(|source| MapError::Delete {
            map: self.name,
            source,
        })
    }

    /// Inserts or replaces many entries with `BPF_MAP_UPDATE_BATCH`, in the
    /// given order (falls back to single updates where batches are not
    /// supported).
    pub fn batch_upsert(&self, entries: &[(K, V)]) -> Result<(), MapError> {
        for (chunk_no, chunk) in entries.chunks(BATCH).enumerate() {
            let keys = pack(chunk.iter().map(|(k, _)| k));
            let values = pack(chunk.iter().map(|(_, v)| v));
            match syscall::update_batch(self.fd.as_fd(), &keys, &values, chunk.len() as u32) {
                Ok(()) => {}
                Err((0, e)) if unsupported(&e) => {
                    for (key, value) in chunk {
                        self.upsert(key, value)?;
                    }
                }
                Err((applied, source)) => {
                    return Err(MapError::BatchUpdate {
                        map: self.name,
                        applied: chunk_no * BATCH + applied as usize,
                        total: entries.len(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes many keys with `BPF_MAP_DELETE_BATCH`; every key must exist.
    pub fn batch_delete(&self, keys: &[K]) -> Result<(), MapError> {
        for (chunk_no, chunk) in keys.chunks(BATCH).enumerate() {
            let packed = pack(chunk.iter());
            match syscall::delete_batch(self.fd.as_fd(), &packed, chunk.len() as u32) {
                Ok(()) => {}
                Err((0, e)) if unsupported(&e) => {
                    for key in chunk {
                        self.delete(key)?;
                    }
                }
                Err((applied, source)) => {
                    return Err(MapError::BatchDelete {
                        map: self.name,
                        applied: chunk_no * BATCH + applied as usize,
                        total: keys.len(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes the keys that are still there with `BPF_MAP_DELETE_BATCH`:
    /// unlike [`batch_delete`](Self::batch_delete), a key that is gone (an
    /// LRU map evicted it, the datapath replaced it) is skipped. Returns the
    /// indexes of the keys that were not there.
    pub fn batch_delete_present(&self, keys: &[K]) -> Result<Vec<usize>, MapError> {
        let mut missing = Vec::new();
        let mut start = 0;
        while start < keys.len() {
            let chunk = &keys[start..keys.len().min(start + BATCH)];
            let packed = pack(chunk.iter());
            match syscall::delete_batch(self.fd.as_fd(), &packed, chunk.len() as u32) {
                Ok(()) => start += chunk.len(),
                // The kernel stops at the first absent key: skip it.
                Err((applied, e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                    missing.push(start + applied as usize);
                    start += applied as usize + 1;
                }
                Err((0, e)) if unsupported(&e) => {
                    for (i, key) in chunk.iter().enumerate() {
                        if !self.delete(key)? {
                            missing.push(start + i);
                        }
                    }
                    start += chunk.len();
                }
                Err((applied, source)) => {
                    return Err(MapError::BatchDelete {
                        map: self.name,
                        applied: start + applied as usize - missing.len(),
                        total: keys.len(),
                        source,
                    });
                }
            }
        }
        Ok(missing)
    }

    /// Reads the whole map a chunk at a time with `BPF_MAP_LOOKUP_BATCH`,
    /// handing each chunk to `f` before the next is read: one chunk is in
    /// memory at a time, and `f` may delete entries of its chunk (a hash
    /// map's walk resumes at the next bucket, which deletions in earlier
    /// ones do not move). `f` stops the walk with `Break`. Entries that the
    /// datapath adds or removes meanwhile may or may not be seen.
    ///
    /// Needs batch support for the map type (hash maps since Linux 5.6; the
    /// datapath's ring buffer needs 5.8 anyway): there is no fallback.
    pub fn walk(&self, f: impl FnMut(&[(K, V)]) -> ControlFlow<()>) -> Result<(), MapError> {
        self.walk_batched(f).map_err(|source| MapError::Dump {
            map: self.name,
            source,
        })
    }

    /// Every entry of the map (`BPF_MAP_LOOKUP_BATCH`, or key iteration where
    /// batches are not supported).
    pub fn dump(&self) -> Result<BTreeMap<K, V>, MapError> {
        match self.dump_batched() {
            Err(e) if unsupported(&e) => self.dump_iterating(),
            other => other,
        }
        .map_err(|source| MapError::Dump {
            map: self.name,
            source,
        })
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&self) -> Result<usize, MapError> {
        Ok(self.reconcile(&BTreeMap::new())?.deleted)
    }

    /// Makes the map hold exactly `desired`, writing only the difference
    /// (batched): see [`crate::plan`] for the order of writes.
    pub fn reconcile(&self, desired: &BTreeMap<K, V>) -> Result<ReconcileStats, MapError> {
        self.reconcile_subset(desired, |_| true)
    }

    /// Like [`reconcile`](Self::reconcile) but only for the keys for which
    /// `in_scope` holds: entries outside the scope are neither compared nor
    /// deleted (e.g. the policy entries of one endpoint in the shared policy
    /// map). Desired keys must all be in scope.
    pub fn reconcile_subset(
        &self,
        desired: &BTreeMap<K, V>,
        in_scope: impl Fn(&K) -> bool,
    ) -> Result<ReconcileStats, MapError> {
        let mut current = self.dump()?;
        current.retain(|k, _| in_scope(k));
        let plan = plan(&current, desired);
        self.batch_upsert(&plan.upserts)?;
        self.batch_delete(&plan.deletes)?;
        Ok(plan.stats)
    }

    fn dump_batched(&self) -> io::Result<BTreeMap<K, V>> {
        let mut out = BTreeMap::new();
        self.walk_batched(|chunk| {
            out.extend(chunk.iter().copied());
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn walk_batched(&self, mut f: impl FnMut(&[(K, V)]) -> ControlFlow<()>) -> io::Result<()> {
        let chunk = 4096usize;
        let mut entries = Vec::with_capacity(chunk);
        let mut keys = vec![0u8; chunk * size_of::<K>()];
        let mut values = vec![0u8; chunk * size_of::<V>()];
        // The resume token is a bucket index (hash maps) or a key (others).
        let token_len = size_of::<K>().max(8);
        let mut token_in = vec![0u8; token_len];
        let mut token_out = vec![0u8; token_len];
        let mut first = true;
        loop {
            let (n, done) = syscall::lookup_batch(
                self.fd.as_fd(),
                (!first).then_some(&token_in[..]),
                &mut token_out,
                &mut keys,
                &mut values,
                chunk as u32,
            )?;
            entries.clear();
            entries.extend((0..n as usize).map(|i| {
                (
                    from_bytes::<K>(&keys[i * size_of::<K>()..]),
                    from_bytes::<V>(&values[i * size_of::<V>()..]),
                )
            }));
            if f(&entries).is_break() || done {
                return Ok(());
            }
            std::mem::swap(&mut token_in, &mut token_out);
            first = false;
        }
    }

    fn dump_iterating(&self) -> io::Result<BTreeMap<K, V>> {
        let mut out = BTreeMap::new();
        let mut key = vec![0u8; size_of::<K>()];
        let mut next = vec![0u8; size_of::<K>()];
        let mut value = vec![0u8; size_of::<V>()];
        let mut first = true;
        while syscall::next_key(self.fd.as_fd(), (!first).then_some(&key[..]), &mut next)? {
            if syscall::lookup(self.fd.as_fd(), &next, &mut value)? {
                out.insert(from_bytes(&next), from_bytes(&value));
            }
            std::mem::swap(&mut key, &mut next);
            first = false;
        }
        Ok(out)
    }
}

impl<K, V> AsFd for TypedMap<K, V> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}
