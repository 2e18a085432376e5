//! `wasi:keyvalue` 0.2.0-draft2 (`store`, `batch`, `atomics`) for guests.
//!
//! Owns the guest-facing side: the `bucket` and `cas` resources, the mapping
//! of each WIT function onto [`SqliteStore`], running those blocking calls on
//! the blocking thread pool, and counting every call in [`KvStats`].
//!
//! Only the store label `"default"` opens, as in a Spin app whose component
//! lists `key_value_stores = ["default"]`; other labels are `no-such-store`.

mod sqlite;
mod stats;

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::wasi::keyvalue::{atomics, batch, store};
pub use sqlite::{SqliteStore, StoreError, SwapOutcome};
pub use stats::KvStats;
use stats::{KvCounters, KvOp};

/// The only store label guests may open.
pub const DEFAULT_STORE: &str = "default";

/// Keys returned per `list-keys` page.
const LIST_KEYS_PAGE: usize = 1000;

/// The host side of a guest's `bucket` resource.
pub struct Bucket {
    label: String,
}

/// The host side of a guest's `cas` resource: the key and the value it had
/// when the handle was made. `swap` succeeds only while the key still holds
/// that value.
pub struct Cas {
    label: String,
    key: String,
    snapshot: Option<Vec<u8>>,
}

/// The key-value state one server shares between all of its instances.
#[derive(Clone)]
pub(crate) struct KeyValue {
    store: Arc<SqliteStore>,
    counters: Arc<KvCounters>,
}

impl KeyValue {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: Arc::new(SqliteStore::open(path)?),
            counters: Arc::default(),
        })
    }

    pub(crate) fn stats(&self) -> KvStats {
        self.counters.snapshot()
    }

    /// The view the generated `Host` traits are implemented on.
    pub(crate) fn view<'a>(&'a self, table: &'a mut ResourceTable) -> KeyValueView<'a> {
        KeyValueView { kv: self, table }
    }

    /// Counts one `op` and runs `work` on the calling thread.
    ///
    /// Key-value operations take tens of microseconds on a warm SQLite
    /// connection; handing each to the blocking thread pool cost two thread
    /// wake-ups, more than the operation itself, on every call.
    async fn run<T>(
        &self,
        op: KvOp,
        work: impl FnOnce(&SqliteStore) -> Result<T, StoreError>,
    ) -> Result<T, store::Error> {
        self.counters.record(op);
        let result = work(&self.store).map_err(|err| err.to_string());
        result.map_err(|message| {
            tracing::warn!(?op, "key-value call failed: {message}");
            store::Error::Other(message)
        })
    }
}

/// Borrowed key-value state of one store, for the duration of a host call.
pub(crate) struct KeyValueView<'a> {
    kv: &'a KeyValue,
    table: &'a mut ResourceTable,
}

impl KeyValueView<'_> {
    fn label(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.label.clone())
    }
}

struct KeyValueData;

impl HasData for KeyValueData {
    type Data<'a> = KeyValueView<'a>;
}

/// Adds `wasi:keyvalue/{store,batch,atomics}` to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, KeyValueData>(linker, view)?;
    batch::add_to_linker::<T, KeyValueData>(linker, view)?;
    atomics::add_to_linker::<T, KeyValueData>(linker, view)?;
    Ok(())
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if identifier != DEFAULT_STORE {
            return Ok(Err(store::Error::NoSuchStore));
        }
        let bucket = self.table.push(Bucket { label: identifier })?;
        Ok(Ok(bucket))
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let label = self.label(&bucket)?;
        Ok(self.kv.run(KvOp::Get, move |s| s.get(&label, &key)).await)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::Set, move |s| s.set(&label, &key, &value))
            .await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::Delete, move |s| s.delete(&label, &key))
            .await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::Exists, move |s| s.exists(&label, &key))
            .await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        let label = self.label(&bucket)?;
        let page = self
            .kv
            .run(KvOp::ListKeys, move |s| {
                s.list_keys(&label, cursor.as_deref(), LIST_KEYS_PAGE)
            })
            .await;
        Ok(page.map(|page| store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl batch::Host for KeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::GetMany, move |s| s.get_many(&label, keys))
            .await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::SetMany, move |s| s.set_many(&label, &key_values))
            .await)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::DeleteMany, move |s| s.delete_many(&label, &keys))
            .await)
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> KvResult<i64> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .run(KvOp::Increment, move |s| s.increment(&label, &key, delta))
            .await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas {
            label,
            key,
            snapshot,
        } = self.table.delete(cas)?;
        let outcome = {
            let (label, key) = (label.clone(), key.clone());
            self.kv
                .run(KvOp::Swap, move |s| {
                    s.swap(&label, &key, snapshot.as_deref(), &value)
                })
                .await
        };
        match outcome {
            Ok(SwapOutcome::Swapped) => Ok(Ok(())),
            Ok(SwapOutcome::Changed(current)) => {
                let retry = self.table.push(Cas {
                    label,
                    key,
                    snapshot: current,
                })?;
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
            Err(err) => Ok(Err(atomics::CasError::StoreError(err))),
        }
    }
}

impl atomics::HostCas for KeyValueView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Resource<Cas>> {
        let label = self.label(&bucket)?;
        let snapshot = {
            let (label, key) = (label.clone(), key.clone());
            self.kv
                .run(KvOp::CasNew, move |s| s.get(&label, &key))
                .await
        };
        match snapshot {
            Ok(snapshot) => Ok(Ok(self.table.push(Cas {
                label,
                key,
                snapshot,
            })?)),
            Err(err) => Ok(Err(err)),
        }
    }

    async fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        self.kv.counters.record(KvOp::CasCurrent);
        Ok(Ok(self.table.get(&cas)?.snapshot.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atomics::{Host as _, HostCas as _};
    use batch::Host as _;
    use store::{Host as _, HostBucket as _};

    fn open() -> (tempfile::TempDir, KeyValue) {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = KeyValue::open(&dir.path().join("kv.db")).expect("open store");
        (dir, kv)
    }

    async fn bucket(view: &mut KeyValueView<'_>) -> Resource<Bucket> {
        view.open(DEFAULT_STORE.into())
            .await
            .expect("no trap")
            .expect("default opens")
    }

    fn borrow<T: 'static>(resource: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(resource.rep())
    }

    #[tokio::test]
    async fn only_the_default_store_opens() {
        let (_dir, kv) = open();
        let mut table = ResourceTable::new();
        let mut view = kv.view(&mut table);
        bucket(&mut view).await;
        let other = view.open("other".into()).await.expect("no trap");
        assert!(matches!(other, Err(store::Error::NoSuchStore)));
    }

    #[tokio::test]
    async fn calls_reach_the_store_and_are_counted() {
        let (_dir, kv) = open();
        let mut table = ResourceTable::new();
        let mut view = kv.view(&mut table);
        let b = bucket(&mut view).await;

        view.set(borrow(&b), "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        let value = view.get(borrow(&b), "k".into()).await.unwrap().unwrap();
        assert_eq!(value.as_deref(), Some(&b"v"[..]));
        let pairs = vec![("a".to_owned(), b"1".to_vec())];
        view.set_many(borrow(&b), pairs).await.unwrap().unwrap();
        let keys = view.list_keys(borrow(&b), None).await.unwrap().unwrap();
        assert_eq!(keys.keys, ["a", "k"]);
        let count = view.increment(borrow(&b), "n".into(), 3).await.unwrap();
        assert_eq!(count.ok(), Some(3));

        let stats = kv.stats();
        assert_eq!((stats.set, stats.get, stats.set_many), (1, 1, 1));
        assert_eq!((stats.list_keys, stats.increment, stats.total()), (1, 1, 5));
    }

    #[tokio::test]
    async fn failed_swap_hands_back_an_up_to_date_cas() {
        let (_dir, kv) = open();
        let mut table = ResourceTable::new();
        let mut view = kv.view(&mut table);
        let b = bucket(&mut view).await;

        let cas = view.new(borrow(&b), "k".into()).await.unwrap().unwrap();
        assert_eq!(view.current(borrow(&cas)).await.unwrap().unwrap(), None);
        view.set(borrow(&b), "k".into(), b"theirs".to_vec())
            .await
            .unwrap()
            .unwrap();

        let retry = match view.swap(cas, b"mine".to_vec()).await.unwrap() {
            Err(atomics::CasError::CasFailed(retry)) => retry,
            other => panic!("expected cas-failed, got {:?}", other.is_ok()),
        };
        let current = view.current(borrow(&retry)).await.unwrap().unwrap();
        assert_eq!(current.as_deref(), Some(&b"theirs"[..]));
        assert!(view.swap(retry, b"mine".to_vec()).await.unwrap().is_ok());

        let value = view.get(borrow(&b), "k".into()).await.unwrap().unwrap();
        assert_eq!(value.as_deref(), Some(&b"mine"[..]));
        let stats = kv.stats();
        assert_eq!((stats.cas_new, stats.cas_current, stats.swap), (1, 2, 2));
    }
}
