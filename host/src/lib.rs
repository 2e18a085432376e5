//! A wasmtime host that serves the edge-responses component the way
//! `spin up` does: HTTP requests go to its `wasi:http/incoming-handler`, one
//! fresh instance per request, with `wasi:keyvalue` backed by a SQLite file
//! (Spin's table layout) and `wasi:config` backed by command-line values.
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

mod bindings;
pub mod config;
mod engine;
mod http;
mod keyvalue;
mod outbound;
mod responses;
mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use keyvalue::KvStats;
pub use responses::{ApiError, CallResult, ListQuery, Order, Responses};

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
    /// The key-value database file; default `<state_dir>/sqlite_key_value.db`.
    pub store: Option<PathBuf>,
    /// The compiled-component cache; default `<state_dir>/cache`. Servers
    /// with different state can share one (tests do, to compile once).
    pub cache: Option<PathBuf>,
    /// `wasi:config` values, e.g. `backend_url`.
    pub variables: BTreeMap<String, String>,
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
        }
    }

    /// The key-value database file this config uses.
    pub fn store_path(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| self.state_dir.join(STORE_FILE))
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

/// A running server. Dropping it stops accepting connections; call
/// [`Server::shutdown`] to also wait for in-flight requests.
pub struct Server {
    addr: SocketAddr,
    store_path: PathBuf,
    runtime: Arc<engine::Runtime>,
    stop: oneshot::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl Server {
    /// Binds `config.listen`, loads the component, and starts accepting
    /// connections on the current tokio runtime. Returns once listening.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let listener = http::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let store_path = config.store_path();
        let runtime = Arc::new(load_runtime(config).await?);
        let (stop, stopped) = oneshot::channel();
        let accept_loop = tokio::spawn(http::serve(listener, runtime.clone(), stopped));
        Ok(Server {
            addr,
            store_path,
            runtime,
            stop,
            accept_loop,
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

    /// The key-value database file.
    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    /// How many key-value calls guests have made so far, by kind.
    pub fn kv_stats(&self) -> KvStats {
        self.runtime.keyvalue().stats()
    }

    /// A client for the component's typed `edge:responses/responses` export.
    pub fn responses(&self) -> Responses {
        Responses::new(self.runtime.clone())
    }

    /// Stops accepting connections and waits (a few seconds at most) for
    /// in-flight requests to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.accept_loop.await {
            tracing::error!("the accept loop failed: {err}");
        }
    }
}

/// Opens the key-value store and compiles (or loads) the component, off the
/// async runtime's worker threads.
async fn load_runtime(config: Config) -> anyhow::Result<engine::Runtime> {
    tokio::task::spawn_blocking(move || {
        let store_path = config.store_path();
        let kv = keyvalue::KeyValue::open(&store_path)
            .with_context(|| format!("opening the key-value store {}", store_path.display()))?;
        let values = config::ConfigValues::new(config.variables.clone());
        engine::Runtime::load(&config.component, &config.cache_dir(), kv, values)
    })
    .await
    .context("loading the component")?
}
