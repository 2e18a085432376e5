//! `cargo run --release -p bench`: what edge-responses adds on top of its
//! chat-completions backend, measured side by side in one run.
//!
//! The scripted backend (instant replies, request log off) runs on a thread
//! of its own; the host serves the built component in this process on a
//! multi-threaded runtime; the load generator runs on the main thread. All
//! three listen and connect on loopback only. Each edge-responses number is
//! paired with the same work sent straight to the backend: the exact
//! `/v1/chat/completions` body the component sent for that request, captured
//! from the backend's log, so the difference is what edge-responses adds.
//!
//! After them, the cost of one remote MCP tool round trip (see [`mcp`]):
//! a create that lists and calls a tool of a real MCP server, against its
//! parts measured alone; then what the request log and metrics cost (see
//! [`ops`]): four host processes, logging and metrics on, off, off again
//! as the control, and on with OTLP trace export, taking requests in turn;
//! then the per-turn latency of an agent loop over one WebSocket against
//! one HTTP request per turn (see [`socket`]).
//!
//! The last phase, many slow streams at once (see [`concurrency`]), runs the
//! host in a child process instead (this binary, re-run with a hidden
//! flag), so its memory and file descriptors are measured alone. With
//! `--compare NAME=URL` another Responses server, pointed at the bench's
//! backend (`--backend-listen ADDR`), gets the same probes side by side
//! (see [`compare`]).
//!
//! Results go to stdout, and to `bench/results.json` and `bench/results.md`
//! (a `--quick` run writes to `target/bench-quick/` instead, and a partial
//! run, `--only` or `--streams`, to `target/bench-partial/`, so neither ever
//! replaces the recorded results; `--json PATH` picks the JSON file and the
//! markdown goes beside it).

mod client;
mod compare;
mod concurrency;
mod mcp;
mod ops;
mod report;
mod socket;
mod stats;
mod storage;
mod system;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use edge_responses_host::{Config, KvStats, Server, DEFAULT_COMPONENT, STORE_FILE};
use scripted_backend::{Backend, Reply, DEFAULT_MODEL};
use serde_json::{json, Value};

use client::{run_concurrent, run_for, Conn, Probe, Sample, Watch};
use concurrency::Phase;
use report::{format_count, Report, Row, Section, Target, Unit};
use stats::Percentiles;
use system::{CpuTimes, RssSampler};

/// Command that builds the component.
const BUILD_COMMAND: &str =
    "cargo build -p edge-responses --target wasm32-wasip2 --profile component";

/// What the instant backend answers every request with (streamed word by
/// word).
const REPLY_TEXT: &str = "Hello! This is a short benchmark reply.";

/// Connections used for every concurrent phase.
const CONCURRENCY: usize = 16;

/// Conversation depths whose continuation cost is measured.
const DEPTHS: [usize; 3] = [1, 10, 100];

/// The backend's thread name as `/proc` shows it (cut to 15 bytes), to
/// count its CPU time apart from the host's.
const BACKEND_THREAD: &str = "scripted-backen";

/// The hidden flag the bench re-runs itself with to fill the compiled
/// component cache in a separate process.
const COMPILE_ONLY_FLAG: &str = "--compile-only";

const USAGE: &str = "usage: bench [--quick] [--json PATH] [--component PATH] [--only concurrency|mcp|ops|socket]
             [--streams N,...] [--backend-listen ADDR] [--compare NAME=URL]...

  --quick                short smoke run (about a minute); results go to
                         target/bench-quick/ unless --json is given
  --json PATH            write the JSON results to PATH (markdown beside it, .md)
  --component PATH       measure this component instead of building the
                         current one (to compare two builds)
  --only concurrency     run only the concurrency phase: many slow streams
                         (20 chunks, 250 ms apart) at once through a host
                         process; results go to target/bench-partial/
  --only mcp             run only the MCP phase: a create that lists and calls
                         one tool of tests/python/mcp_server.py against its
                         parts (skipped when the `mcp` Python package is
                         missing); results go to target/bench-partial/
  --only ops             run only the logging and metrics phase: the host
                         binary four times, request log and metrics on,
                         off, off again (the A/A control), and on with
                         OTLP trace export to a local collector stand-in,
                         taking requests in turn; results go to
                         target/bench-partial/
  --only socket          run only the WebSocket phase: agent loops of 10
                         turns over one WebSocket and over one HTTP request
                         per turn, side by side; results go to
                         target/bench-partial/
  --streams N,...        stream counts of the concurrency phase (default
                         1000,5000; quick 100,300); results go to
                         target/bench-partial/
  --backend-listen ADDR  the scripted backend listens on this loopback
                         address, e.g. 127.0.0.1:8099 (default: a free port)
  --compare NAME=URL     also measure the Responses server at URL (its base,
                         e.g. http://127.0.0.1:4000) side by side with the
                         same requests; repeatable. Needs --backend-listen:
                         start that server with OpenAI base URL
                         http://ADDR/v1 and model test-model first.

Builds the component first (cargo build -p edge-responses --target wasm32-wasip2 --profile component).";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    /// A component to measure as it is, instead of building one.
    component: Option<PathBuf>,
    compile_only: bool,
    /// Run one phase alone.
    only: Option<Only>,
    /// Stream counts of the concurrency phase, instead of the defaults.
    streams: Option<Vec<usize>>,
    backend_listen: Option<SocketAddr>,
    compare: Vec<compare::Target>,
    /// Serve the host for the concurrency phase against this backend URL
    /// (the hidden flag of the child process).
    serve_host: Option<String>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut options = Options::default();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--json" => {
                    let path = args.next().context("--json needs a path")?;
                    options.json = Some(PathBuf::from(path));
                }
                "--component" => {
                    let path = args.next().context("--component needs a path")?;
                    options.component = Some(PathBuf::from(path));
                }
                "--only" => match args.next().as_deref() {
                    Some("concurrency") => options.only = Some(Only::Concurrency),
                    Some("mcp") => options.only = Some(Only::Mcp),
                    Some("ops") => options.only = Some(Only::Ops),
                    Some("socket") => options.only = Some(Only::Socket),
                    other => {
                        bail!("--only takes `concurrency`, `mcp`, `ops` or `socket`, got {other:?}")
                    }
                },
                "--streams" => {
                    let list = args
                        .next()
                        .context("--streams needs a list, e.g. 1000,5000")?;
                    options.streams = Some(parse_streams(&list)?);
                }
                "--backend-listen" => {
                    let addr = args.next().context("--backend-listen needs an address")?;
                    let addr: SocketAddr = addr
                        .parse()
                        .with_context(|| format!("--backend-listen: {addr:?} is not IP:PORT"))?;
                    if !addr.ip().is_loopback() {
                        bail!("--backend-listen: only loopback addresses, got {addr}");
                    }
                    options.backend_listen = Some(addr);
                }
                "--compare" => {
                    let target = args.next().context("--compare needs NAME=URL")?;
                    let target = compare::Target::parse(&target)?;
                    if options.compare.iter().any(|t| t.name == target.name) {
                        bail!("--compare: the name {:?} is given twice", target.name);
                    }
                    options.compare.push(target);
                }
                COMPILE_ONLY_FLAG => options.compile_only = true,
                concurrency::SERVE_HOST_FLAG => {
                    let url = args.next().context("the host needs a backend URL")?;
                    options.serve_host = Some(url);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        if let Some(only @ (Only::Mcp | Only::Ops | Only::Socket)) = options.only {
            if options.streams.is_some() || !options.compare.is_empty() {
                bail!(
                    "--only {} runs neither the concurrency phase (--streams) nor the \
                     side-by-side probes (--compare)",
                    only.name()
                );
            }
        }
        if !options.compare.is_empty() && options.backend_listen.is_none() {
            bail!(
                "--compare needs --backend-listen ADDR (e.g. 127.0.0.1:8099): the compared \
                 server must answer from the bench's backend, at http://ADDR/v1"
            );
        }
        Ok(options)
    }

    /// Whether some phase is left out or changed, so the results are not
    /// the recorded ones.
    fn partial(&self) -> bool {
        self.only.is_some() || self.streams.is_some()
    }

    /// Whether the phases of [`measure`] run.
    fn runs_main_phases(&self) -> bool {
        self.only.is_none()
    }

    fn runs_mcp(&self) -> bool {
        matches!(self.only, None | Some(Only::Mcp))
    }

    fn runs_ops(&self) -> bool {
        matches!(self.only, None | Some(Only::Ops))
    }

    fn runs_socket(&self) -> bool {
        matches!(self.only, None | Some(Only::Socket))
    }

    fn runs_concurrency(&self) -> bool {
        matches!(self.only, None | Some(Only::Concurrency))
    }
}

/// The phase `--only` runs alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Concurrency,
    Mcp,
    Ops,
    Socket,
}

impl Only {
    fn name(self) -> &'static str {
        match self {
            Only::Concurrency => "concurrency",
            Only::Mcp => "mcp",
            Only::Ops => "ops",
            Only::Socket => "socket",
        }
    }
}

/// `1000,5000` as stream counts.
fn parse_streams(list: &str) -> anyhow::Result<Vec<usize>> {
    list.split(',')
        .map(|count| match count.trim().parse::<usize>() {
            Ok(count) if count > 0 => Ok(count),
            _ => bail!("--streams: {count:?} is not a positive number"),
        })
        .collect()
}

/// How many requests each phase sends.
struct Plan {
    mode: &'static str,
    warmup: usize,
    sequential: usize,
    concurrent_per_conn: usize,
    /// The concurrent phase alternates this many blocks of each target.
    concurrent_blocks: usize,
    streaming: usize,
    throughput: Duration,
    chain: usize,
    continuation: usize,
    /// Rounds of the MCP phase (four requests each).
    mcp_rounds: usize,
    /// Rounds of the logging and metrics phase (one request to each of
    /// four hosts and one to the backend).
    ops: ops::Counts,
    /// Chains of the WebSocket phase, each way (and chains of warm-up).
    socket_chains: usize,
    socket_warmup: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                mode: "quick",
                warmup: 64,
                sequential: 100,
                concurrent_per_conn: 8,
                concurrent_blocks: 2,
                streaming: 60,
                throughput: Duration::from_secs(1),
                chain: *DEPTHS.last().unwrap_or(&1),
                continuation: 20,
                mcp_rounds: 100,
                ops: ops::Counts {
                    warmup: 50,
                    rounds: 300,
                },
                socket_chains: 10,
                socket_warmup: 2,
            }
        } else {
            Plan {
                mode: "full",
                warmup: 400,
                sequential: 2000,
                concurrent_per_conn: 150,
                concurrent_blocks: 5,
                streaming: 500,
                throughput: Duration::from_secs(10),
                chain: *DEPTHS.last().unwrap_or(&1),
                continuation: 600,
                mcp_rounds: 2000,
                ops: ops::Counts {
                    warmup: 200,
                    rounds: 4000,
                },
                socket_chains: 200,
                socket_warmup: 10,
            }
        }
    }
}

/// Builds the component (a no-op when it is up to date), so the bench runs
/// from a clean clone with one command and always measures current code.
fn build_component(root: &Path) -> anyhow::Result<()> {
    progress(&format!("building the component: {BUILD_COMMAND}"));
    // Best effort: the target may already be there, or rustup absent.
    let _ = std::process::Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(BUILD_COMMAND.split_whitespace().skip(1))
        .current_dir(root)
        .status()
        .context("running cargo to build the component")?;
    if !status.success() {
        bail!("building the component failed: {BUILD_COMMAND}");
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let root = workspace_root();
    let component = match &options.component {
        Some(path) => std::path::absolute(path)?,
        None => root.join(DEFAULT_COMPONENT),
    };
    // The compiled component is cached here across runs; every run gets a
    // fresh key-value store in a temporary directory.
    let state_dir = root.join("target/bench-state");
    if let Some(backend_url) = &options.serve_host {
        let store = tempfile::tempdir().context("creating a temporary store directory")?;
        let config = host_config(&component, &state_dir, store.path(), backend_url);
        return concurrency::serve_host(config);
    }
    if let Some(addr) = options
        .backend_listen
        .filter(|_| !options.compare.is_empty())
    {
        progress(&format!(
            "compared servers must answer from the bench's backend: OpenAI base URL http://{addr}/v1, model {DEFAULT_MODEL} (any API key)"
        ));
        for target in &options.compare {
            target.check_reachable()?;
        }
    }
    if !options.compile_only && options.component.is_none() {
        build_component(&root)?;
    }
    if !component.is_file() {
        bail!(
            "{} is missing; build the component first:\n\n    {BUILD_COMMAND}\n",
            component.display()
        );
    }
    if options.compile_only {
        return compile_only(&component, &state_dir);
    }
    let plan = Plan::new(options.quick);
    let settings = concurrency::Settings::new(options.quick, options.streams.clone());
    let json_path = options.json.clone().unwrap_or_else(|| {
        if options.quick {
            root.join("target/bench-quick/results.json")
        } else if options.partial() {
            root.join("target/bench-partial/results.json")
        } else {
            root.join("bench/results.json")
        }
    });

    progress("compiling the component, or loading it from the cache");
    fill_compile_cache(&component)?;

    let component_bytes = std::fs::metadata(&component)?.len();
    let load_average = system::load_average();

    let backend_listen = options
        .backend_listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let backend = Backend::start_in_thread_on(backend_listen)?;
    backend.set_recording(false);
    backend.set_default(Reply::text(REPLY_TEXT));

    let measured = if !options.runs_main_phases() {
        None
    } else {
        Some(measure_in_process(
            &plan,
            &component,
            &state_dir,
            &backend,
            &options.compare,
            component_bytes,
        )?)
    };
    let mcp = if options.runs_mcp() {
        Some(mcp::run(
            plan.mcp_rounds,
            plan.warmup / 4,
            &component,
            &state_dir,
            &backend,
        ))
    } else {
        None
    };
    let ops = options
        .runs_ops()
        .then(|| ops::run(plan.ops, &component, &state_dir, &backend));
    let socket = options.runs_socket().then(|| {
        socket::run(
            plan.socket_chains,
            plan.socket_warmup,
            &component,
            &state_dir,
            &backend,
        )
    });
    let phase = if options.runs_concurrency() {
        Some(concurrency::run(
            &settings,
            &component,
            &state_dir,
            &backend,
            &options.compare,
        )?)
    } else {
        None
    };

    let mode = match (options.quick, options.partial()) {
        (false, false) => plan.mode,
        (true, false) => "quick",
        (false, true) => "partial",
        (true, true) => "quick, partial",
    };
    let report = build_report(
        &plan,
        mode,
        measured.as_ref(),
        Standalone {
            mcp: mcp.as_ref(),
            ops: ops.as_ref(),
            socket: socket.as_ref(),
        },
        phase.as_ref(),
        &options.compare,
        load_average,
    );
    print!("{}", report.to_text());

    let markdown_path = json_path.with_extension("md");
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json())? + "\n";
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&markdown_path, report.to_markdown())
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    progress(&format!(
        "wrote {} and {}; {} target(s) missed",
        json_path.display(),
        markdown_path.display(),
        report.misses()
    ));
    Ok(())
}

/// The phases before the concurrency phase: the host serves the component
/// in this process, on a runtime of its own.
fn measure_in_process(
    plan: &Plan,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
    compare: &[compare::Target],
    component_bytes: u64,
) -> anyhow::Result<(Measured, Memory)> {
    let rss_before_host = system::rss_bytes();
    let store = tempfile::tempdir().context("creating a temporary store directory")?;
    let host_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = host_runtime.block_on(Server::start(host_config(
        component,
        state_dir,
        store.path(),
        &backend.url(),
    )))?;
    let rss_idle = system::rss_bytes();
    progress(&format!(
        "host on {}, backend on {}",
        server.url(),
        backend.url()
    ));

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = client_runtime.block_on(async {
        let mut measured = measure(plan, backend, &server, compare).await?;
        progress("measuring storage per agent turn");
        measured.storage = Some(storage::measure(&server).await?);
        anyhow::Ok(measured)
    });
    host_runtime.block_on(server.shutdown());
    let measured = measured?;

    let memory = Memory {
        component_bytes,
        rss_before_host,
        rss_idle,
        rss_peak: measured.rss_peak,
    };
    Ok((measured, memory))
}

/// The workspace this bench belongs to.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn progress(message: &str) {
    eprintln!("[bench] {message}");
}

fn host_config(component: &Path, state_dir: &Path, store_dir: &Path, backend_url: &str) -> Config {
    let mut config = Config::new(component);
    config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.state_dir = state_dir.to_path_buf();
    config.store = Some(store_dir.join(STORE_FILE));
    config
        .variables
        .insert("backend_url".to_owned(), backend_url.to_owned());
    config
}

/// Starts the host once in a child process, so the measured process loads
/// the compiled component from the cache and its memory figures do not
/// include the compiler's.
fn fill_compile_cache(component: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let status = std::process::Command::new(exe)
        .arg(COMPILE_ONLY_FLAG)
        .arg("--component")
        .arg(component)
        .status()
        .context("running the bench to compile the component")?;
    if !status.success() {
        bail!("compiling the component failed ({status})");
    }
    Ok(())
}

/// The child side of [`fill_compile_cache`].
fn compile_only(component: &Path, state_dir: &Path) -> anyhow::Result<()> {
    let store = tempfile::tempdir()?;
    let backend = Backend::start_in_thread()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = host_config(component, state_dir, store.path(), &backend.url());
        Server::start(config).await?.shutdown().await;
        anyhow::Ok(())
    })
}

/// Key-value calls per request, by kind.
#[derive(Debug, Clone)]
struct KvPerRequest {
    total: f64,
    by_kind: Vec<(&'static str, f64)>,
}

impl KvPerRequest {
    fn between(before: &KvStats, after: &KvStats, requests: usize) -> KvPerRequest {
        let delta = after.since(before);
        let per = |count: u64| count as f64 / requests.max(1) as f64;
        KvPerRequest {
            total: per(delta.total()),
            by_kind: delta
                .fields()
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .map(|(name, count)| (name, per(count)))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        self.by_kind
            .iter()
            .map(|(name, count)| format!("{name}={}", format_count(*count)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn to_json(&self) -> Value {
        let by_kind: serde_json::Map<String, Value> = self
            .by_kind
            .iter()
            .map(|(name, count)| ((*name).to_owned(), json!(count)))
            .collect();
        json!({ "total": self.total, "by_kind": by_kind })
    }
}

/// Paired latencies: through edge-responses and straight to the backend.
#[derive(Debug, Clone, Copy)]
struct Pair {
    edge: Percentiles,
    backend: Percentiles,
}

impl Pair {
    fn of(edge: &[Sample], backend: &[Sample], pick: fn(&Sample) -> Duration) -> Pair {
        Pair {
            edge: Percentiles::of(edge.iter().map(pick)),
            backend: Percentiles::of(backend.iter().map(pick)),
        }
    }

    fn to_json(self) -> Value {
        json!({ "edge_responses": self.edge.to_json(), "backend_alone": self.backend.to_json() })
    }
}

struct Continuation {
    depth: usize,
    latency: Pair,
    kv: KvPerRequest,
    chat_request_bytes: usize,
}

struct Measured {
    sequential: Pair,
    concurrent: Pair,
    kv_create: KvPerRequest,
    ttft: Pair,
    stream_total: Pair,
    edge_rps: f64,
    backend_rps: f64,
    throughput_requests: (u64, u64),
    /// Requests per second of the cheapest request, a 404.
    floor_rps: f64,
    cpu: CpuPerRequest,
    continuations: Vec<Continuation>,
    rss_peak: u64,
    /// Concurrency-1 numbers side by side with each `--compare` server.
    compared: Vec<Result<compare::Single, String>>,
    /// Stored bytes per agent turn.
    storage: Option<storage::StorageCost>,
}

/// CPU milliseconds per request in the throughput phase, by thread group.
#[derive(Debug, Clone, Copy)]
struct CpuPerRequest {
    /// Everything but the backend and the load generator, while requests
    /// went through edge-responses.
    host: f64,
    /// The backend thread while requests went through edge-responses.
    backend_behind_host: f64,
    /// The backend thread while requests went straight to it.
    backend: f64,
    client_edge: f64,
    client_direct: f64,
}

impl CpuPerRequest {
    /// From `(backend, main thread, rest)` CPU times of each phase.
    fn new(
        edge_phase: (Duration, Duration, Duration),
        edge_requests: u64,
        direct_phase: (Duration, Duration, Duration),
        direct_requests: u64,
    ) -> CpuPerRequest {
        let per =
            |time: Duration, requests: u64| time.as_secs_f64() * 1000.0 / requests.max(1) as f64;
        CpuPerRequest {
            host: per(edge_phase.2, edge_requests),
            backend_behind_host: per(edge_phase.0, edge_requests),
            backend: per(direct_phase.0, direct_requests),
            client_edge: per(edge_phase.1, edge_requests),
            client_direct: per(direct_phase.1, direct_requests),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "host_ms": self.host,
            "backend_behind_host_ms": self.backend_behind_host,
            "backend_alone_ms": self.backend,
            "load_generator_edge_ms": self.client_edge,
            "load_generator_direct_ms": self.client_direct,
        })
    }
}

struct Memory {
    component_bytes: u64,
    rss_before_host: u64,
    rss_idle: u64,
    rss_peak: u64,
}

/// Sends `probe` through edge-responses once with the backend's request log
/// on, and returns the chat-completions body the component sent.
async fn capture_chat_request(
    backend: &Backend,
    conn: &mut Conn,
    probe: &Probe,
) -> anyhow::Result<Vec<u8>> {
    let (sent, mut chats) = recorded(backend, conn, probe).await;
    let request = chats.pop();
    sent?;
    Ok(request
        .context("the component sent no chat-completions request")?
        .raw_body)
}

/// Sends `probe` once with the backend's request log on: its answer, and
/// the chat-completions requests the component sent for it.
pub(crate) async fn recorded(
    backend: &Backend,
    conn: &mut Conn,
    probe: &Probe,
) -> (
    anyhow::Result<Sample>,
    Vec<scripted_backend::RecordedRequest>,
) {
    backend.clear_requests();
    backend.set_recording(true);
    let sent = conn.exchange(probe).await;
    backend.set_recording(false);
    let chats = backend.chat_requests();
    backend.clear_requests();
    (sent, chats)
}

/// Alternates `edge` and `direct` on one connection each, `count` times.
async fn alternate(
    count: usize,
    edge_conn: &mut Conn,
    edge: &Probe,
    direct_conn: &mut Conn,
    direct: &Probe,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let mut edge_samples = Vec::with_capacity(count);
    let mut direct_samples = Vec::with_capacity(count);
    for _ in 0..count {
        edge_samples.push(edge_conn.exchange(edge).await?);
        direct_samples.push(direct_conn.exchange(direct).await?);
    }
    Ok((edge_samples, direct_samples))
}

fn response_id(sample: &Sample) -> anyhow::Result<String> {
    let response: Value = serde_json::from_slice(&sample.body).context("response is not JSON")?;
    response["id"]
        .as_str()
        .map(str::to_owned)
        .context("response has no id")
}

fn total(sample: &Sample) -> Duration {
    sample.total
}

fn first_token(sample: &Sample) -> Duration {
    sample.first.unwrap_or(sample.total)
}

async fn measure(
    plan: &Plan,
    backend: &Backend,
    server: &Server,
    compare: &[compare::Target],
) -> anyhow::Result<Measured> {
    let edge_addr = server.addr();
    let backend_addr = backend.addr();
    let mut edge_conn = Conn::connect(edge_addr).await?;
    let mut direct_conn = Conn::connect(backend_addr).await?;

    let create = json!({ "model": DEFAULT_MODEL, "input": "Say hi" });
    let create_stream = json!({ "model": DEFAULT_MODEL, "input": "Say hi", "stream": true });
    let edge = Probe::responses(&create);
    let edge_stream = Probe::responses(&create_stream);
    let direct = Probe::chat(
        capture_chat_request(backend, &mut edge_conn, &edge).await?,
        Watch::Nothing,
    );
    let direct_stream = Probe::chat(
        capture_chat_request(backend, &mut edge_conn, &edge_stream).await?,
        Watch::ChatContent,
    );

    progress(&format!(
        "warming up ({} requests per target and concurrency)",
        plan.warmup
    ));
    let edge_conns = Conn::connect_many(edge_addr, CONCURRENCY).await?;
    let direct_conns = Conn::connect_many(backend_addr, CONCURRENCY).await?;
    let per_conn = plan.warmup.div_ceil(CONCURRENCY);
    let (mut edge_conns, _) = run_concurrent(edge_conns, per_conn, &edge).await?;
    let (mut direct_conns, _) = run_concurrent(direct_conns, per_conn, &direct).await?;
    alternate(
        plan.warmup / 4,
        &mut edge_conn,
        &edge,
        &mut direct_conn,
        &direct,
    )
    .await?;
    alternate(
        plan.warmup / 4,
        &mut edge_conn,
        &edge_stream,
        &mut direct_conn,
        &direct_stream,
    )
    .await?;

    progress(&format!(
        "non-streaming latency, concurrency 1 ({} requests per target)",
        plan.sequential
    ));
    let kv_before = server.kv_stats();
    let (edge_samples, direct_samples) = alternate(
        plan.sequential,
        &mut edge_conn,
        &edge,
        &mut direct_conn,
        &direct,
    )
    .await?;
    let kv_create = KvPerRequest::between(&kv_before, &server.kv_stats(), plan.sequential);
    let sequential = Pair::of(&edge_samples, &direct_samples, total);

    progress(&format!(
        "non-streaming latency, concurrency {CONCURRENCY} ({} requests per target)",
        plan.concurrent_per_conn * CONCURRENCY
    ));
    let block = plan.concurrent_per_conn.div_ceil(plan.concurrent_blocks);
    let (mut edge_samples, mut direct_samples) = (Vec::new(), Vec::new());
    for _ in 0..plan.concurrent_blocks {
        let (conns, mut samples) = run_concurrent(edge_conns, block, &edge).await?;
        edge_conns = conns;
        edge_samples.append(&mut samples);
        let (conns, mut samples) = run_concurrent(direct_conns, block, &direct).await?;
        direct_conns = conns;
        direct_samples.append(&mut samples);
    }
    let concurrent = Pair::of(&edge_samples, &direct_samples, total);

    progress(&format!(
        "streaming time to first token ({} requests per target)",
        plan.streaming
    ));
    let (edge_samples, direct_samples) = alternate(
        plan.streaming,
        &mut edge_conn,
        &edge_stream,
        &mut direct_conn,
        &direct_stream,
    )
    .await?;
    let ttft = Pair::of(&edge_samples, &direct_samples, first_token);
    let stream_total = Pair::of(&edge_samples, &direct_samples, total);

    progress(&format!(
        "building a conversation {} responses deep",
        plan.chain
    ));
    let mut chain: Vec<String> = Vec::with_capacity(plan.chain);
    for turn in 1..=plan.chain {
        let mut body =
            json!({ "model": DEFAULT_MODEL, "input": format!("Question number {turn}") });
        if let Some(previous) = chain.last() {
            body["previous_response_id"] = json!(previous);
        }
        let sample = edge_conn
            .exchange(&Probe::responses(&body).keeping_body())
            .await?;
        chain.push(response_id(&sample)?);
    }

    let mut continuations = Vec::new();
    for depth in DEPTHS {
        progress(&format!(
            "continuation at depth {depth} ({} requests per target)",
            plan.continuation
        ));
        let previous = chain
            .get(depth - 1)
            .context("the conversation is not that deep")?;
        let body = json!({
            "model": DEFAULT_MODEL,
            "input": "One more question",
            "previous_response_id": previous,
        });
        let edge = Probe::responses(&body);
        let chat = capture_chat_request(backend, &mut edge_conn, &edge).await?;
        let chat_request_bytes = chat.len();
        let direct = Probe::chat(chat, Watch::Nothing);
        alternate(
            plan.continuation / 10,
            &mut edge_conn,
            &edge,
            &mut direct_conn,
            &direct,
        )
        .await?;
        let kv_before = server.kv_stats();
        let (edge_samples, direct_samples) = alternate(
            plan.continuation,
            &mut edge_conn,
            &edge,
            &mut direct_conn,
            &direct,
        )
        .await?;
        continuations.push(Continuation {
            depth,
            latency: Pair::of(&edge_samples, &direct_samples, total),
            kv: KvPerRequest::between(&kv_before, &server.kv_stats(), plan.continuation),
            chat_request_bytes,
        });
    }

    let mut compared = Vec::new();
    for target in compare {
        progress(&format!(
            "side by side with {} ({}): latency and time to first token, concurrency 1",
            target.name, target.url
        ));
        let probes = compare::Probes {
            create: &edge,
            create_stream: &edge_stream,
            chat: &direct,
            chat_stream: &direct_stream,
        };
        let counts = (plan.warmup / 4, plan.sequential, plan.streaming);
        let single = compare::measure_single(target, edge_addr, backend_addr, &probes, counts)
            .await
            .map_err(|err| format!("{err:#}"));
        if let Err(err) = &single {
            progress(&format!("  {} failed: {err}", target.name));
        }
        compared.push(single);
    }

    // Last: it fills the store with tens of thousands of responses, which
    // would make the continuations above pay for a larger file.
    progress(&format!(
        "throughput at concurrency {CONCURRENCY} ({:?} per target)",
        plan.throughput
    ));
    let sampler = RssSampler::start()?;
    let cpu_start = CpuTimes::now(BACKEND_THREAD);
    let (edge_conns, edge_done, edge_elapsed) = run_for(edge_conns, plan.throughput, &edge).await?;
    let cpu_middle = CpuTimes::now(BACKEND_THREAD);
    let rss_peak = sampler.finish();
    let (direct_conns, direct_done, direct_elapsed) =
        run_for(direct_conns, plan.throughput, &direct).await?;
    let cpu_end = CpuTimes::now(BACKEND_THREAD);
    let (edge_conns, floor_done, floor_elapsed) =
        run_for(edge_conns, plan.throughput, &Probe::missing_response()).await?;
    drop((edge_conns, direct_conns));
    let cpu = CpuPerRequest::new(
        cpu_middle.since(&cpu_start),
        edge_done,
        cpu_end.since(&cpu_middle),
        direct_done,
    );

    Ok(Measured {
        sequential,
        concurrent,
        kv_create,
        ttft,
        stream_total,
        edge_rps: edge_done as f64 / edge_elapsed.as_secs_f64(),
        backend_rps: direct_done as f64 / direct_elapsed.as_secs_f64(),
        throughput_requests: (edge_done, direct_done),
        floor_rps: floor_done as f64 / floor_elapsed.as_secs_f64(),
        cpu,
        continuations,
        rss_peak,
        compared,
        storage: None,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// The phases that run a host of their own, between the in-process phases
/// and the concurrency phase.
struct Standalone<'a> {
    mcp: Option<&'a mcp::Outcome>,
    ops: Option<&'a ops::Outcome>,
    socket: Option<&'a socket::Outcome>,
}

fn build_report(
    plan: &Plan,
    mode: &'static str,
    measured: Option<&(Measured, Memory)>,
    standalone: Standalone<'_>,
    phase: Option<&Phase>,
    compare: &[compare::Target],
    load_average: String,
) -> Report {
    let (mut sections, mut details) = match measured {
        Some((m, memory)) => in_process_sections(plan, m, memory),
        None => (Vec::new(), json!({})),
    };
    if let Some(mcp) = standalone.mcp {
        sections.push(mcp.section());
        details["mcp_round_trip"] = mcp.to_json();
    }
    if let Some(ops) = standalone.ops {
        sections.push(ops.section());
        details["logging_and_metrics"] = ops.to_json();
    }
    if let Some(socket) = standalone.socket {
        sections.push(socket.section());
        details["websocket_turns"] = socket.to_json();
    }
    if let Some(phase) = phase {
        sections.push(phase.section());
        details["concurrent_streams"] = phase.to_json();
    }
    let mut compared = Vec::new();
    for (index, target) in compare.iter().enumerate() {
        let single = measured.and_then(|(m, _)| m.compared.get(index));
        sections.push(compare::section(target, index, single, phase));
        compared.push(json!({
            "name": target.name,
            "url": target.url,
            "concurrency_1": single.map(|single| match single {
                Ok(single) => {
                    let named = |[edge, other, backend]: [Percentiles; 3]| {
                        let mut named = json!({
                            "edge_responses": edge.to_json(),
                            "backend_alone": backend.to_json(),
                        });
                        named[target.name.as_str()] = other.to_json();
                        named
                    };
                    json!({
                        "latency": named(single.latency),
                        "time_to_first_token": named(single.ttft),
                    })
                }
                Err(err) => json!({ "error": err }),
            }),
        }));
    }
    if !compare.is_empty() {
        details["compare"] = json!(compared);
    }
    Report {
        date: system::utc_now(),
        cpu: system::cpu_model(),
        cores: system::cores(),
        load_average,
        mode,
        sections,
        details,
    }
}

/// The sections and raw details of the phases before the concurrency
/// phase.
fn in_process_sections(plan: &Plan, m: &Measured, memory: &Memory) -> (Vec<Section>, Value) {
    let added = |pair: &Pair, p99: bool| {
        if p99 {
            pair.edge.p99 - pair.backend.p99
        } else {
            pair.edge.p50 - pair.backend.p50
        }
    };
    let latency_row = |label: String, pair: &Pair, p99: bool| {
        let (edge, backend) = if p99 {
            (pair.edge.p99, pair.backend.p99)
        } else {
            (pair.edge.p50, pair.backend.p50)
        };
        Row::compare(label, Unit::Millis, edge, backend)
    };

    let seq_p50 = added(&m.sequential, false);
    let seq_p99 = added(&m.sequential, true);
    let latency = Section {
        title: "Added latency, non-streaming: POST /v1/responses vs the same chat request straight to the backend".to_owned(),
        columns: None,
        rows: vec![
            latency_row("concurrency 1, p50".to_owned(), &m.sequential, false)
                .target(Target::new("added <= 1 ms", seq_p50 <= 1.0))
                .note(format!("{} requests each", m.sequential.edge.count)),
            latency_row("concurrency 1, p99".to_owned(), &m.sequential, true)
                .target(Target::new("added <= 5 ms", seq_p99 <= 5.0)),
            latency_row(format!("concurrency {CONCURRENCY}, p50"), &m.concurrent, false)
                .note(format!("{} requests each", m.concurrent.edge.count)),
            latency_row(format!("concurrency {CONCURRENCY}, p99"), &m.concurrent, true),
            Row::value("key-value calls per new response", Unit::Count, m.kv_create.total)
                .note(m.kv_create.describe()),
        ],
    };

    let ttft_p50 = added(&m.ttft, false);
    let ttft = Section {
        title: "Added time to first token, streaming: first response.output_text.delta vs first content chunk".to_owned(),
        columns: None,
        rows: vec![
            latency_row("concurrency 1, p50".to_owned(), &m.ttft, false)
                .target(Target::new("added <= 1 ms", ttft_p50 <= 1.0))
                .note(format!("{} requests each", m.ttft.edge.count)),
            latency_row("concurrency 1, p99".to_owned(), &m.ttft, true),
            latency_row("whole stream, p50".to_owned(), &m.stream_total, false),
        ],
    };

    let ratio = m.edge_rps / m.backend_rps;
    let throughput = Section {
        title: format!("Throughput at concurrency {CONCURRENCY}, instant backend"),
        columns: None,
        rows: vec![Row {
            added: None,
            ..Row::compare(
                "requests per second",
                Unit::PerSecond,
                m.edge_rps,
                m.backend_rps,
            )
        }
        .target(Target::new(">= 0.5x backend", ratio >= 0.5))
        .note(format!(
            "{ratio:.2}x the backend; {:?} each, {} and {} requests",
            plan.throughput, m.throughput_requests.0, m.throughput_requests.1
        )),
        Row {
            added: None,
            ..Row::compare(
                "requests per second, 404 (no backend call, no write)",
                Unit::PerSecond,
                m.floor_rps,
                m.backend_rps,
            )
        }
        .note(format!(
            "{:.2}x the backend: GET of a missing response, a fresh instance and one key-value read",
            m.floor_rps / m.backend_rps
        )),
        Row {
            added: None,
            ..Row::compare("CPU time per request", Unit::Millis, m.cpu.host, m.cpu.backend)
        }
        .note(format!(
            "host threads vs the backend thread; the backend behind the host {:.3} ms, load generator {:.3} / {:.3} ms",
            m.cpu.backend_behind_host, m.cpu.client_edge, m.cpu.client_direct
        ))],
    };

    let mut continuation_rows = Vec::new();
    for c in &m.continuations {
        continuation_rows.push(
            latency_row(format!("depth {}, p50", c.depth), &c.latency, false).note(format!(
                "p99 {:.3} ms vs {:.3} ms; chat request {:.1} KiB",
                c.latency.edge.p99,
                c.latency.backend.p99,
                c.chat_request_bytes as f64 / 1024.0
            )),
        );
        continuation_rows.push(
            Row::value(
                format!("depth {}, key-value calls", c.depth),
                Unit::Count,
                c.kv.total,
            )
            .note(c.kv.describe()),
        );
    }
    let shallow = m.continuations.first();
    let deep = m.continuations.last();
    if let (Some(shallow), Some(deep)) = (shallow, deep) {
        let shallow_added = added(&shallow.latency, false);
        let deep_added = added(&deep.latency, false);
        let growth = deep_added / shallow_added;
        continuation_rows.push(
            Row::value(
                format!("added p50, depth {} / depth {}", deep.depth, shallow.depth),
                Unit::Ratio,
                growth,
            )
            .target(Target::new("<= 1.5x", growth <= 1.5)),
        );
    }
    let continuation = Section {
        title: "Continuation (previous_response_id) against conversation depth, backend time subtracted".to_owned(),
        columns: None,
        rows: continuation_rows,
    };

    let component_kib = memory.component_bytes as f64 / 1024.0;
    let memory_section = Section {
        title: "Size and memory (resident set of this process: host, backend and load generator)"
            .to_owned(),
        columns: None,
        rows: vec![
            Row::value("component .wasm", Unit::KiB, component_kib)
                // 1 MiB until the server-side tools (an MCP client, three
                // search providers, citations) added about 130 KiB.
                .target(Target::new("< 1.25 MiB", memory.component_bytes < 5 << 18))
                .note(format!("{} bytes", memory.component_bytes)),
            Row::value(
                "resident, backend and load generator only",
                Unit::MiB,
                memory.rss_before_host as f64 / MIB,
            ),
            Row::value(
                "resident, host idle",
                Unit::MiB,
                memory.rss_idle as f64 / MIB,
            ),
            Row::value(
                "resident, peak under load",
                Unit::MiB,
                memory.rss_peak as f64 / MIB,
            )
            .note("sampled every 10 ms during the edge-responses throughput phase"),
        ],
    };

    let mut details = json!({
        "latency_concurrency_1": m.sequential.to_json(),
        "latency_concurrency_16": m.concurrent.to_json(),
        "kv_per_new_response": m.kv_create.to_json(),
        "time_to_first_token": m.ttft.to_json(),
        "stream_total": m.stream_total.to_json(),
        "throughput": {
            "seconds_per_target": plan.throughput.as_secs_f64(),
            "edge_responses_rps": m.edge_rps,
            "backend_alone_rps": m.backend_rps,
            "edge_responses_requests": m.throughput_requests.0,
            "backend_alone_requests": m.throughput_requests.1,
            "missing_response_404_rps": m.floor_rps,
            "cpu_per_request": m.cpu.to_json(),
        },
        "continuation": m.continuations.iter().map(|c| json!({
            "depth": c.depth,
            "latency": c.latency.to_json(),
            "kv_per_request": c.kv.to_json(),
            "chat_request_bytes": c.chat_request_bytes,
        })).collect::<Vec<_>>(),
        "memory": {
            "component_bytes": memory.component_bytes,
            "rss_before_host_bytes": memory.rss_before_host,
            "rss_idle_bytes": memory.rss_idle,
            "rss_peak_bytes": memory.rss_peak,
        },
        "reply_text": REPLY_TEXT,
        "concurrency": CONCURRENCY,
    });

    let mut sections = vec![latency, ttft, throughput, continuation];
    if let Some(storage) = &m.storage {
        details["storage_per_turn"] = json!({
            "with_tools_bytes": storage.with_tools,
            "without_tools_bytes": storage.without_tools,
            "tools_bytes": storage.tools_bytes,
            "instructions_bytes": storage.instructions_bytes,
        });
        sections.push(storage.section());
    }
    sections.push(memory_section);
    (sections, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn parses_the_concurrency_and_compare_flags() {
        let options = parse(&[
            "--only",
            "concurrency",
            "--streams",
            "10, 20",
            "--backend-listen",
            "127.0.0.1:8099",
            "--compare",
            "a=http://127.0.0.1:4000",
            "--compare",
            "b=http://127.0.0.1:4001/v1",
        ])
        .expect("parses");
        assert!(options.only == Some(Only::Concurrency) && options.partial());
        assert!(!options.runs_mcp() && !options.runs_main_phases());
        let mcp = parse(&["--only", "mcp", "--quick"]).expect("parses");
        assert!(mcp.partial() && mcp.runs_mcp() && !mcp.runs_concurrency());
        assert!(!mcp.runs_main_phases() && !mcp.runs_ops());
        let ops = parse(&["--only", "ops"]).expect("parses");
        assert!(ops.partial() && ops.runs_ops() && !ops.runs_mcp());
        assert!(!ops.runs_main_phases() && !ops.runs_concurrency());
        let socket = parse(&["--only", "socket"]).expect("parses");
        assert!(socket.partial() && socket.runs_socket() && !socket.runs_ops());
        assert!(!socket.runs_main_phases() && !socket.runs_mcp());
        let full = parse(&[]).expect("parses");
        assert!(full.runs_main_phases() && full.runs_mcp() && full.runs_concurrency());
        assert!(full.runs_ops());
        assert!(full.runs_socket());
        assert_eq!(options.streams, Some(vec![10, 20]));
        assert_eq!(
            options.backend_listen,
            Some("127.0.0.1:8099".parse().unwrap())
        );
        let names: Vec<_> = options.compare.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!parse(&["--quick"]).expect("parses").partial());
    }

    #[test]
    fn rejects_flags_that_cannot_work() {
        for args in [
            &["--only", "latency"][..],
            &["--streams", "0"],
            &["--only", "mcp", "--streams", "10"],
            &["--only", "ops", "--streams", "10"],
            &["--only", "socket", "--streams", "10"],
            &[
                "--only",
                "ops",
                "--backend-listen",
                "127.0.0.1:8099",
                "--compare",
                "a=http://127.0.0.1:4000",
            ],
            &[
                "--only",
                "mcp",
                "--backend-listen",
                "127.0.0.1:8099",
                "--compare",
                "a=http://127.0.0.1:4000",
            ],
            &["--streams", "10,x"],
            &["--backend-listen", "0.0.0.0:8099"],
            &["--compare", "a=http://127.0.0.1:4000"],
            &[
                "--backend-listen",
                "127.0.0.1:8099",
                "--compare",
                "a=http://127.0.0.1:4000",
                "--compare",
                "a=http://127.0.0.1:4001",
            ],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
