//! Everything done before the first request: the wasmtime `Engine` (pooling
//! allocator, copy-on-write memory images), compiling the component or
//! loading it from the on-disk cache, the `Linker` with every interface the
//! component imports, and the pre-instantiated component.
//!
//! The instance pool holds as many instances as the memory budget allows
//! (see `admission`); its limits, the native stack of each instance and the
//! address space reserved per linear memory are set here. The engine, its
//! pool and the compiled components are shared by every server in the
//! process with the same instance count, so servers started side by side
//! (as tests do) compile a component once and draw on one pool. Each request
//! then only pays for a fresh `Store` and an instantiation, see
//! [`Runtime::new_store`] and [`Runtime::instance_slot`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::admission::{self, Admission, Overloaded, Slot};
use crate::bindings::EdgeResponsesPre;
use crate::config::{self, ConfigValues};
use crate::exchange::Exchange;
use crate::keyvalue::{self, KeyValue};
use crate::metrics::Metrics;
use crate::state::InstanceState;

/// Per-component upper bounds, checked when a component loads: the
/// component has one linear memory, two tables and three core module
/// instances (its main module and the two small shims components carry).
/// Only memories and tables take pool space up front, so those bounds are
/// tight; a component beyond them fails to load and says why.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 1;
const TABLES_PER_COMPONENT: u32 = 4;

/// Elements of the largest table (the component's has 253).
const TABLE_ELEMENTS: usize = 4096;

/// Largest linear memory a guest may grow to. Each pooled memory reserves
/// wasmtime's default 4 GiB of address space plus guard regions anyway (so
/// compiled code needs no bounds checks); this caps what it may commit.
const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Of the linear-memory pages an instance wrote, how much is reset in place
/// when it ends (zeroed, or copied back from the data image) and stays
/// resident, so the slot's next request takes no page faults there; the
/// rest goes back to the kernel. A request with a short input writes about
/// 24 KiB, so an idle slot keeps what its last request used, never more
/// than this. (Without the kernel's `PAGEMAP_SCAN`, it is the first 1 MiB
/// of memory that is reset in place: the guest's stack.)
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// Native stack of an instance's fiber: guest frames (up to
/// [`MAX_WASM_STACK`]) and the host calls made from it, SQLite's included.
/// Only the pages a request touches become resident.
const ASYNC_STACK_BYTES: usize = 1 << 20;
const MAX_WASM_STACK: usize = 512 << 10;

/// The compiled, linked component, ready to instantiate.
pub(crate) struct Runtime {
    proxy: ProxyPre<InstanceState>,
    responses: Option<EdgeResponsesPre<InstanceState>>,
    kv: KeyValue,
    config: ConfigValues,
    admission: Admission,
    instance_limit: u32,
    metrics: Arc<Metrics>,
}

impl Runtime {
    /// Compiles (or loads from `cache_dir`) the component at `wasm` and links
    /// it against the host's interfaces, on a pool of `instance_limit`
    /// instances that requests wait for up to `queue_timeout`, recording in
    /// `metrics`. Blocking: compilation takes seconds.
    pub(crate) fn load(
        wasm: &Path,
        cache_dir: &Path,
        kv: KeyValue,
        config: ConfigValues,
        instance_limit: u32,
        queue_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let shared = Shared::get(instance_limit)?;
        let component = shared.component(wasm, cache_dir)?;
        let pre = linker(&shared.engine)?
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("linking {}", wasm.display()))?;
        let proxy = ProxyPre::new(pre.clone())
            .map_err(anyhow::Error::from)
            .context("the component does not export wasi:http/incoming-handler")?;
        let gauges = admission::Gauges {
            in_use: metrics.instances_in_use.clone(),
            waiting: metrics.requests_waiting.clone(),
        };
        metrics.instance_limit.set(i64::from(instance_limit));
        Ok(Self {
            proxy,
            responses: responses_pre(pre),
            kv,
            config,
            admission: Admission::new(shared.slots.clone(), queue_timeout, gauges),
            instance_limit,
            metrics,
        })
    }

    /// A store for one instance, with fresh per-instance state, serving
    /// `exchange` (none: a typed call).
    pub(crate) fn new_store(&self, exchange: Option<Arc<Exchange>>) -> Store<InstanceState> {
        let state = InstanceState::new(
            self.kv.clone(),
            self.config.clone(),
            self.metrics.clone(),
            exchange,
        );
        Store::new(self.proxy.engine(), state)
    }

    /// Waits (up to the queue timeout) until an instance may be created;
    /// hold the slot while the instance lives.
    pub(crate) async fn instance_slot(&self) -> Result<Slot, Overloaded> {
        self.admission.admit().await
    }

    /// Waits up to `timeout` for the instances still alive to end; the
    /// number left.
    pub(crate) async fn drain(&self, timeout: Duration) -> i64 {
        self.admission.drain(timeout).await
    }

    /// The config values instances see.
    pub(crate) fn config(&self) -> &ConfigValues {
        &self.config
    }

    /// How many instances may live at once.
    pub(crate) fn instance_limit(&self) -> u32 {
        self.instance_limit
    }

    pub(crate) fn proxy(&self) -> &ProxyPre<InstanceState> {
        &self.proxy
    }

    pub(crate) fn responses(&self) -> Option<&EdgeResponsesPre<InstanceState>> {
        self.responses.as_ref()
    }

    pub(crate) fn keyvalue(&self) -> &KeyValue {
        &self.kv
    }
}

/// An engine with a pool of instances, the permits that guard the pool,
/// and the components the engine has compiled, by cache key.
struct Shared {
    engine: Engine,
    slots: Arc<Semaphore>,
    components: Mutex<HashMap<String, Component>>,
}

impl Shared {
    /// The process's engine for pools of `instances`, created on first use.
    /// Engines live as long as the process: it holds one per pool size in
    /// use (one, outside of tests).
    fn get(instances: u32) -> anyhow::Result<&'static Shared> {
        static POOLS: OnceLock<Mutex<HashMap<u32, &'static Shared>>> = OnceLock::new();
        // The map is only inserted into, so a poisoned lock is still valid.
        let mut pools = POOLS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = pools.get(&instances) {
            return Ok(shared);
        }
        tracing::debug!("creating an engine with a pool of {instances} instances");
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            engine: new_engine(instances)?,
            slots: Arc::new(Semaphore::new(instances as usize)),
            components: Mutex::default(),
        }));
        pools.insert(instances, shared);
        Ok(shared)
    }

    /// The compiled component at `wasm`: compiled earlier in this process,
    /// cached in `cache_dir`, or compiled now. Loads are serialized so that
    /// servers starting together compile a component only once.
    fn component(&self, wasm: &Path, cache_dir: &Path) -> anyhow::Result<Component> {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let key = cache_key(&self.engine, &bytes);
        // The map is only inserted into, so a poisoned lock is still valid.
        let mut components = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cached = cache_dir.join(format!("{key}.cwasm"));
        if let Some(component) = components.get(&key) {
            if !cached.is_file() {
                cache_quietly(component, &cached);
            }
            return Ok(component.clone());
        }
        let component = load_component(&self.engine, wasm, &bytes, &cached)?;
        components.insert(key, component.clone());
        Ok(component)
    }
}

fn responses_pre(pre: InstancePre<InstanceState>) -> Option<EdgeResponsesPre<InstanceState>> {
    match EdgeResponsesPre::new(pre) {
        Ok(pre) => Some(pre),
        Err(err) => {
            tracing::warn!("typed calls disabled: no edge:responses/responses export ({err:#})");
            None
        }
    }
}

/// An engine with a pool of `instances` instances, or the on-demand
/// allocator where the pool's address space cannot be reserved (e.g. under
/// a tight `ulimit -v`).
fn new_engine(instances: u32) -> anyhow::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config
        .memory_init_cow(true)
        .async_stack_size(ASYNC_STACK_BYTES)
        .max_wasm_stack(MAX_WASM_STACK);
    let pool = pooling_limits(instances);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(err) => {
            tracing::warn!("pooling allocator unavailable, allocating on demand: {err:#}");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Ok(Engine::new(&config)?)
        }
    }
}

/// Pool limits for `instances` instances of the component.
fn pooling_limits(instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(MAX_MEMORY_BYTES)
        // Reset a finished instance's memory by zeroing what it touched
        // instead of unmapping it: no page-table flush on every request and
        // no fresh page faults on the next one.
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_ELEMENTS * std::mem::size_of::<usize>())
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// A linker with WASI p2, `wasi:http`, and this crate's `wasi:keyvalue` and
/// `wasi:config`.
fn linker(engine: &Engine) -> anyhow::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    keyvalue::add_to_linker(&mut linker, InstanceState::keyvalue)?;
    config::add_to_linker(&mut linker, InstanceState::config)?;
    Ok(linker)
}

/// The compiled component: from `cached` when this engine compiled these
/// exact bytes before, otherwise compiled now and written there.
fn load_component(
    engine: &Engine,
    wasm: &Path,
    bytes: &[u8],
    cached: &Path,
) -> anyhow::Result<Component> {
    if cached.is_file() {
        // SAFETY: `deserialize_file` trusts the file to be wasmtime's own
        // output for a compatible engine and maps it into memory. The file
        // was written by `store_in_cache` below from `Component::serialize`,
        // its name covers the wasm bytes and the engine's compatibility hash,
        // and it is only ever replaced by an atomic rename (never modified in
        // place), so a mapped copy cannot change underneath us.
        match unsafe { Component::deserialize_file(engine, cached) } {
            Ok(component) => return Ok(component),
            Err(err) => tracing::warn!("ignoring cached {}: {err:#}", cached.display()),
        }
    }
    tracing::info!("compiling {}", wasm.display());
    let component = Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", wasm.display()))?;
    cache_quietly(&component, cached);
    Ok(component)
}

/// [`store_in_cache`], logging failure: the cache only saves time.
fn cache_quietly(component: &Component, path: &Path) {
    if let Err(err) = store_in_cache(component, path) {
        tracing::warn!("not caching the compiled component: {err:#}");
    }
}

/// Hex SHA-256 of the wasm bytes and of everything that makes compiled code
/// compatible with an engine (wasmtime version, target, settings).
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.0.update(wasm);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = hasher.0.finalize();
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Writes the serialized component next to `path` and renames it into
/// place, so concurrent writers and readers only ever see whole files.
fn store_in_cache(component: &Component, path: &Path) -> anyhow::Result<()> {
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let serialized = component.serialize()?;
    let temp = PathBuf::from(format!(
        "{}.{}-{}.tmp",
        path.display(),
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&temp, serialized).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|err| {
        let _ = std::fs::remove_file(&temp);
        anyhow::Error::new(err).context(format!("renaming into {}", path.display()))
    })
}

/// Feeds `Hash` implementations into a SHA-256 digest.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}
