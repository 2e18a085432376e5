//! `edge-responses-host`: command-line flags to a [`Config`], then serve until
//! Ctrl-C (or SIGTERM). Traces are exported when the standard
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` variable is set (see
//! [`TraceExport::from_env`]), and flushed on the way out.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use edge_responses_host::config::{parse_variable, variables_from_env};
use edge_responses_host::{
    parse_duration, parse_size, Config, Server, TraceExport, DEFAULT_COMPONENT, DEFAULT_LISTEN,
    DEFAULT_STATE_DIR, INSTANCE_MEMORY,
};
use tracing_subscriber::EnvFilter;

/// Serves the edge-responses component (the OpenAI Responses API) over HTTP.
///
/// Config values for the component come from `EDGE_RESPONSES_<NAME>`
/// environment variables (e.g. EDGE_RESPONSES_BACKEND_URL sets `backend_url`),
/// overridden by `--var` and the convenience flags below.
#[derive(Parser, Debug)]
#[command(name = "edge-responses-host", version)]
struct Flags {
    /// Address to listen on.
    #[arg(long, env = "EDGE_RESPONSES_LISTEN", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// The component to serve.
    #[arg(long, env = "EDGE_RESPONSES_COMPONENT", default_value = DEFAULT_COMPONENT)]
    component: PathBuf,

    /// Key-value store: a SQLite file, or a Redis / Valkey database as
    /// redis://HOST:PORT[/DB] [default: <state-dir>/sqlite_key_value.db].
    #[arg(long, env = "EDGE_RESPONSES_STORE")]
    store: Option<PathBuf>,

    /// Directory for the key-value database and the compiled-component cache.
    #[arg(long, env = "EDGE_RESPONSES_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Memory budget for component instances (e.g. 2GiB, 512MiB): as many
    /// instances live at once as fit, at the memory one reserves.
    #[arg(long, env = "EDGE_RESPONSES_MAX_MEMORY", default_value = "2GiB", value_parser = parse_size)]
    max_memory: u64,

    /// How long a request waits for a free instance before it gets a 503
    /// (e.g. 10s, 500ms).
    #[arg(long, env = "EDGE_RESPONSES_QUEUE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    queue_timeout: Duration,

    /// A config value for the component (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_variable)]
    vars: Vec<(String, String)>,

    /// Base URL of the OpenAI-compatible backend (config `backend_url`).
    #[arg(long)]
    backend_url: Option<String>,

    /// API key sent to the backend (config `backend_api_key`).
    #[arg(long)]
    backend_api_key: Option<String>,

    /// Comma-separated API keys clients may use (config `api_keys`).
    #[arg(long)]
    api_keys: Option<String>,

    /// Serve Prometheus metrics at GET /metrics on this address (its own
    /// listener; off by default).
    #[arg(long, env = "EDGE_RESPONSES_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// How long a WebSocket connection (`GET /v1/responses` upgraded) may
    /// live before the server closes it (e.g. 60m, 90s).
    #[arg(long, env = "EDGE_RESPONSES_WEBSOCKET_MAX_AGE", default_value = "60m", value_parser = parse_duration)]
    websocket_max_age: Duration,

    /// How long shutting down (SIGTERM, Ctrl-C) waits for background
    /// responses still running once connections are closed (e.g. 30s, 2m).
    #[arg(long, env = "EDGE_RESPONSES_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Log line format: `text` (readable) or `json` (one JSON object per
    /// line).
    #[arg(long, env = "EDGE_RESPONSES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// `tracing-subscriber`'s readable lines: time, level, target, message,
    /// `name=value` fields.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, and the
    /// event's fields (the message as `message`) at the top level.
    Json,
}

impl Flags {
    /// The component's config values: environment, then `--var`, then the
    /// convenience flags, later sources winning.
    fn variables(&self) -> BTreeMap<String, String> {
        let mut variables = variables_from_env(std::env::vars());
        variables.extend(self.vars.iter().cloned());
        let named = [
            ("backend_url", &self.backend_url),
            ("backend_api_key", &self.backend_api_key),
            ("api_keys", &self.api_keys),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                variables.insert(name.to_owned(), value.clone());
            }
        }
        variables
    }

    fn into_config(self) -> Config {
        Config {
            variables: self.variables(),
            component: self.component,
            listen: self.listen,
            state_dir: self.state_dir,
            store: self.store,
            cache: None,
            max_memory: self.max_memory,
            queue_timeout: self.queue_timeout,
            metrics_listen: self.metrics_listen,
            websocket_max_age: self.websocket_max_age,
            shutdown_timeout: self.shutdown_timeout,
            // From the environment, in `main`.
            traces: None,
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a terminal, not for a file or a log collector.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(flags.log_format);
    let mut config = flags.into_config();
    // Variables that are not Unicode are not OpenTelemetry's.
    let env = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    config.traces = TraceExport::from_env(env)?;
    let traces = config
        .traces
        .as_ref()
        .map(|export| format!("{} ({})", export.endpoint, export.protocol.as_str()));
    let backend = config
        .variables
        .get("backend_url")
        .cloned()
        .unwrap_or_else(|| "not set".to_owned());
    let budget = config.max_memory;
    let queue_timeout = config.queue_timeout;
    let server = Server::start(config).await?;
    println!(
        "edge-responses listening on {} (backend: {backend}, store: {})",
        server.url(),
        server.store()
    );
    println!(
        "instance limit: {} at once ({} MiB budget / {} KiB per instance); \
         requests beyond it wait up to {:?}, then get 503",
        server.instance_limit(),
        budget >> 20,
        INSTANCE_MEMORY >> 10,
        queue_timeout
    );
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics on http://{metrics}/metrics");
    }
    if let Some(traces) = traces {
        println!("traces to {traces}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
