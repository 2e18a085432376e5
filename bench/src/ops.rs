//! The operations phase: what the request log and Prometheus metrics add
//! to a request, on against off, in one run (`--only ops` runs it alone).
//!
//! Three host processes serve the component, each the `edge-responses-host`
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
//!
//! The bench holds one keep-alive connection to each host and one to the
//! backend, and sends a non-streaming `POST /v1/responses` to each host and
//! the chat request the component sends for it straight to the backend,
//! every round in a fresh random order (fixed seed), so that machine noise,
//! and the work a host does after its answer (usage increments, the log
//! line), fall on all four alike. Added latency is a host's percentile
//! minus the backend's. The CPU time each host process used over the
//! measured rounds (`/proc/PID/stat`) is a second view of the same cost,
//! one that work done after the answer cannot hide from.
//!
//! What `off` still does, as every host does: the request id, the route
//! and timings of the request, and reading the component's report line
//! from its stderr (the component writes it either way).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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

/// How a host process logs and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    On,
    Off,
}

/// The three hosts, in the order of their columns.
const HOSTS: [(&str, Mode); 3] = [
    ("on", Mode::On),
    ("off", Mode::Off),
    ("off-again", Mode::Off),
];

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
}

/// The phase's numbers.
#[derive(Debug, Clone)]
pub struct Measured {
    pub rounds: usize,
    /// `on`, `off`, `off again`.
    pub hosts: [HostNumbers; 3],
    /// The backend alone: p50, p90.
    pub backend: (f64, f64),
    /// Median per-round differences from `off`, in milliseconds: `on`
    /// minus `off`, and `off again` minus `off`.
    pub paired: (f64, f64),
    /// Requests `on` was sent in all (warm-up and capture included).
    pub sent_to_on: u64,
    /// `POST /v1/responses` answered 200, as `on`'s metrics count them.
    pub metrics_counted: Option<u64>,
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

    /// Added p50 and p90 of `index` over those of `off`.
    fn ratio(&self, index: usize) -> (f64, f64) {
        let (p50, p90) = self.added(index);
        let (off50, off90) = self.added(1);
        (p50 / off50, p90 / off90)
    }

    fn cpu_ratio(&self, index: usize) -> f64 {
        self.hosts[index].cpu_per_request / self.hosts[1].cpu_per_request
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
            progress(&format!("logging and metrics phase failed: {err}"));
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
    let mut hosts = Vec::with_capacity(HOSTS.len());
    for (name, mode) in HOSTS {
        let spec = HostSpec {
            exe: &exe,
            component,
            state_dir,
            store: &stores.path().join(format!("{name}.db")),
            log: &log_dir.join(format!("{name}.log")),
            backend_url: &backend.url(),
        };
        hosts.push(HostProcess::start(name, mode, &spec)?);
    }
    let [on, off, off_again]: [HostProcess; 3] = hosts
        .try_into()
        .map_err(|_| anyhow::anyhow!("three hosts"))?;
    progress(&format!(
        "logging and metrics: hosts on {} (log and metrics, metrics on {}), {} and {} (both off); logs in {}",
        on.addr,
        on.metrics.map_or_else(String::new, |addr| addr.to_string()),
        off.addr,
        off_again.addr,
        log_dir.display()
    ));
    let mut hosts = [on, off, off_again];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rounds = runtime.block_on(measure(counts, &hosts, backend))?;
    for host in &mut hosts {
        host.stop();
    }
    let numbers = hosts.each_ref().map(|host| {
        let (log_lines, log_bytes) = count_log_lines(&host.log);
        let samples = &rounds.samples[host.index];
        HostNumbers {
            p50: percentile_ms(samples, 50.0),
            p90: percentile_ms(samples, 90.0),
            cpu_per_request: rounds.cpu[host.index].as_secs_f64() * 1000.0
                / counts.rounds.max(1) as f64,
            log_lines,
            log_bytes,
        }
    });
    let backend_samples = &rounds.samples[HOSTS.len()];
    let pair = |index: usize| {
        median(
            rounds.samples[index]
                .iter()
                .zip(&rounds.samples[1])
                .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
                .collect(),
        )
    };
    Ok(Measured {
        rounds: counts.rounds,
        hosts: numbers,
        backend: (
            percentile_ms(backend_samples, 50.0),
            percentile_ms(backend_samples, 90.0),
        ),
        paired: (pair(0), pair(2)),
        sent_to_on: rounds.sent_to_on,
        metrics_counted: rounds.metrics_counted,
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
}

/// One host binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct HostProcess {
    /// Its column, and the index of its samples.
    index: usize,
    child: Child,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    log: PathBuf,
    stopped: bool,
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
        // Only the flags below decide what the host logs and records.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EDGE_RESPONSES_") {
                command.env_remove(name);
            }
        }
        match mode {
            Mode::On => command
                .args(["--log-format", "json", "--metrics-listen", "127.0.0.1:0"])
                .env("RUST_LOG", "info"),
            Mode::Off => command.env("RUST_LOG", "off"),
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
            index: HOSTS.iter().position(|(n, _)| *n == name).unwrap_or(0),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            log: spec.log.to_path_buf(),
            stopped: false,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let wants_metrics = mode == Mode::On;
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || (wants_metrics && metrics.is_none()) {
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
    samples: [Vec<Duration>; 4],
    /// CPU time of each host over the measured rounds.
    cpu: [Duration; 3],
    sent_to_on: u64,
    metrics_counted: Option<u64>,
    others_busy: f64,
    wall: Duration,
}

async fn measure(
    counts: Counts,
    hosts: &[HostProcess; 3],
    backend: &Backend,
) -> anyhow::Result<Rounds> {
    let create = json!({ "model": DEFAULT_MODEL, "input": "Say hi" });
    let responses = Probe::responses(&create);
    let mut conns = Vec::with_capacity(4);
    for host in hosts {
        conns.push(Conn::connect(host.addr).await?);
    }
    conns.push(Conn::connect(backend.addr()).await?);
    let chat = crate::capture_chat_request(backend, &mut conns[0], &responses).await?;
    let direct = Probe::chat(chat, Watch::Nothing);
    let probes = [&responses, &responses, &responses, &direct];
    let mut shuffle = Shuffle::new(ORDER_SEED);

    progress(&format!(
        "logging and metrics: warming up ({} rounds)",
        counts.warmup
    ));
    rounds(counts.warmup, &mut conns, probes, &mut shuffle).await?;

    progress(&format!(
        "logging and metrics: {} rounds of one request to each host and one straight to the backend, in random order",
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

    let metrics_counted = match hosts[0].metrics {
        Some(addr) => Some(scrape_responses_counted(addr).await?),
        None => None,
    };
    Ok(Rounds {
        samples,
        cpu,
        sent_to_on: (counts.warmup + counts.rounds + 1) as u64,
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
    probes: [&Probe; 4],
    shuffle: &mut Shuffle,
) -> anyhow::Result<[Vec<Duration>; 4]> {
    let mut samples: [Vec<Duration>; 4] = std::array::from_fn(|_| Vec::with_capacity(count));
    for _ in 0..count {
        for index in shuffle.order::<4>() {
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

/// Scrapes `on`'s metrics once: how many `POST /v1/responses` they count
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

impl Outcome {
    pub fn section(&self) -> Section {
        let title = "Request log and metrics, on vs off: three host processes (on; off; off again, the A/A control) and the backend alone, one request each per round in random order, concurrency 1";
        let columns = ["on".into(), "off".into(), "off again (A/A)".into()];
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
        let added = [0, 1, 2].map(|i| m.added(i));
        let (on_ratio, aa_ratio) = (m.ratio(0), m.ratio(2));
        let [on, off, off_again] = &m.hosts;
        let rows = vec![
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
                [Some(m.paired.0), None, Some(m.paired.1)],
            )
            .note("each round's latency minus off's in the same round"),
            Row::columns(
                "host CPU per request",
                Unit::Millis,
                [on, off, off_again].map(|host| Some(host.cpu_per_request)),
            )
            .note(format!(
                "on/off {:.3}x, A/A {:.3}x; other processes kept {:.2} cores busy over the {:.1} s",
                m.cpu_ratio(0),
                m.cpu_ratio(2),
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
                m.sent_to_on,
                m.metrics_counted
                    .map_or_else(|| "none".to_owned(), |count| count.to_string()),
                on.log_bytes as f64 / 1024.0,
                off.log_bytes,
                off_again.log_bytes,
                m.log_dir.display()
            )),
        ];
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
                    })
                };
                json!({
                    "rounds": m.rounds,
                    "on": host(0),
                    "off": host(1),
                    "off_again": host(2),
                    "backend_alone": { "p50_ms": m.backend.0, "p90_ms": m.backend.1 },
                    "on_over_off": { "added_p50": m.ratio(0).0, "added_p90": m.ratio(0).1, "cpu": m.cpu_ratio(0) },
                    "off_again_over_off": { "added_p50": m.ratio(2).0, "added_p90": m.ratio(2).1, "cpu": m.cpu_ratio(2) },
                    "median_paired_difference_ms": { "on_minus_off": m.paired.0, "off_again_minus_off": m.paired.1 },
                    "requests_sent_to_on": m.sent_to_on,
                    "requests_counted_by_on_metrics": m.metrics_counted,
                    "other_processes_cores_busy": m.others_busy,
                    "seconds": m.wall.as_secs_f64(),
                })
            }
        }
    }
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
        let mut firsts = [0usize; 4];
        for _ in 0..400 {
            let order = shuffle.order::<4>();
            let mut sorted = order;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
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
}
