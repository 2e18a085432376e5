//! The store behind `wasi:keyvalue`, whichever it is.
//!
//! Owns what every backend shares: [`Store`], the one type the guest-facing
//! side calls, which dispatches to [`SqliteStore`] (the default, a local
//! file) or [`RedisStore`] (a Redis or Valkey server several hosts can
//! share); the result types of their operations; and opening a store from a
//! [`StoreLocation`]. Both backends give every operation the same meaning,
//! so a guest cannot tell them apart, with one deliberate exception:
//! counters are stored the way Spin stores them on that backend (see
//! [`Store::increment`]).
//!
//! SQLite calls are short and run inline on the calling thread (see
//! [`SqliteStore`]); Redis calls are awaited.

use anyhow::Context as _;

use super::redis::RedisStore;
use super::sqlite::SqliteStore;
use crate::StoreLocation;

/// A failed store operation.
#[derive(Debug)]
pub struct StoreError(pub(crate) String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// The result of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// One page of `list_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys of this page (in ascending order on SQLite; in Redis `SCAN`
    /// order on Redis).
    pub keys: Vec<String>,
    /// Where the next page starts, when more keys may follow.
    pub cursor: Option<String>,
}

/// What a compare-and-swap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The value was unchanged and has been replaced.
    Swapped,
    /// The value had changed; this is what is stored now.
    Changed(Option<Vec<u8>>),
}

/// The key-value store one server uses.
pub enum Store {
    /// A SQLite file, in Spin's table layout.
    Sqlite(SqliteStore),
    /// A Redis or Valkey database, laid out as Spin's Redis store does.
    Redis(RedisStore),
}

impl Store {
    /// Opens the store at `location`: creates the SQLite file (off the async
    /// runtime's threads), or connects to Redis (bounded in time).
    pub async fn open(location: &StoreLocation) -> anyhow::Result<Store> {
        match location {
            StoreLocation::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                    .await
                    .context("opening the SQLite store")??;
                Ok(Store::Sqlite(store))
            }
            StoreLocation::Redis(url) => Ok(Store::Redis(RedisStore::connect(url).await?)),
        }
    }

    /// Which kind of store this is, as traces name it: `sqlite` or
    /// `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Redis(_) => "redis",
        }
    }

    /// The value of `key`, if set.
    pub async fn get(&self, label: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        match self {
            Store::Sqlite(s) => s.get(label, key),
            Store::Redis(r) => r.get(key).await,
        }
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub async fn set(&self, label: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        match self {
            Store::Sqlite(s) => s.set(label, key, value),
            Store::Redis(r) => r.set(key, value).await,
        }
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, label: &str, key: &str) -> StoreResult<()> {
        match self {
            Store::Sqlite(s) => s.delete(label, key),
            Store::Redis(r) => r.delete(key).await,
        }
    }

    /// Whether `key` is set.
    pub async fn exists(&self, label: &str, key: &str) -> StoreResult<bool> {
        match self {
            Store::Sqlite(s) => s.exists(label, key),
            Store::Redis(r) => r.exists(key).await,
        }
    }

    /// About `limit` keys from `cursor` on (the first page without one).
    pub async fn list_keys(
        &self,
        label: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<KeyPage> {
        match self {
            Store::Sqlite(s) => s.list_keys(label, cursor, limit),
            Store::Redis(r) => r.list_keys(cursor, limit).await,
        }
    }

    /// The values of `keys`, in the order asked, read at one moment.
    pub async fn get_many(
        &self,
        label: &str,
        keys: Vec<String>,
    ) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
        match self {
            Store::Sqlite(s) => s.get_many(label, keys),
            Store::Redis(r) => r.get_many(keys).await,
        }
    }

    /// Sets every pair at once: readers see all of them or none.
    pub async fn set_many(&self, label: &str, pairs: &[(String, Vec<u8>)]) -> StoreResult<()> {
        match self {
            Store::Sqlite(s) => s.set_many(label, pairs),
            Store::Redis(r) => r.set_many(pairs).await,
        }
    }

    /// Removes every key at once.
    pub async fn delete_many(&self, label: &str, keys: &[String]) -> StoreResult<()> {
        match self {
            Store::Sqlite(s) => s.delete_many(label, keys),
            Store::Redis(r) => r.delete_many(keys).await,
        }
    }

    /// Adds `delta` to the counter at `key` (a missing key counts as 0) and
    /// returns the new count.
    ///
    /// Counters are stored as Spin stores them on the same backend: 8-byte
    /// little-endian on SQLite, decimal text (`INCRBY`) on Redis, so a guest
    /// that `get`s a counter reads what it would read under Spin.
    pub async fn increment(&self, label: &str, key: &str, delta: i64) -> StoreResult<i64> {
        match self {
            Store::Sqlite(s) => s.increment(label, key, delta),
            Store::Redis(r) => r.increment(key, delta).await,
        }
    }

    /// Replaces the value at `key` with `value` if it is still `expected`
    /// (`None`: the key is still missing), atomically.
    pub async fn swap(
        &self,
        label: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> StoreResult<SwapOutcome> {
        match self {
            Store::Sqlite(s) => s.swap(label, key, expected, value),
            Store::Redis(r) => r.swap(key, expected, value).await,
        }
    }
}
