//! A wasmtime host that serves the edge-responses component the way
//! `spin up` does: HTTP requests go to its `wasi:http/incoming-handler`, one
//! fresh instance per request, with `wasi:keyvalue` backed by a SQLite file
//! (Spin's table layout) or a Redis database (Spin's Redis layout), and
//! `wasi:config` backed by command-line values. As many instances live at
//! once as a memory budget allows; a request that finds none free within a
//! queue timeout is turned away with a 503.
//!
//! For operations: every request carries an `x-request-id`; `/healthz` and
//! `/readyz` are answered by the host; Prometheus metrics can be served on
//! a listener of their own ([`Config::metrics_listen`]); each request
//! ends with one log line on the `tracing` target [`REQUEST_LOG_TARGET`];
//! and OpenTelemetry traces can be exported over OTLP ([`Config::traces`]).
//!
//! This module owns the public surface: [`Config`] says what to serve and
//! where, [`Server`] runs it; [`Responses`] calls the component's typed
//! `edge:responses/responses` export directly.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use edge_responses_host::{Config, Server};
//!
//! let mut config = Config::new("target/wasm32-wasip2/component/edge_responses.wasm");
//! config.listen = "127.0.0.1:0".parse()?;
//! config.variables.insert("backend_url".into(), "http://127.0.0.1:8080".into());
//! let server = Server::start(config).await?;
//! println!("serving on {}", server.url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod admission;
mod bindings;
pub mod config;
mod engine;
mod exchange;
mod guest_log;
mod health;
mod http;
mod keyvalue;
mod metrics;
mod outbound;
mod request_id;
mod responses;
mod route;
mod socket;
mod state;
mod trace;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use admission::{
    instance_limit, parse_duration, parse_size, DEFAULT_MAX_MEMORY, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT, INSTANCE_MEMORY,
};
/// The `tracing` target of the request log: one line per request, at
/// `info`, once its response body has been sent.
pub use exchange::LOG_TARGET as REQUEST_LOG_TARGET;
pub use guest_log::GUEST_LOG_TARGET;
pub use keyvalue::KvStats;
pub use responses::{ApiError, CallResult, ListQuery, Order, Responses};
pub use socket::DEFAULT_MAX_AGE as DEFAULT_WEBSOCKET_MAX_AGE;
pub use trace::{OtlpProtocol, TraceExport};

/// Where the component is built by default, relative to the workspace root.
pub const DEFAULT_COMPONENT: &str = "target/wasm32-wasip2/component/edge_responses.wasm";
/// The default listening address.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3000);
/// The default directory for the key-value database and compiled-code cache.
pub const DEFAULT_STATE_DIR: &str = ".edge-responses";
/// The key-value database's file name inside the state directory.
pub const STORE_FILE: &str = "sqlite_key_value.db";
/// The compiled-component cache's directory name inside the state directory.
pub const CACHE_DIR: &str = "cache";

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct Config {
    /// The component (`.wasm`).
    pub component: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Holds the key-value database (unless `store` says otherwise) and the
    /// compiled-component cache.
    pub state_dir: PathBuf,
    /// The key-value store: a SQLite file, default
    /// `<state_dir>/sqlite_key_value.db`, or a Redis (or Valkey) database
    /// given as `redis://HOST:PORT[/DB]` (see [`StoreLocation::parse`]).
    pub store: Option<PathBuf>,
    /// The compiled-component cache; default `<state_dir>/cache`. Servers
    /// with different state can share one (tests do, to compile once).
    pub cache: Option<PathBuf>,
    /// `wasi:config` values, e.g. `backend_url`.
    pub variables: BTreeMap<String, String>,
    /// Memory budget for component instances, in bytes: the server lets
    /// `max_memory / INSTANCE_MEMORY` instances live at once (see
    /// [`instance_limit`]). Default [`DEFAULT_MAX_MEMORY`] (2 GiB).
    pub max_memory: u64,
    /// How long a request waits for a free instance before it is answered
    /// 503 `server_overloaded`. Default [`DEFAULT_QUEUE_TIMEOUT`] (10 s).
    pub queue_timeout: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`), on a listener of
    /// their own; port 0 picks a free port. Default: not served, and not
    /// recorded either (requests skip the work; [`Server::metrics_text`]
    /// then shows only the instance gauges).
    pub metrics_listen: Option<SocketAddr>,
    /// How long a WebSocket connection may live (see `socket`). Default
    /// [`DEFAULT_WEBSOCKET_MAX_AGE`] (60 minutes).
    pub websocket_max_age: Duration,
    /// How long [`Server::shutdown`] waits for instances still running
    /// once connections are closed: background responses, which go on
    /// after their answer. Default [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s).
    pub shutdown_timeout: Duration,
    /// Where to export OpenTelemetry traces (OTLP/HTTP). Default: none, and
    /// no spans are made.
    pub traces: Option<TraceExport>,
}

impl Config {
    /// Defaults for everything but the component.
    pub fn new(component: impl Into<PathBuf>) -> Self {
        Self {
            component: component.into(),
            listen: DEFAULT_LISTEN,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            store: None,
            cache: None,
            variables: BTreeMap::new(),
            max_memory: DEFAULT_MAX_MEMORY,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            metrics_listen: None,
            websocket_max_age: DEFAULT_WEBSOCKET_MAX_AGE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            traces: None,
        }
    }

    /// The key-value store setting as given: the SQLite file (by default
    /// `<state_dir>/sqlite_key_value.db`), or the Redis URL.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| self.state_dir.join(STORE_FILE))
    }

    /// The key-value store this config uses.
    pub fn store_location(&self) -> StoreLocation {
        StoreLocation::parse(self.store_path())
    }

    /// The compiled-component cache directory this config uses.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| self.state_dir.join(CACHE_DIR))
    }
}

impl Default for Config {
    /// Defaults for everything, the component included ([`DEFAULT_COMPONENT`]).
    fn default() -> Self {
        Self::new(DEFAULT_COMPONENT)
    }
}

/// Where the key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (Spin's `spin_key_value` table).
    Sqlite(PathBuf),
    /// A Redis or Valkey database: `redis://[USER:PASSWORD@]HOST:PORT[/DB]`.
    Redis(String),
}

/// URL schemes that name a Redis (or Valkey) server rather than a file.
const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "valkey://", "valkeys://"];

impl StoreLocation {
    /// A `redis://` (or `valkey://`) URL is a Redis database; anything else
    /// is the path of a SQLite file.
    pub fn parse(store: impl Into<PathBuf>) -> StoreLocation {
        let path = store.into();
        match path.to_str() {
            Some(text) if is_redis_url(text) => StoreLocation::Redis(text.to_owned()),
            _ => StoreLocation::Sqlite(path),
        }
    }
}

fn is_redis_url(text: &str) -> bool {
    REDIS_SCHEMES.iter().any(|scheme| {
        text.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

impl std::fmt::Display for StoreLocation {
    /// The file's path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Redis(url) => f.write_str(&without_password(url)),
        }
    }
}

/// `url` with any password in it replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

/// A running server. Dropping it stops accepting connections; call
/// [`Server::shutdown`] to also wait for in-flight requests.
pub struct Server {
    addr: SocketAddr,
    store_path: PathBuf,
    store: StoreLocation,
    runtime: Arc<engine::Runtime>,
    shutdown_timeout: Duration,
    metrics: Arc<metrics::Metrics>,
    stop: oneshot::Sender<()>,
    accept_loop: JoinHandle<()>,
    metrics_endpoint: Option<(SocketAddr, oneshot::Sender<()>, JoinHandle<()>)>,
    traces: Option<Arc<trace::Traces>>,
}

impl Server {
    /// Binds `config.listen` (and `config.metrics_listen`), loads the
    /// component, and serves on the current tokio runtime. Connections are
    /// accepted from the start: while the component loads, `/healthz`
    /// answers and other requests wait. Returns once the component is
    /// loaded.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let listener = http::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.metrics_listen {
            Some(metrics_addr) => Some(http::bind(metrics_addr).await?),
            None => None,
        };
        let store_path = config.store_path();
        let store = config.store_location();
        // Metrics no one can scrape are not recorded.
        let metrics = Arc::new(match metrics_listener {
            Some(_) => metrics::Metrics::new(),
            None => metrics::Metrics::disabled(),
        });
        let (loaded, loading) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let traces = match &config.traces {
            Some(export) => Some(Arc::new(trace::Traces::start(export)?)),
            None => None,
        };
        let (sockets_stop, stopping) = watch::channel(false);
        let sockets = socket::Sockets {
            max_age: config.websocket_max_age,
            stopping,
            metrics: metrics.clone(),
            traces: traces.clone(),
            memory: Arc::new(socket::Memory::new(config.max_memory / 4)),
        };
        let service = http::Service::new(metrics.clone(), loading, sockets, traces.clone());
        let accept_loop = tokio::spawn(http::serve(listener, service, stopped, sockets_stop));
        // On failure, `stop` and `loaded` are dropped: the accept loop ends,
        // and requests waiting for the component are answered 503.
        let runtime = Arc::new(load_runtime(config.clone(), metrics.clone()).await?);
        loaded.send_replace(Some(runtime.clone()));
        let metrics_endpoint = match metrics_listener {
            Some(listener) => {
                let metrics_addr = listener.local_addr()?;
                let (stop, stopped) = oneshot::channel();
                let task = tokio::spawn(metrics::serve(listener, metrics.clone(), stopped));
                Some((metrics_addr, stop, task))
            }
            None => None,
        };
        Ok(Server {
            addr,
            store_path,
            store,
            runtime,
            shutdown_timeout: config.shutdown_timeout,
            metrics,
            stop,
            accept_loop,
            metrics_endpoint,
            traces,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to reach the server, e.g. `http://127.0.0.1:3000`
    /// (an unspecified listen address is reached through loopback).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }

    /// The key-value database file (for a Redis store, its URL as given).
    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    /// The key-value store.
    pub fn store(&self) -> &StoreLocation {
        &self.store
    }

    /// How many component instances may live at once; requests beyond them
    /// wait up to the queue timeout.
    pub fn instance_limit(&self) -> u32 {
        self.runtime.instance_limit()
    }

    /// How many key-value calls guests have made so far, by kind.
    pub fn kv_stats(&self) -> KvStats {
        self.runtime.keyvalue().stats()
    }

    /// The address Prometheus metrics are served on, when
    /// [`Config::metrics_listen`] is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint.as_ref().map(|(addr, _, _)| *addr)
    }

    /// The server's metrics now, in the Prometheus text format (what
    /// `GET /metrics` answers). Without [`Config::metrics_listen`] nothing
    /// is recorded: counters and histograms stay at zero.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// A client for the component's typed `edge:responses/responses` export.
    pub fn responses(&self) -> Responses {
        Responses::new(self.runtime.clone())
    }

    /// Stops accepting connections and waits (a few seconds at most) for
    /// in-flight requests to finish, then (up to the shutdown timeout) for
    /// instances still running background responses, then for their
    /// spans, which it exports.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Some((_, stop, task)) = self.metrics_endpoint {
            let _ = stop.send(());
            if let Err(err) = task.await {
                tracing::error!("the metrics endpoint failed: {err}");
            }
        }
        if let Err(err) = self.accept_loop.await {
            tracing::error!("the accept loop failed: {err}");
        }
        // Background responses run on after their answer: give them time to
        // finish; one cut off is failed by its lease.
        let left = self.runtime.drain(self.shutdown_timeout).await;
        if left > 0 {
            tracing::warn!(
                instances = left,
                "shutdown: gave up waiting for instances still running (background responses); \
                 their leases will mark them failed"
            );
        }
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
    }
}

/// Opens the key-value store, then compiles (or loads) the component off
/// the async runtime's worker threads.
async fn load_runtime(
    config: Config,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<engine::Runtime> {
    let location = config.store_location();
    let kv = keyvalue::KeyValue::open(&location, metrics.clone())
        .await
        .with_context(|| format!("opening the key-value store {location}"))?;
    let instances = instance_limit(config.max_memory);
    tokio::task::spawn_blocking(move || {
        let values = config::ConfigValues::new(config.variables.clone());
        engine::Runtime::load(
            &config.component,
            &config.cache_dir(),
            kv,
            values,
            instances,
            config.queue_timeout,
            metrics,
        )
    })
    .await
    .context("loading the component")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_select_redis_and_anything_else_is_a_file() {
        let redis = StoreLocation::parse("redis://127.0.0.1:6379/2");
        assert_eq!(
            redis,
            StoreLocation::Redis("redis://127.0.0.1:6379/2".into())
        );
        assert!(matches!(
            StoreLocation::parse("VALKEY://h:1"),
            StoreLocation::Redis(_)
        ));
        for path in ["kv.db", "/var/lib/redis.db", "redis:/x", "./redis://x"] {
            assert_eq!(
                StoreLocation::parse(path),
                StoreLocation::Sqlite(path.into()),
                "{path}"
            );
        }
        let mut config = Config::new("c.wasm");
        config.state_dir = "state".into();
        let default = StoreLocation::Sqlite(Path::new("state").join(STORE_FILE));
        assert_eq!(config.store_location(), default);
    }

    #[test]
    fn a_redis_password_is_not_shown() {
        let shown = StoreLocation::parse("redis://user:secret@127.0.0.1:6379/0").to_string();
        assert_eq!(shown, "redis://user:***@127.0.0.1:6379/0");
        let shown = StoreLocation::parse("redis://:secret@h:1").to_string();
        assert_eq!(shown, "redis://:***@h:1");
        let plain = StoreLocation::parse("redis://h:1/3").to_string();
        assert_eq!(plain, "redis://h:1/3");
    }
}
