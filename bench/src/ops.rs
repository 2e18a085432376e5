//! The operations phase: what the request log and Prometheus metrics add
//! to a request, on against off, and what exporting OpenTelemetry traces
//! adds on top of them, in one run (`--only ops` runs it alone).
//!
//! Four host processes serve the component, each the `edge-responses-host`
//! binary (built by the bench with the bench's own profile), each with a
//! store of its own, all on the bench's scripted backend (instant text
//! replies):
//!
//! - `on`: `--log-format json` with `RUST_LOG=info`, stderr to a file (one
//!   JSON request log line per request), and `--metrics-listen` on a free
//!   loopback port, so every request is recorded; the phase scrapes it
//!   once at the end to show the counts are there.
//! - `off`: `RUST_LOG=off` and no metrics listener: the request log's
//!   `tracing` call site is disabled, so its fields are never built, and
//!   metrics are not recorded (a host without a metrics listener records
//!   none).
//! - `off again`: a second, identical `off` process, the A/A control. Two
//!   processes with nothing between them differ by this much (address
//!   layout, which core, what ran just before): the on/off difference has
//!   to stand out from it.
//! - `traced`: `on`, and traces exported over OTLP/HTTP (protobuf, the
//!   default; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the batch processor's
//!   defaults) to a collector stand-in the phase runs on a loopback port
//!   (see [`Collector`]: it answers every `POST /v1/traces` with an empty
//!   200, and counts the requests, their bytes and the spans in them). Its
//!   requests carry no `traceparent`, so each is the root of a new trace,
//!   sampled (the SDK's default sampler records every root): every request
//!   makes and exports its server span, the backend call's client span and
//!   a span per key-value call. It is stopped with SIGTERM, so it exports
//!   what it still holds, before the collector's counts are read.
//!
//! No host inherits an `OTEL_*` or `EDGE_RESPONSES_*` variable from the
//! bench: only the flags and variables set here decide what it logs,
//! records and exports.
//!
//! The bench holds one keep-alive connection to each host and one to the
//! backend, and sends a non-streaming `POST /v1/responses` to each host and
//! the chat request the component sends for it straight to the backend,
//! every round in a fresh random order (fixed seed), so that machine noise,
//! and the work a host does after its answer (usage increments, the log
//! line, ending and exporting spans), fall on all five alike. Added latency
//! is a host's percentile minus the backend's. The CPU time each host
//! process used over the measured rounds (`/proc/PID/stat`) is a second
//! view of the same cost, one that work done after the answer (and the
//! batch processor's exports, on threads of their own) cannot hide from.
//!
//! What `off` still does, as every host does: the request id, the route
//! and timings of the request, and reading the component's report line
//! from its stderr (the component writes it either way).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use scripted_backend::{Backend, DEFAULT_MODEL};
use serde_json::{json, Value};

use crate::client::{Conn, Probe, Watch};
use crate::report::{Row, Section, Target, Unit};
use crate::stats::percentile_ms;
use crate::system;
use crate::{progress, workspace_root};

/// The host binary's name.
const HOST_BIN: &str = "edge-responses-host";

/// The `tracing` target of request log lines, as it appears in a JSON line.
const REQUEST_LINE_MARK: &str = "\"target\":\"edge_responses::request\"";

/// Target for the added latency (p50) with logging and metrics on, as a
/// multiple of the same with them off.
const RATIO_TARGET: f64 = 1.05;

/// Target for the added latency (p50) of `traced` over `off`, if any (none:
/// the rows are informational).
const TRACED_RATIO_TARGET: Option<f64> = None;

/// How long a host may take to start (it may have to compile the
/// component on a busy machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// How long one request may take before the phase gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a host may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The seed of the round orders: random, but the same every run.
const ORDER_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// How many rounds the phase sends.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub warmup: usize,
    pub rounds: usize,
}

/// How a host process logs, records and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Request log and metrics.
    On,
    /// Neither.
    Off,
    /// Request log and metrics, and traces exported to the collector.
    Traced,
}

/// The four hosts, in the order of their samples.
const HOSTS: [(&str, Mode); 4] = [
    ("on", Mode::On),
    ("off", Mode::Off),
    ("off-again", Mode::Off),
    ("traced", Mode::Traced),
];

/// Indexes into [`HOSTS`]; the backend's samples come after the hosts'.
const ON: usize = 0;
const OFF: usize = 1;
const OFF_AGAIN: usize = 2;
const TRACED: usize = 3;
const BACKEND: usize = HOSTS.len();

/// What one round sends: one request to each host, one to the backend.
const PROBES: usize = HOSTS.len() + 1;

/// What one host showed.
#[derive(Debug, Clone)]
pub struct HostNumbers {
    pub p50: f64,
    pub p90: f64,
    /// CPU milliseconds per request over the measured rounds.
    pub cpu_per_request: f64,
    /// Request log lines in its stderr file.
    pub log_lines: usize,
    /// The size of its stderr file.
    pub log_bytes: u64,
    /// Requests it was sent in all (warm-up and capture included).
    pub sent: u64,
    /// `POST /v1/responses` answered 200, as its metrics count them (hosts
    /// with a metrics listener).
    pub metrics_counted: Option<u64>,
    /// Whether it exited on SIGTERM within [`STOP_TIMEOUT`] (else it was
    /// killed).
    pub stopped_cleanly: bool,
}

/// The phase's numbers.
#[derive(Debug, Clone)]
pub struct Measured {
    pub rounds: usize,
    /// `on`, `off`, `off again`, `traced`.
    pub hosts: [HostNumbers; 4],
    /// The backend alone: p50, p90.
    pub backend: (f64, f64),
    /// Median per-round differences from `off`, in milliseconds, per host
    /// (zero for `off` itself).
    pub paired: [f64; 4],
    /// What the collector stand-in received from `traced`, read after it
    /// stopped.
    pub exported: Exported,
    /// Cores other processes kept busy on average during the rounds.
    pub others_busy: f64,
    pub wall: Duration,
    pub log_dir: PathBuf,
}

impl Measured {
    fn added(&self, index: usize) -> (f64, f64) {
        let host = &self.hosts[index];
        (host.p50 - self.backend.0, host.p90 - self.backend.1)
    }

    /// Added p50 and p90 of `index` over those of `than`.
    fn ratio_to(&self, index: usize, than: usize) -> (f64, f64) {
        let (p50, p90) = self.added(index);
        let (base50, base90) = self.added(than);
        (p50 / base50, p90 / base90)
    }

    /// Added p50 and p90 of `index` over those of `off`.
    fn ratio(&self, index: usize) -> (f64, f64) {
        self.ratio_to(index, OFF)
    }

    fn cpu_ratio_to(&self, index: usize, than: usize) -> f64 {
        self.hosts[index].cpu_per_request / self.hosts[than].cpu_per_request
    }

    fn cpu_ratio(&self, index: usize) -> f64 {
        self.cpu_ratio_to(index, OFF)
    }
}

/// The phase's result: numbers, or why there are none.
pub enum Outcome {
    Measured(Box<Measured>),
    Failed(String),
}

/// Runs the phase. A failure is reported, not returned, so the phases
/// after it still run.
pub fn run(counts: Counts, component: &Path, state_dir: &Path, backend: &Backend) -> Outcome {
    match try_run(counts, component, state_dir, backend) {
        Ok(measured) => Outcome::Measured(Box::new(measured)),
        Err(err) => {
            let err = format!("{err:#}");
            progress(&format!("operations phase failed: {err}"));
            Outcome::Failed(err)
        }
    }
}

fn try_run(
    counts: Counts,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
) -> anyhow::Result<Measured> {
    let exe = build_host(&workspace_root())?;
    let stores = tempfile::tempdir().context("creating a temporary store directory")?;
    let log_dir = state_dir.join("ops");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    // Started before the hosts and stopped after them (declared first,
    // dropped last), so the traced host's last export finds it.
    let collector = Collector::start()?;
    let traces_url = format!("http://{}/v1/traces", collector.addr());
    let mut hosts = Vec::with_capacity(HOSTS.len());
    for (name, mode) in HOSTS {
        let spec = HostSpec {
            exe: &exe,
            component,
            state_dir,
            store: &stores.path().join(format!("{name}.db")),
            log: &log_dir.join(format!("{name}.log")),
            backend_url: &backend.url(),
            traces_url: &traces_url,
        };
        hosts.push(HostProcess::start(name, mode, &spec)?);
    }
    let mut hosts: [HostProcess; 4] = hosts
        .try_into()
        .map_err(|_| anyhow::anyhow!("four hosts"))?;
    let metrics_of = |index: usize| {
        hosts[index]
            .metrics
            .map_or_else(String::new, |addr| format!(", metrics on {addr}"))
    };
    progress(&format!(
        "operations: hosts on {} (log and metrics{}), {} and {} (both off), traced {} (log, metrics{}, traces to {traces_url}); logs in {}",
        hosts[ON].addr,
        metrics_of(ON),
        hosts[OFF].addr,
        hosts[OFF_AGAIN].addr,
        hosts[TRACED].addr,
        metrics_of(TRACED),
        log_dir.display()
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rounds = runtime.block_on(measure(counts, &hosts, backend))?;
    for host in &mut hosts {
        host.stop();
    }
    let exported = collector.finish();
    progress(&format!(
        "operations: the collector received {} export requests, {} bytes, {} spans ({} server spans)",
        exported.requests, exported.bytes, exported.spans, exported.server_spans
    ));
    let numbers = std::array::from_fn(|index| {
        let host = &hosts[index];
        let (log_lines, log_bytes) = count_log_lines(&host.log);
        let samples = &rounds.samples[index];
        HostNumbers {
            p50: percentile_ms(samples, 50.0),
            p90: percentile_ms(samples, 90.0),
            cpu_per_request: rounds.cpu[index].as_secs_f64() * 1000.0 / counts.rounds.max(1) as f64,
            log_lines,
            log_bytes,
            sent: rounds.sent[index],
            metrics_counted: rounds.metrics_counted[index],
            stopped_cleanly: host.stopped_cleanly,
        }
    });
    let backend_samples = &rounds.samples[BACKEND];
    let paired = std::array::from_fn(|index| {
        median(
            rounds.samples[index]
                .iter()
                .zip(&rounds.samples[OFF])
                .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
                .collect(),
        )
    });
    Ok(Measured {
        rounds: counts.rounds,
        hosts: numbers,
        backend: (
            percentile_ms(backend_samples, 50.0),
            percentile_ms(backend_samples, 90.0),
        ),
        paired,
        exported,
        others_busy: rounds.others_busy,
        wall: rounds.wall,
        log_dir,
    })
}

/// Builds the host binary with the bench's own profile (a no-op when it is
/// up to date) and returns its path, beside the bench's executable.
fn build_host(root: &Path) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "-p", HOST_BIN, "--bin", HOST_BIN];
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    progress(&format!(
        "building the host binary: cargo {}",
        args.join(" ")
    ));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(root)
        .status()
        .context("running cargo to build the host binary")?;
    if !status.success() {
        bail!("building the host binary failed: cargo {}", args.join(" "));
    }
    let bench = std::env::current_exe().context("locating the bench executable")?;
    let exe = bench.with_file_name(format!("{HOST_BIN}{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!("no host binary at {} after building it", exe.display());
    }
    Ok(exe)
}

/// Where and how to start one host process.
struct HostSpec<'a> {
    exe: &'a Path,
    component: &'a Path,
    state_dir: &'a Path,
    store: &'a Path,
    log: &'a Path,
    backend_url: &'a str,
    /// The collector's traces URL (used by the traced host only).
    traces_url: &'a str,
}

/// One host binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct HostProcess {
    child: Child,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    log: PathBuf,
    stopped: bool,
    /// Whether it exited on SIGTERM in time.
    stopped_cleanly: bool,
}

impl HostProcess {
    fn start(name: &'static str, mode: Mode, spec: &HostSpec) -> anyhow::Result<HostProcess> {
        let log = std::fs::File::create(spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        let mut command = Command::new(spec.exe);
        command
            .args(["--listen", "127.0.0.1:0", "--backend-url", spec.backend_url])
            .arg("--component")
            .arg(spec.component)
            .arg("--state-dir")
            .arg(spec.state_dir)
            .arg("--store")
            .arg(spec.store)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // Only the flags and variables below decide what the host logs,
        // records and exports.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("EDGE_RESPONSES_") || name_text.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        match mode {
            Mode::On => command
                .args(["--log-format", "json", "--metrics-listen", "127.0.0.1:0"])
                .env("RUST_LOG", "info"),
            Mode::Off => command.env("RUST_LOG", "off"),
            Mode::Traced => command
                .args(["--log-format", "json", "--metrics-listen", "127.0.0.1:0"])
                .env("RUST_LOG", "info")
                .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", spec.traces_url),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.exe.display()))?;
        let stdout = child.stdout.take().context("the host's stdout")?;
        // Read on a thread, so a host that hangs at startup is given up on.
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    // Keep reading, so the host never writes to a closed pipe.
                    continue;
                }
            }
        });
        let mut host = HostProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            log: spec.log.to_path_buf(),
            stopped: false,
            stopped_cleanly: false,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let wants_metrics = mode != Mode::Off;
        let wants_traces = mode == Mode::Traced;
        let (mut addr, mut metrics, mut traces) = (None, None, false);
        while addr.is_none() || (wants_metrics && metrics.is_none()) || (wants_traces && !traces) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match received.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "the {name} host did not start within {STARTUP_TIMEOUT:?}; see {}",
                    spec.log.display()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "the {name} host exited at startup; see {}",
                    spec.log.display()
                ),
            };
            if let Some(found) = address_after(&line, "edge-responses listening on http://") {
                addr = Some(found);
            } else if let Some(found) = address_after(&line, "metrics on http://") {
                metrics = Some(found);
            } else if let Some(url) = line.strip_prefix("traces to ") {
                if !url.starts_with(spec.traces_url) {
                    bail!(
                        "the {name} host exports traces to {url}, not {}",
                        spec.traces_url
                    );
                }
                traces = true;
            }
        }
        host.addr = addr.context("a listening address")?;
        host.metrics = metrics;
        Ok(host)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the host to stop (SIGTERM, as a service manager would) and
    /// waits for it; kills it if it takes too long.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: `kill` has no memory effects; `pid` is our own child,
            // not yet waited for, so the id cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    self.stopped_cleanly = true;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address in `line` right after `prefix` (which starts the line), up
/// to a `/`, a space or the end.
fn address_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?
        .split(['/', ' '])
        .next()?
        .parse()
        .ok()
}

/// Request log lines in the file at `path`, and its size.
fn count_log_lines(path: &Path) -> (usize, u64) {
    match std::fs::read_to_string(path) {
        Ok(text) => (
            text.lines()
                .filter(|line| line.contains(REQUEST_LINE_MARK))
                .count(),
            text.len() as u64,
        ),
        Err(_) => (0, 0),
    }
}

/// What the rounds produced.
struct Rounds {
    /// Per host in [`HOSTS`] order, then the backend: the time of every
    /// measured request, in round order.
    samples: [Vec<Duration>; PROBES],
    /// CPU time of each host over the measured rounds.
    cpu: [Duration; 4],
    /// Requests each host was sent in all.
    sent: [u64; 4],
    /// What each host's metrics count, for the hosts that have them.
    metrics_counted: [Option<u64>; 4],
    others_busy: f64,
    wall: Duration,
}

async fn measure(
    counts: Counts,
    hosts: &[HostProcess; 4],
    backend: &Backend,
) -> anyhow::Result<Rounds> {
    let create = json!({ "model": DEFAULT_MODEL, "input": "Say hi" });
    let responses = Probe::responses(&create);
    let mut conns = Vec::with_capacity(PROBES);
    for host in hosts {
        conns.push(Conn::connect(host.addr).await?);
    }
    conns.push(Conn::connect(backend.addr()).await?);
    let chat = crate::capture_chat_request(backend, &mut conns[ON], &responses).await?;
    let direct = Probe::chat(chat, Watch::Nothing);
    let probes = [&responses, &responses, &responses, &responses, &direct];
    let mut shuffle = Shuffle::new(ORDER_SEED);

    progress(&format!(
        "operations: warming up ({} rounds)",
        counts.warmup
    ));
    rounds(counts.warmup, &mut conns, probes, &mut shuffle).await?;

    progress(&format!(
        "operations: {} rounds of one request to each host and one straight to the backend, in random order",
        counts.rounds
    ));
    let cpu_before = hosts.each_ref().map(|host| system::cpu_of(host.pid()));
    let bench_before = system::cpu_of(std::process::id());
    let machine_before = system::machine_busy();
    let started = Instant::now();
    let samples = rounds(counts.rounds, &mut conns, probes, &mut shuffle).await?;
    let wall = started.elapsed();
    let cpu = std::array::from_fn(|i| system::cpu_of(hosts[i].pid()).saturating_sub(cpu_before[i]));
    let bench = system::cpu_of(std::process::id()).saturating_sub(bench_before);
    let machine = system::machine_busy().saturating_sub(machine_before);
    let ours: Duration = cpu.iter().sum::<Duration>() + bench;
    let others_busy =
        machine.saturating_sub(ours).as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON);

    let mut metrics_counted = [None; 4];
    for (counted, host) in metrics_counted.iter_mut().zip(hosts) {
        if let Some(addr) = host.metrics {
            *counted = Some(scrape_responses_counted(addr).await?);
        }
    }
    let sent = std::array::from_fn(|index| {
        // The chat request was captured through `on`.
        let capture = usize::from(index == ON);
        (counts.warmup + counts.rounds + capture) as u64
    });
    Ok(Rounds {
        samples,
        cpu,
        sent,
        metrics_counted,
        others_busy,
        wall,
    })
}

/// `count` rounds: each probe once on its connection, in a fresh random
/// order every round.
async fn rounds(
    count: usize,
    conns: &mut [Conn],
    probes: [&Probe; PROBES],
    shuffle: &mut Shuffle,
) -> anyhow::Result<[Vec<Duration>; PROBES]> {
    let mut samples: [Vec<Duration>; PROBES] = std::array::from_fn(|_| Vec::with_capacity(count));
    for _ in 0..count {
        for index in shuffle.order::<PROBES>() {
            let (conn, probe) = conns
                .get_mut(index)
                .map(|conn| (conn, probes[index]))
                .context("a connection per probe")?;
            let sample = tokio::time::timeout(REQUEST_TIMEOUT, conn.exchange(probe))
                .await
                .with_context(|| format!("no answer within {REQUEST_TIMEOUT:?}"))??;
            samples[index].push(sample.total);
        }
    }
    Ok(samples)
}

/// Scrapes a host's metrics once: how many `POST /v1/responses` they count
/// as answered 200.
async fn scrape_responses_counted(addr: SocketAddr) -> anyhow::Result<u64> {
    let probe = Probe {
        method: Method::GET,
        path: "/metrics",
        status: StatusCode::OK,
        body: Bytes::new(),
        watch: Watch::Nothing,
        keep_body: true,
    };
    let mut conn = Conn::connect(addr).await?;
    let sample = tokio::time::timeout(REQUEST_TIMEOUT, conn.exchange(&probe))
        .await
        .context("scraping the metrics timed out")??;
    let text = String::from_utf8_lossy(&sample.body);
    responses_counted(&text).context("the metrics count no POST /v1/responses answered 200")
}

/// The `requests_total` sample of `POST /v1/responses` answered 200 in a
/// Prometheus text.
fn responses_counted(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| {
        line.starts_with("edge_responses_requests_total{")
            && line.contains(r#"method="POST""#)
            && line.contains(r#"route="/v1/responses""#)
            && line.contains(r#"status="200""#)
    })?;
    let value: f64 = line.rsplit_once(' ')?.1.parse().ok()?;
    Some(value as u64)
}

/// The nearest-rank median of `values`; zero when there are none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        len => values[len.div_ceil(2) - 1],
    }
}

/// Orders of the probes: xorshift64 and Fisher-Yates.
struct Shuffle(u64);

impl Shuffle {
    fn new(seed: u64) -> Shuffle {
        Shuffle(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random order of `0..N`.
    fn order<const N: usize>(&mut self) -> [usize; N] {
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        for i in (1..N).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }
}

/// Most connections the collector stand-in serves at once (the host's
/// outbound pool keeps one or two); more are closed as they come.
const COLLECTOR_CONNECTIONS: usize = 8;

/// How often the collector's threads look at its stop flag.
const COLLECTOR_TICK: Duration = Duration::from_millis(20);

/// The largest request head the collector reads.
const MAX_HEAD: usize = 16 * 1024;

/// The largest export the collector reads (the batch processor sends 512
/// spans at most, tens of KiB).
const MAX_EXPORT: usize = 64 << 20;

/// What the collector stand-in received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// `POST /v1/traces` requests, each answered 200.
    pub requests: u64,
    /// Their bodies' bytes.
    pub bytes: u64,
    /// Spans in those bodies.
    pub spans: u64,
    /// The `SERVER` spans among them: one per request the host served.
    pub server_spans: u64,
    /// Bodies whose spans could not be counted (compressed, or not an OTLP
    /// protobuf export).
    pub unreadable: u64,
    /// Requests answered otherwise: another method or path (404), or no
    /// `content-length` or one too large (the connection is closed).
    pub refused: u64,
}

/// An OTLP/HTTP collector stand-in on a loopback port: a minimal HTTP/1.1
/// server (keep-alive, bodies read by `content-length`) on threads of its
/// own, answering every `POST /v1/traces` with an empty 200 (an empty
/// `ExportTraceServiceResponse`: everything accepted) and counting what it
/// received. Stopped when dropped.
struct Collector {
    addr: SocketAddr,
    exported: Arc<Mutex<Exported>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Collector {
    fn start() -> anyhow::Result<Collector> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).context("binding the collector stand-in")?;
        // Accepts are polled, so the acceptor sees the stop flag.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let exported = Arc::new(Mutex::new(Exported::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (exported, stop) = (Arc::clone(&exported), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("otlp-collector".into())
                .spawn(move || accept_exports(&listener, &exported, &stop))
                .context("starting the collector stand-in")?
        };
        Ok(Collector {
            addr,
            exported,
            stop,
            acceptor: Some(acceptor),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it (its connections close within a tick) and returns what it
    /// received.
    fn finish(mut self) -> Exported {
        self.stop_threads();
        *self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The collector's accept loop: a thread per connection, until `stop`;
/// then waits for the connections' threads.
fn accept_exports(listener: &TcpListener, exported: &Arc<Mutex<Exported>>, stop: &Arc<AtomicBool>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(COLLECTOR_TICK);
            continue;
        };
        connections.retain(|connection| !connection.is_finished());
        if connections.len() >= COLLECTOR_CONNECTIONS {
            continue;
        }
        let (exported, stop) = (Arc::clone(exported), Arc::clone(stop));
        if let Ok(connection) = std::thread::Builder::new()
            .name("otlp-connection".into())
            .spawn(move || serve_exports(stream, &exported, &stop))
        {
            connections.push(connection);
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// The head of one request, as far as the collector cares.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    /// `POST /v1/traces`.
    export: bool,
    /// `None` without one (or with `transfer-encoding`, not read here).
    content_length: Option<usize>,
    /// The client asked to close the connection after this request.
    close: bool,
    /// The body has a `content-encoding` (spans not counted).
    encoded: bool,
}

impl RequestHead {
    /// Parses the head `bytes` (up to and including the empty line).
    fn parse(bytes: &[u8]) -> Option<RequestHead> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let (method, path, version) = (
            request_line.next()?,
            request_line.next()?,
            request_line.next()?,
        );
        let mut head = RequestHead {
            export: method == "POST" && path == "/v1/traces",
            content_length: None,
            close: version == "HTTP/1.0",
            encoded: false,
        };
        let mut chunked = false;
        for line in lines.filter(|line| !line.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => head.content_length = Some(value.parse().ok()?),
                "connection" => head.close = value.eq_ignore_ascii_case("close"),
                "content-encoding" => head.encoded = !value.eq_ignore_ascii_case("identity"),
                "transfer-encoding" => chunked = true,
                _ => {}
            }
        }
        if chunked {
            head.content_length = None;
        }
        Some(head)
    }
}

/// Serves one connection of the collector: requests one after the other
/// (keep-alive) until the client closes it, asks to, sends what cannot be
/// read, stalls mid-request for [`REQUEST_TIMEOUT`], or the collector stops.
fn serve_exports(mut stream: TcpStream, exported: &Mutex<Exported>, stop: &AtomicBool) {
    let configured = stream.set_nonblocking(false).is_ok()
        && stream.set_read_timeout(Some(COLLECTOR_TICK)).is_ok()
        && stream.set_write_timeout(Some(REQUEST_TIMEOUT)).is_ok();
    if !configured {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        // Idle between requests as long as the collector runs; a request
        // once begun has to arrive whole in time.
        let mut deadline = None;
        let head_len = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            if buffer.len() > MAX_HEAD {
                return;
            }
            if !buffer.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + REQUEST_TIMEOUT);
            }
            if !fill(&mut stream, &mut buffer, stop, deadline) {
                return;
            }
        };
        let deadline = deadline.unwrap_or_else(|| Instant::now() + REQUEST_TIMEOUT);
        let head = RequestHead::parse(&buffer[..head_len]);
        let Some(length) = head
            .as_ref()
            .and_then(|head| head.content_length)
            .filter(|&length| length <= MAX_EXPORT)
        else {
            record(exported, |counts| counts.refused += 1);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        };
        let Some(head) = head else { return };
        while buffer.len() < head_len + length {
            if !fill(&mut stream, &mut buffer, stop, Some(deadline)) {
                return;
            }
        }
        let body = &buffer[head_len..head_len + length];
        let spans = (head.export && !head.encoded)
            .then(|| count_spans(body))
            .flatten();
        record(exported, |counts| {
            if !head.export {
                counts.refused += 1;
                return;
            }
            counts.requests += 1;
            counts.bytes += length as u64;
            match spans {
                Some((spans, server)) => {
                    counts.spans += spans;
                    counts.server_spans += server;
                }
                None => counts.unreadable += 1,
            }
        });
        let status = if head.export {
            "200 OK"
        } else {
            "404 Not Found"
        };
        let close = if head.close {
            "connection: close\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n{close}\r\n"
        );
        if stream.write_all(answer.as_bytes()).is_err() || head.close {
            return;
        }
        buffer.drain(..head_len + length);
    }
}

/// Updates the collector's counts.
fn record(exported: &Mutex<Exported>, update: impl FnOnce(&mut Exported)) {
    update(
        &mut exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
}

/// Reads what has arrived into `buffer`. False when the client closed the
/// connection, on an error, when the collector stops, or after `deadline`.
fn fill(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Acquire) || deadline.is_some_and(|end| Instant::now() >= end) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(read) => {
                buffer.extend_from_slice(&chunk[..read]);
                return true;
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
}

/// One field of a protobuf message: a varint's value, a length-delimited
/// field's bytes, or a fixed-size one (not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// A varint at the start of `bytes`, which then starts after it.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of the protobuf message `message`, with their numbers;
/// `None` when it is not one.
fn fields(mut message: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut message)?),
            1 => {
                message = message.get(8..)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                let bytes = message.get(..len)?;
                message = &message[len..];
                Field::Bytes(bytes)
            }
            5 => {
                message = message.get(4..)?;
                Field::Fixed
            }
            _ => return None,
        };
        fields.push((key >> 3, field));
    }
    Some(fields)
}

/// The messages in the length-delimited fields numbered `number` of
/// `message`.
fn messages(message: &[u8], number: u64) -> Option<Vec<&[u8]>> {
    fields(message)?
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, field)| match field {
            Field::Bytes(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// The spans in an OTLP `ExportTraceServiceRequest` (`resource_spans` = 1,
/// its `scope_spans` = 2, their `spans` = 2), and how many of them are
/// `SERVER` spans (`kind` = 6, `SPAN_KIND_SERVER` = 2).
fn count_spans(body: &[u8]) -> Option<(u64, u64)> {
    let (mut spans, mut server) = (0, 0);
    for resource in messages(body, 1)? {
        for scope in messages(resource, 2)? {
            for span in messages(scope, 2)? {
                spans += 1;
                if fields(span)?
                    .iter()
                    .any(|&(number, field)| number == 6 && field == Field::Varint(2))
                {
                    server += 1;
                }
            }
        }
    }
    Some((spans, server))
}

impl Outcome {
    pub fn section(&self) -> Section {
        let title = "Request log, metrics and traces: four host processes (on: log and metrics; off; off again, the A/A control; traced: on and OTLP trace export) and the backend alone, one request each per round in random order, concurrency 1";
        let columns = ["on / traced".into(), "off".into(), "off again (A/A)".into()];
        let target = |pass| Target::new(format!("on/off <= {RATIO_TARGET:.2}x"), pass);
        let m = match self {
            Outcome::Measured(measured) => measured,
            Outcome::Failed(err) => {
                let row = Row::columns("added latency, p50", Unit::Millis, [None; 3])
                    .target(target(false))
                    .note(format!("failed: {err}"));
                return Section::new(title, vec![row]).with_columns(columns);
            }
        };
        let added = [ON, OFF, OFF_AGAIN].map(|i| m.added(i));
        let (on_ratio, aa_ratio) = (m.ratio(ON), m.ratio(OFF_AGAIN));
        let [on, off, off_again, traced] = &m.hosts;
        let mut rows = vec![
            Row::columns(
                "added latency, p50",
                Unit::Millis,
                added.map(|(p50, _)| Some(p50)),
            )
            .target(target(on_ratio.0 <= RATIO_TARGET))
            .note(format!(
                "on/off {:.3}x, A/A {:.3}x; backend alone {:.3} ms; {} requests to each",
                on_ratio.0, aa_ratio.0, m.backend.0, m.rounds
            )),
            Row::columns(
                "added latency, p90",
                Unit::Millis,
                added.map(|(_, p90)| Some(p90)),
            )
            .note(format!(
                "on/off {:.3}x, A/A {:.3}x; backend alone {:.3} ms",
                on_ratio.1, aa_ratio.1, m.backend.1
            )),
            Row::columns(
                "median per-round difference from off",
                Unit::Millis,
                [Some(m.paired[ON]), None, Some(m.paired[OFF_AGAIN])],
            )
            .note("each round's latency minus off's in the same round"),
            Row::columns(
                "host CPU per request",
                Unit::Millis,
                [on, off, off_again].map(|host| Some(host.cpu_per_request)),
            )
            .note(format!(
                "on/off {:.3}x, A/A {:.3}x; other processes kept {:.2} cores busy over the {:.1} s",
                m.cpu_ratio(ON),
                m.cpu_ratio(OFF_AGAIN),
                m.others_busy,
                m.wall.as_secs_f64()
            )),
            Row::columns(
                "request log lines written",
                Unit::Count,
                [on, off, off_again].map(|host| Some(host.log_lines as f64)),
            )
            .note(format!(
                "{} requests sent to on, {} counted by its metrics; on's log {:.1} KiB, off's {} and {} bytes ({})",
                on.sent,
                counted(on.metrics_counted),
                on.log_bytes as f64 / 1024.0,
                off.log_bytes,
                off_again.log_bytes,
                m.log_dir.display()
            )),
        ];
        let traced_ratio = m.ratio(TRACED);
        let traced_on = m.ratio_to(TRACED, ON);
        let traced_target = TRACED_RATIO_TARGET.map(|limit| {
            Target::new(
                format!("traced/off <= {limit:.2}x"),
                traced_ratio.0 <= limit,
            )
        });
        let mut traced_p50 = Row::columns(
            "traced: added latency, p50",
            Unit::Millis,
            [Some(m.added(TRACED).0), Some(added[1].0), Some(added[2].0)],
        )
        .note(format!(
            "traced/off {:.3}x ({:+.0} µs; median per-round difference {:+.0} µs), traced/on {:.3}x",
            traced_ratio.0,
            (m.added(TRACED).0 - added[1].0) * 1000.0,
            m.paired[TRACED] * 1000.0,
            traced_on.0
        ));
        if let Some(target) = traced_target {
            traced_p50 = traced_p50.target(target);
        }
        let exported = &m.exported;
        let mut export_note = format!(
            "{} OTLP/HTTP protobuf requests, {:.1} KiB, to the collector stand-in (counted after traced stopped on SIGTERM); {} server spans for {} requests sent, {} counted by its metrics; its log {} request lines",
            exported.requests,
            exported.bytes as f64 / 1024.0,
            exported.server_spans,
            traced.sent,
            counted(traced.metrics_counted),
            traced.log_lines
        );
        if exported.unreadable > 0 || exported.refused > 0 {
            export_note.push_str(&format!(
                "; {} exports not readable, {} requests refused",
                exported.unreadable, exported.refused
            ));
        }
        if !traced.stopped_cleanly {
            export_note.push_str(&format!(
                "; traced did not stop within {STOP_TIMEOUT:?} and was killed"
            ));
        }
        rows.extend([
            traced_p50,
            Row::columns(
                "traced: added latency, p90",
                Unit::Millis,
                [Some(m.added(TRACED).1), Some(added[1].1), Some(added[2].1)],
            )
            .note(format!(
                "traced/off {:.3}x, traced/on {:.3}x",
                traced_ratio.1, traced_on.1
            )),
            Row::columns(
                "traced: host CPU per request",
                Unit::Millis,
                [traced, off, off_again].map(|host| Some(host.cpu_per_request)),
            )
            .note(format!(
                "traced/off {:.3}x, traced/on {:.3}x (the batch processor's exports included)",
                m.cpu_ratio(TRACED),
                m.cpu_ratio_to(TRACED, ON)
            )),
            Row::columns(
                "traced: spans exported",
                Unit::Count,
                [Some(exported.spans as f64), None, None],
            )
            .note(export_note),
        ]);
        Section::new(title, rows).with_columns(columns)
    }

    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Failed(err) => json!({ "error": err }),
            Outcome::Measured(m) => {
                let host = |index: usize| {
                    let h = &m.hosts[index];
                    let (added_p50, added_p90) = m.added(index);
                    json!({
                        "p50_ms": h.p50,
                        "p90_ms": h.p90,
                        "added_p50_ms": added_p50,
                        "added_p90_ms": added_p90,
                        "cpu_per_request_ms": h.cpu_per_request,
                        "request_log_lines": h.log_lines,
                        "stderr_bytes": h.log_bytes,
                        "requests_sent": h.sent,
                        "requests_counted_by_metrics": h.metrics_counted,
                        "stopped_on_sigterm": h.stopped_cleanly,
                    })
                };
                let over = |index: usize, than: usize| {
                    let (p50, p90) = m.ratio_to(index, than);
                    json!({ "added_p50": p50, "added_p90": p90, "cpu": m.cpu_ratio_to(index, than) })
                };
                let exported = &m.exported;
                json!({
                    "rounds": m.rounds,
                    "on": host(ON),
                    "off": host(OFF),
                    "off_again": host(OFF_AGAIN),
                    "traced": host(TRACED),
                    "backend_alone": { "p50_ms": m.backend.0, "p90_ms": m.backend.1 },
                    "on_over_off": over(ON, OFF),
                    "off_again_over_off": over(OFF_AGAIN, OFF),
                    "traced_over_off": over(TRACED, OFF),
                    "traced_over_on": over(TRACED, ON),
                    "median_paired_difference_ms": {
                        "on_minus_off": m.paired[ON],
                        "off_again_minus_off": m.paired[OFF_AGAIN],
                        "traced_minus_off": m.paired[TRACED],
                    },
                    "requests_sent_to_on": m.hosts[ON].sent,
                    "requests_counted_by_on_metrics": m.hosts[ON].metrics_counted,
                    "collector": {
                        "export_requests": exported.requests,
                        "bytes": exported.bytes,
                        "spans": exported.spans,
                        "server_spans": exported.server_spans,
                        "unreadable_exports": exported.unreadable,
                        "refused_requests": exported.refused,
                    },
                    "other_processes_cores_busy": m.others_busy,
                    "seconds": m.wall.as_secs_f64(),
                })
            }
        }
    }
}

/// A metrics count, or "none".
fn counted(count: Option<u64>) -> String {
    count.map_or_else(|| "none".to_owned(), |count| count.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_the_startup_lines() {
        let line = "edge-responses listening on http://127.0.0.1:4321 (backend: http://127.0.0.1:9/v1, store: s.db)";
        assert_eq!(
            address_after(line, "edge-responses listening on http://"),
            Some("127.0.0.1:4321".parse().expect("address"))
        );
        assert_eq!(
            address_after(
                "metrics on http://127.0.0.1:99/metrics",
                "metrics on http://"
            ),
            Some("127.0.0.1:99".parse().expect("address"))
        );
        assert_eq!(
            address_after("instance limit: 1", "metrics on http://"),
            None
        );
        assert_eq!(
            address_after("metrics on http://nowhere/", "metrics on http://"),
            None
        );
    }

    #[test]
    fn the_responses_count_is_read_from_the_metrics() {
        let text = "# TYPE edge_responses_requests_total counter\n\
            edge_responses_requests_total{method=\"GET\",route=\"/v1/responses\",status=\"200\"} 3\n\
            edge_responses_requests_total{method=\"POST\",route=\"/v1/responses\",status=\"200\"} 4201\n";
        assert_eq!(responses_counted(text), Some(4201));
        assert_eq!(
            responses_counted("edge_responses_instances_in_use 0\n"),
            None
        );
    }

    #[test]
    fn orders_are_permutations_and_vary() {
        let mut shuffle = Shuffle::new(ORDER_SEED);
        let mut firsts = [0usize; PROBES];
        for _ in 0..500 {
            let order = shuffle.order::<PROBES>();
            let mut sorted = order;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            firsts[order[0]] += 1;
        }
        assert!(firsts.iter().all(|&count| count > 60), "{firsts:?}");
    }

    #[test]
    fn medians_and_log_lines() {
        assert_eq!(median(vec![3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("on.log");
        std::fs::write(
            &log,
            "{\"level\":\"INFO\",\"target\":\"edge_responses::request\",\"status\":200}\n\
             {\"level\":\"WARN\",\"target\":\"edge_responses_host\"}\n",
        )
        .expect("written");
        assert_eq!(count_log_lines(&log).0, 1);
        assert_eq!(count_log_lines(&dir.path().join("missing")), (0, 0));
    }

    fn put_varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A length-delimited field.
    fn put_message(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        put_varint(number << 3 | 2, out);
        put_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    /// An OTLP span of `kind`, with the fields around `kind` a real one has.
    fn span(kind: u64, name: &str) -> Vec<u8> {
        let mut span = Vec::new();
        put_message(1, &[7; 16], &mut span);
        put_message(2, &[9; 8], &mut span);
        put_message(5, name.as_bytes(), &mut span);
        put_varint(6 << 3, &mut span);
        put_varint(kind, &mut span);
        put_varint(7 << 3 | 1, &mut span);
        span.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
        put_varint(16 << 3 | 5, &mut span);
        span.extend_from_slice(&0x301u32.to_le_bytes());
        span
    }

    /// An export of one resource with one scope holding `spans`.
    fn export_of(spans: &[Vec<u8>]) -> Vec<u8> {
        let mut scope = Vec::new();
        put_message(1, b"\x0a\x0eedge-responses", &mut scope);
        for span in spans {
            put_message(2, span, &mut scope);
        }
        let mut resource = Vec::new();
        put_message(1, b"\x0a\x00", &mut resource);
        put_message(2, &scope, &mut resource);
        let mut export = Vec::new();
        put_message(1, &resource, &mut export);
        export
    }

    #[test]
    fn spans_are_counted_in_an_otlp_export() {
        let export = export_of(&[
            span(2, "POST /v1/responses"),
            span(3, "POST"),
            span(1, "keyvalue get"),
            span(2, "POST /v1/responses"),
        ]);
        assert_eq!(count_spans(&export), Some((4, 2)));
        assert_eq!(count_spans(&[]), Some((0, 0)));
        assert_eq!(count_spans(&export[..export.len() - 3]), None);
        assert_eq!(count_spans(b"{\"resourceSpans\":[]}"), None);
        let mut long = Vec::new();
        put_varint(u64::MAX, &mut long);
        assert_eq!(varint(&mut long.as_slice()), Some(u64::MAX));
    }

    #[test]
    fn request_heads_are_parsed() {
        let head = RequestHead::parse(
            b"POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Type: application/x-protobuf\r\nContent-Length: 42\r\n\r\n",
        );
        assert_eq!(
            head,
            Some(RequestHead {
                export: true,
                content_length: Some(42),
                close: false,
                encoded: false,
            })
        );
        let other = RequestHead::parse(
            b"GET /v1/traces HTTP/1.1\r\nconnection: close\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        )
        .expect("a head");
        assert!(!other.export && other.close && other.encoded);
        assert_eq!(other.content_length, None);
        assert_eq!(RequestHead::parse(b"POST\r\n\r\n"), None);
        assert_eq!(
            RequestHead::parse(b"POST /v1/traces HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            None
        );
    }

    /// Sends `request` and reads one answer with an empty body.
    fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
        stream.write_all(request).expect("sent");
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).expect("read"), 1, "{answer:?}");
            answer.push(byte[0]);
        }
        String::from_utf8(answer).expect("text")
    }

    #[test]
    fn the_collector_counts_exports_on_a_kept_alive_connection() {
        let collector = Collector::start().expect("started");
        let mut stream = TcpStream::connect(collector.addr()).expect("connected");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let body = export_of(&[span(2, "POST /v1/responses"), span(3, "POST")]);
        let mut post = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            collector.addr(),
            body.len()
        )
        .into_bytes();
        post.extend_from_slice(&body);
        for _ in 0..2 {
            let answer = exchange(&mut stream, &post);
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.contains("content-length: 0\r\n"), "{answer}");
        }
        let answer = exchange(
            &mut stream,
            b"GET /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let json = b"POST /v1/traces HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        assert!(exchange(&mut stream, json).starts_with("HTTP/1.1 200"));
        drop(stream);
        assert_eq!(
            collector.finish(),
            Exported {
                requests: 3,
                bytes: 2 * body.len() as u64 + 2,
                spans: 4,
                server_spans: 2,
                unreadable: 1,
                refused: 1,
            }
        );
    }
}
