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

/// An in-memory [`Kv`] that counts its round trips, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryKv {
    pub values: RefCell<BTreeMap<String, Vec<u8>>>,
    pub round_trips: RefCell<u64>,
}

#[cfg(test)]
impl MemoryKv {
    fn trip(&self) {
        *self.round_trips.borrow_mut() += 1;
    }
}

#[cfg(test)]
impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.trip();
        Ok(self.values.borrow().get(key).cloned())
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.trip();
        let values = self.values.borrow();
        Ok(keys.iter().map(|k| values.get(k).cloned()).collect())
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.trip();
        self.values.borrow_mut().extend(entries);
        Ok(())
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        self.trip();
        let mut values = self.values.borrow_mut();
        for key in keys {
            values.remove(&key);
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.trip();
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
