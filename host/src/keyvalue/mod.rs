//! `wasi:keyvalue` 0.2.0-draft2 (`store`, `batch`, `atomics`) for guests.
//!
//! Owns the guest-facing side: the `bucket` and `cas` resources, the mapping
//! of each WIT function onto the server's [`Store`] (SQLite or Redis, see
//! `store`), and counting every call in [`KvStats`] and the server's
//! metrics (with its time in the store), whichever store serves it. A call
//! made for a traced request is a span of that request's trace (see
//! `trace::keyvalue_span`).
//!
//! Only the store label `"default"` opens, as in a Spin app whose component
//! lists `key_value_stores = ["default"]`; other labels are `no-such-store`.

mod redis;
mod sqlite;
mod stats;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::wasi::keyvalue::{atomics, batch, store as wit};
use crate::metrics::Metrics;
use crate::trace;
use crate::StoreLocation;
use stats::KvCounters;
pub(crate) use stats::KvOp;
pub use stats::KvStats;
pub use store::{Store, StoreResult, SwapOutcome};

/// The only store label guests may open.
pub const DEFAULT_STORE: &str = "default";

/// Keys returned per `list-keys` page.
const LIST_KEYS_PAGE: usize = 1000;

/// The key the readiness check reads (a point read of a key nobody writes).
const PROBE_KEY: &str = "edge-responses-host/readyz";

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
    store: Arc<Store>,
    counters: Arc<KvCounters>,
    metrics: Arc<Metrics>,
}

impl KeyValue {
    /// Opens the store at `location` (creating a SQLite file if needed);
    /// its calls are recorded in `metrics`.
    pub(crate) async fn open(
        location: &StoreLocation,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self::new(Store::open(location).await?, metrics))
    }

    pub(crate) fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store: Arc::new(store),
            counters: Arc::default(),
            metrics,
        }
    }

    /// Whether the store answers: one point read, made by the host (it is
    /// neither counted in [`Self::stats`] nor in the metrics).
    pub(crate) async fn probe(&self) -> StoreResult<()> {
        self.store.get(DEFAULT_STORE, PROBE_KEY).await.map(drop)
    }

    pub(crate) fn stats(&self) -> KvStats {
        self.counters.snapshot()
    }

    /// The view the generated `Host` traits are implemented on.
    pub(crate) fn view<'a>(&'a self, table: &'a mut ResourceTable) -> KeyValueView<'a> {
        KeyValueView { kv: self, table }
    }

    /// Counts one `op` and awaits `work`, a call on [`Self::store`].
    ///
    /// SQLite calls take tens of microseconds on a warm connection and run
    /// inline when `work` is polled: handing each to the blocking thread
    /// pool cost two thread wake-ups, more than the operation itself.
    async fn run<T>(
        &self,
        op: KvOp,
        work: impl Future<Output = StoreResult<T>>,
    ) -> Result<T, wit::Error> {
        self.run_batch(op, None, work).await
    }

    /// [`Self::run`] for a call on `keys` keys at once (traces say how
    /// many).
    async fn run_batch<T>(
        &self,
        op: KvOp,
        keys: Option<usize>,
        work: impl Future<Output = StoreResult<T>>,
    ) -> Result<T, wit::Error> {
        self.counters.record(op);
        self.metrics.keyvalue_call(op);
        let span = trace::keyvalue_span(op.span_name(), op.name(), self.store.kind(), keys);
        let started = Instant::now();
        let result = work.await;
        self.metrics
            .keyvalue_done(op, started.elapsed(), result.is_err());
        if let Some(span) = span {
            span.end(result.as_ref().err().map(ToString::to_string));
        }
        result.map_err(|err| {
            tracing::warn!(?op, "key-value call failed: {err}");
            wit::Error::Other(err.to_string())
        })
    }

    fn store(&self) -> &Store {
        &self.store
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
    wit::add_to_linker::<T, KeyValueData>(linker, view)?;
    batch::add_to_linker::<T, KeyValueData>(linker, view)?;
    atomics::add_to_linker::<T, KeyValueData>(linker, view)?;
    Ok(())
}

type KvResult<T> = wasmtime::Result<Result<T, wit::Error>>;

impl wit::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if identifier != DEFAULT_STORE {
            return Ok(Err(wit::Error::NoSuchStore));
        }
        let bucket = self.table.push(Bucket { label: identifier })?;
        Ok(Ok(bucket))
    }
}

impl wit::HostBucket for KeyValueView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        Ok(kv.run(KvOp::Get, kv.store().get(&label, &key)).await)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        Ok(kv
            .run(KvOp::Set, kv.store().set(&label, &key, &value))
            .await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        Ok(kv.run(KvOp::Delete, kv.store().delete(&label, &key)).await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        Ok(kv.run(KvOp::Exists, kv.store().exists(&label, &key)).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<wit::KeyResponse> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        let listing = kv
            .store()
            .list_keys(&label, cursor.as_deref(), LIST_KEYS_PAGE);
        let page = kv.run(KvOp::ListKeys, listing).await;
        Ok(page.map(|page| wit::KeyResponse {
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
        let kv = self.kv;
        let count = Some(keys.len());
        Ok(kv
            .run_batch(KvOp::GetMany, count, kv.store().get_many(&label, keys))
            .await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        let writing = kv.store().set_many(&label, &key_values);
        let count = Some(key_values.len());
        Ok(kv.run_batch(KvOp::SetMany, count, writing).await)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let label = self.label(&bucket)?;
        let kv = self.kv;
        let deleting = kv.store().delete_many(&label, &keys);
        Ok(kv
            .run_batch(KvOp::DeleteMany, Some(keys.len()), deleting)
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
        let kv = self.kv;
        let counting = kv.store().increment(&label, &key, delta);
        Ok(kv.run(KvOp::Increment, counting).await)
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
        let kv = self.kv;
        let swapping = kv.store().swap(&label, &key, snapshot.as_deref(), &value);
        match kv.run(KvOp::Swap, swapping).await {
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
        let kv = self.kv;
        match kv.run(KvOp::CasNew, kv.store().get(&label, &key)).await {
            Ok(snapshot) => Ok(Ok(self.table.push(Cas {
                label,
                key,
                snapshot,
            })?)),
            Err(err) => Ok(Err(err)),
        }
    }

    async fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        // Answered from the handle: counted, but no store call to time.
        self.kv.counters.record(KvOp::CasCurrent);
        self.kv.metrics.keyvalue_call(KvOp::CasCurrent);
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
    use scripted_backend::redis::RedisServer;
    use wit::{Host as _, HostBucket as _};

    /// A server's key-value state on a fresh store, and what keeps the store
    /// alive (its directory, or its Redis server).
    type Fixture = (Box<dyn std::any::Any>, KeyValue);

    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = StoreLocation::Sqlite(dir.path().join("kv.db"));
        let kv = KeyValue::open(&location, Arc::default())
            .await
            .expect("open store");
        (Box::new(dir), kv)
    }

    /// `None` (the test is skipped) without `redis-server`.
    async fn redis(test: &str) -> Option<Fixture> {
        let server = RedisServer::start(test)?;
        let location = StoreLocation::Redis(server.url());
        let kv = KeyValue::open(&location, Arc::default())
            .await
            .expect("open store");
        Some((Box::new(server), kv))
    }

    /// Both stores: SQLite, and Redis when it is installed.
    async fn stores(test: &str) -> Vec<Fixture> {
        let mut fixtures = vec![sqlite().await];
        fixtures.extend(redis(test).await);
        fixtures
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
        let (_dir, kv) = sqlite().await;
        let mut table = ResourceTable::new();
        let mut view = kv.view(&mut table);
        bucket(&mut view).await;
        let other = view.open("other".into()).await.expect("no trap");
        assert!(matches!(other, Err(wit::Error::NoSuchStore)));
    }

    #[tokio::test]
    async fn calls_reach_the_store_and_are_counted() {
        for (_keep, kv) in stores("calls_reach_the_store_and_are_counted").await {
            calls_are_counted(kv).await;
        }
    }

    async fn calls_are_counted(kv: KeyValue) {
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
        let mut keys = view.list_keys(borrow(&b), None).await.unwrap().unwrap();
        keys.keys.sort();
        assert_eq!(keys.keys, ["a", "k"]);
        let count = view.increment(borrow(&b), "n".into(), 3).await.unwrap();
        assert_eq!(count.ok(), Some(3));

        let stats = kv.stats();
        assert_eq!((stats.set, stats.get, stats.set_many), (1, 1, 1));
        assert_eq!((stats.list_keys, stats.increment, stats.total()), (1, 1, 5));

        let text = kv.metrics.text();
        for (op, count) in [("set", 1), ("get", 1), ("set_many", 1), ("delete", 0)] {
            let calls = format!(r#"edge_responses_keyvalue_operations_total{{op="{op}"}} {count}"#);
            let timed = format!(
                r#"edge_responses_keyvalue_operation_duration_seconds_count{{op="{op}"}} {count}"#
            );
            assert!(text.lines().any(|line| line == calls), "{calls}\n{text}");
            assert!(text.lines().any(|line| line == timed), "{timed}\n{text}");
        }
    }

    #[tokio::test]
    async fn the_readiness_probe_reads_without_counting() {
        for (_keep, kv) in stores("the_readiness_probe_reads_without_counting").await {
            kv.probe().await.expect("the store answers");
            assert_eq!(kv.stats().total(), 0);
            assert!(!kv.metrics.text().contains(r#"op="get"} 1"#));
        }
    }

    #[tokio::test]
    async fn failed_swap_hands_back_an_up_to_date_cas() {
        for (_keep, kv) in stores("failed_swap_hands_back_an_up_to_date_cas").await {
            cas_conflict(kv).await;
        }
    }

    async fn cas_conflict(kv: KeyValue) {
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

    #[tokio::test]
    async fn counters_read_back_as_spin_stores_them() {
        let mut fixtures = vec![(sqlite().await, 7i64.to_le_bytes().to_vec())];
        if let Some(redis) = redis("counters_read_back_as_spin_stores_them").await {
            fixtures.push((redis, b"7".to_vec()));
        }
        for ((_keep, kv), stored) in fixtures {
            let mut table = ResourceTable::new();
            let mut view = kv.view(&mut table);
            let b = bucket(&mut view).await;
            let count = view.increment(borrow(&b), "n".into(), 7).await.unwrap();
            assert_eq!(count.ok(), Some(7));
            let value = view.get(borrow(&b), "n".into()).await.unwrap().unwrap();
            assert_eq!(value, Some(stored));
        }
    }

    #[tokio::test]
    async fn store_errors_reach_the_guest_as_errors() {
        for (_keep, kv) in stores("store_errors_reach_the_guest_as_errors").await {
            let mut table = ResourceTable::new();
            let mut view = kv.view(&mut table);
            let b = bucket(&mut view).await;
            view.set(borrow(&b), "text".into(), b"not a counter".to_vec())
                .await
                .unwrap()
                .unwrap();
            let count = view.increment(borrow(&b), "text".into(), 1).await;
            assert!(matches!(count, Ok(Err(wit::Error::Other(_)))));
            let failed = r#"edge_responses_keyvalue_errors_total{op="increment"} 1"#;
            assert!(kv.metrics.text().lines().any(|line| line == failed));
        }
    }
}
