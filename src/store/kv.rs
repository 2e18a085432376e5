//! The key-value operations the store needs, and an in-memory
//! implementation for tests. The component implements [`Kv`] on
//! `wasi:keyvalue` (store, batch, atomics).

#[cfg(test)]
use std::cell::RefCell;
#[cfg(test)]
use std::collections::BTreeMap;

/// A failed key-value operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One bucket of a key-value store. Each method is one round trip.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError>;
    fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError>;
    /// Adds `delta` to the integer at `key` (0 when absent), atomically,
    /// and returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
}

/// An in-memory [`Kv`] that counts its round trips, for tests, and can be
/// told to fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryKv {
    pub values: RefCell<BTreeMap<String, Vec<u8>>>,
    pub round_trips: RefCell<u64>,
    /// Round trips left before every call fails; `None` never.
    failing_after: RefCell<Option<u64>>,
    /// The next `set_many` writes this many entries, then fails.
    partial_batch: RefCell<Option<usize>>,
    /// What `get_many` reads instead of the current values, while set.
    stale: RefCell<Option<BTreeMap<String, Vec<u8>>>>,
}

#[cfg(test)]
impl MemoryKv {
    /// Lets `trips` more calls through, then fails every call
    /// (`u64::MAX`: never fails again).
    pub fn fail_after(&self, trips: u64) {
        *self.failing_after.borrow_mut() = (trips != u64::MAX).then_some(trips);
    }

    /// Makes the next `set_many` write only its first `keep` entries and
    /// fail.
    pub fn partial_next_batch(&self, keep: usize) {
        *self.partial_batch.borrow_mut() = Some(keep);
    }

    /// Clears every injected fault.
    pub fn heal(&self) {
        *self.failing_after.borrow_mut() = None;
        *self.partial_batch.borrow_mut() = None;
        *self.stale.borrow_mut() = None;
    }

    /// A copy of every value.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.values.borrow().clone()
    }

    /// Makes `get_many` read `snapshot` (an earlier state) until called
    /// with `None`.
    pub fn read_stale(&self, snapshot: Option<BTreeMap<String, Vec<u8>>>) {
        *self.stale.borrow_mut() = snapshot;
    }

    fn trip(&self) -> Result<(), KvError> {
        *self.round_trips.borrow_mut() += 1;
        let mut left = self.failing_after.borrow_mut();
        match left.as_mut() {
            Some(0) => Err(KvError("injected failure".into())),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.trip()?;
        Ok(self.values.borrow().get(key).cloned())
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.trip()?;
        let stale = self.stale.borrow();
        let current = self.values.borrow();
        let values = stale.as_ref().unwrap_or(&current);
        Ok(keys.iter().map(|k| values.get(k).cloned()).collect())
    }

    fn set_many(&self, mut entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.trip()?;
        let partial = self.partial_batch.borrow_mut().take();
        if let Some(keep) = partial {
            entries.truncate(keep);
        }
        self.values.borrow_mut().extend(entries);
        match partial {
            Some(_) => Err(KvError("injected partial batch".into())),
            None => Ok(()),
        }
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        self.trip()?;
        let mut values = self.values.borrow_mut();
        for key in keys {
            values.remove(&key);
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.trip()?;
        let mut values = self.values.borrow_mut();
        let current = values
            .get(key)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(i64::from_le_bytes)
            .unwrap_or(0);
        let next = current + delta;
        values.insert(key.to_owned(), next.to_le_bytes().to_vec());
        Ok(next)
    }
}
