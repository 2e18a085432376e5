//! The SQLite file behind `wasi:keyvalue`.
//!
//! Owns the database: its schema (the `spin_key_value` table Spin uses, so a
//! file written by `spin up` and one written by this host are interchangeable),
//! the connection, and every statement the key-value interfaces run. All
//! methods are blocking and short; the key-value host calls them inline.
//!
//! Every operation takes turns on one connection. In WAL mode a connection
//! drops its whole page cache whenever another connection has written, so
//! with a pool every read after a write (that is, every read under load)
//! starts cold; one connection keeps its cache, and the store's operations
//! are short enough that taking turns costs less than re-reading pages.

use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::store::{KeyPage, StoreError, StoreResult, SwapOutcome};

/// How long a connection waits for another writer's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT_VALUE: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value";
const DELETE_KEY: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        Self(format!("sqlite: {err}"))
    }
}

/// How often the write-ahead log is folded back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A connection in WAL mode whose writes never checkpoint: that work (and its
/// `fsync`) would otherwise land on whichever request crosses the
/// threshold. [`Checkpointer`] does it off the request path.
fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Checkpoints the write-ahead log on its own thread until dropped.
struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> StoreResult<Self> {
        let conn = open_connection(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(err) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("checkpointing the key-value store failed: {err}");
                    }
                }
            })
            .map_err(|err| StoreError(format!("starting the checkpoint thread: {err}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A SQLite database file holding the values of every key-value store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its parent
    /// directory.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| StoreError(format!("creating {}: {err}", dir.display())))?;
        }
        let conn = open_connection(path)?;
        conn.execute(SCHEMA, [])?;
        Ok(Self {
            conn: Mutex::new(conn),
            _checkpointer: Checkpointer::start(path)?,
        })
    }

    /// The value of `key`, if set.
    pub fn get(&self, store: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.with_connection(|conn| select_value(conn, store, key))
    }

    /// Sets `key` to `value`, replacing any previous value.
    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.with_connection(|conn| upsert_value(conn, store, key, value))
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(&self, store: &str, key: &str) -> StoreResult<()> {
        self.with_connection(|conn| {
            conn.prepare_cached(DELETE_KEY)?
                .execute(params![store, key])?;
            Ok(())
        })
    }

    /// Whether `key` is set.
    pub fn exists(&self, store: &str, key: &str) -> StoreResult<bool> {
        self.with_connection(|conn| {
            let sql = "SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2";
            Ok(conn.prepare_cached(sql)?.exists(params![store, key])?)
        })
    }

    /// Up to `limit` keys greater than `cursor`, in ascending order.
    pub fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<KeyPage> {
        let limit = limit.max(1);
        self.with_connection(|conn| {
            let sql = "SELECT key FROM spin_key_value
                       WHERE store = ?1 AND (?2 IS NULL OR key > ?2)
                       ORDER BY key LIMIT ?3";
            let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
            let mut keys = conn
                .prepare_cached(sql)?
                .query_map(params![store, cursor, fetch], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let cursor = if keys.len() > limit {
                keys.truncate(limit);
                keys.last().cloned()
            } else {
                None
            };
            Ok(KeyPage { keys, cursor })
        })
    }

    /// The values of `keys`, in the order asked, read in one transaction.
    pub fn get_many(
        &self,
        store: &str,
        keys: Vec<String>,
    ) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
        self.with_transaction(TransactionBehavior::Deferred, |tx| {
            keys.into_iter()
                .map(|key| {
                    let value = select_value(tx, store, &key)?;
                    Ok((key, value))
                })
                .collect()
        })
    }

    /// Sets every pair in one transaction.
    pub fn set_many(&self, store: &str, pairs: &[(String, Vec<u8>)]) -> StoreResult<()> {
        self.with_transaction(TransactionBehavior::Immediate, |tx| {
            pairs
                .iter()
                .try_for_each(|(key, value)| upsert_value(tx, store, key, value))
        })
    }

    /// Removes every key in one transaction.
    pub fn delete_many(&self, store: &str, keys: &[String]) -> StoreResult<()> {
        self.with_transaction(TransactionBehavior::Immediate, |tx| {
            let mut statement = tx.prepare_cached(DELETE_KEY)?;
            for key in keys {
                statement.execute(params![store, key])?;
            }
            Ok(())
        })
    }

    /// Adds `delta` to the counter at `key` and returns the new count.
    ///
    /// Counters are stored as 8-byte little-endian `i64`s, as Spin stores
    /// them; a missing key counts as 0.
    pub fn increment(&self, store: &str, key: &str, delta: i64) -> StoreResult<i64> {
        self.with_transaction(TransactionBehavior::Immediate, |tx| {
            let current = match select_value(tx, store, key)? {
                Some(bytes) => decode_counter(&bytes)?,
                None => 0,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StoreError(format!("counter {key:?} would overflow")))?;
            upsert_value(tx, store, key, &next.to_le_bytes())?;
            Ok(next)
        })
    }

    /// Replaces the value at `key` with `value` if it is still `expected`
    /// (`None`: the key is still missing).
    pub fn swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> StoreResult<SwapOutcome> {
        self.with_transaction(TransactionBehavior::Immediate, |tx| {
            let current = select_value(tx, store, key)?;
            if current.as_deref() != expected {
                return Ok(SwapOutcome::Changed(current));
            }
            upsert_value(tx, store, key, value)?;
            Ok(SwapOutcome::Swapped)
        })
    }

    fn with_transaction<T>(
        &self,
        behavior: TransactionBehavior,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(behavior)?;
            let result = work(&tx)?;
            tx.commit()?;
            Ok(result)
        })
    }

    fn with_connection<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        // A panic mid-operation rolls back its transaction when the
        // `Transaction` drops, so a poisoned connection is still usable.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut conn)
    }
}

fn select_value(conn: &Connection, store: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached(SELECT_VALUE)?
        .query_row(params![store, key], |row| row.get::<_, Vec<u8>>(0))
        .optional()?)
}

fn upsert_value(conn: &Connection, store: &str, key: &str, value: &[u8]) -> StoreResult<()> {
    conn.prepare_cached(UPSERT_VALUE)?
        .execute(params![store, key, value])?;
    Ok(())
}

fn decode_counter(bytes: &[u8]) -> StoreResult<i64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError("value is not an 8-byte counter".to_owned()))?;
    Ok(i64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "default";

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("nested/kv.db")).expect("open store");
        (dir, store)
    }

    #[test]
    fn get_set_delete_exists() {
        let (_dir, kv) = open();
        assert_eq!(kv.get(STORE, "a").unwrap(), None);
        assert!(!kv.exists(STORE, "a").unwrap());

        kv.set(STORE, "a", b"one").unwrap();
        kv.set(STORE, "a", b"two").unwrap();
        assert_eq!(kv.get(STORE, "a").unwrap().as_deref(), Some(&b"two"[..]));
        assert!(kv.exists(STORE, "a").unwrap());
        assert_eq!(kv.get("other", "a").unwrap(), None);

        kv.delete(STORE, "a").unwrap();
        kv.delete(STORE, "a").unwrap();
        assert_eq!(kv.get(STORE, "a").unwrap(), None);
    }

    #[test]
    fn list_keys_pages_with_a_cursor() {
        let (_dir, kv) = open();
        for key in ["e", "a", "d", "b", "c", ""] {
            kv.set(STORE, key, b"x").unwrap();
        }
        kv.set("other", "z", b"x").unwrap();

        let first = kv.list_keys(STORE, None, 2).unwrap();
        assert_eq!(first.keys, ["", "a"]);
        let second = kv.list_keys(STORE, first.cursor.as_deref(), 2).unwrap();
        assert_eq!(second.keys, ["b", "c"]);
        let third = kv.list_keys(STORE, second.cursor.as_deref(), 2).unwrap();
        assert_eq!(third.keys, ["d", "e"]);
        assert_eq!(third.cursor, None, "no page follows the last key");
        let past_end = kv.list_keys(STORE, Some("e"), 2).unwrap();
        assert_eq!(
            past_end,
            KeyPage {
                keys: vec![],
                cursor: None
            }
        );

        let exact = kv.list_keys(STORE, None, 6).unwrap();
        assert_eq!(exact.keys.len(), 6);
        assert_eq!(exact.cursor, None);
    }

    #[test]
    fn batch_operations() {
        let (_dir, kv) = open();
        let pairs = vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ];
        kv.set_many(STORE, &pairs).unwrap();

        let got = kv
            .get_many(STORE, vec!["b".into(), "missing".into(), "a".into()])
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("b".to_owned(), Some(b"2".to_vec())),
                ("missing".to_owned(), None),
                ("a".to_owned(), Some(b"1".to_vec())),
            ]
        );

        kv.delete_many(STORE, &["a".into(), "missing".into()])
            .unwrap();
        assert_eq!(kv.list_keys(STORE, None, 10).unwrap().keys, ["b"]);
    }

    #[test]
    fn increment_starts_from_zero_and_stores_le_bytes() {
        let (_dir, kv) = open();
        assert_eq!(kv.increment(STORE, "n", 5).unwrap(), 5);
        assert_eq!(kv.increment(STORE, "n", -7).unwrap(), -2);
        assert_eq!(
            kv.get(STORE, "n").unwrap(),
            Some((-2i64).to_le_bytes().to_vec())
        );

        kv.set(STORE, "text", b"abc").unwrap();
        assert!(kv.increment(STORE, "text", 1).is_err());
        kv.set(STORE, "max", &i64::MAX.to_le_bytes()).unwrap();
        assert!(kv.increment(STORE, "max", 1).is_err());
    }

    #[test]
    fn swap_succeeds_only_on_unchanged_value() {
        let (_dir, kv) = open();
        assert_eq!(
            kv.swap(STORE, "k", None, b"v1").unwrap(),
            SwapOutcome::Swapped
        );
        assert_eq!(
            kv.swap(STORE, "k", None, b"v2").unwrap(),
            SwapOutcome::Changed(Some(b"v1".to_vec()))
        );
        assert_eq!(
            kv.swap(STORE, "k", Some(b"v1"), b"v2").unwrap(),
            SwapOutcome::Swapped
        );
        assert_eq!(kv.get(STORE, "k").unwrap(), Some(b"v2".to_vec()));
        kv.delete(STORE, "k").unwrap();
        assert_eq!(
            kv.swap(STORE, "k", Some(b"v2"), b"v3").unwrap(),
            SwapOutcome::Changed(None)
        );
    }

    #[test]
    fn concurrent_increments_are_atomic() {
        let (_dir, kv) = open();
        let kv = std::sync::Arc::new(kv);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        kv.increment(STORE, "n", 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(kv.increment(STORE, "n", 0).unwrap(), 200);
    }
}
