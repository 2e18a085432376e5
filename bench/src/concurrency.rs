//! The concurrency phase: thousands of slow streams at once through one
//! host, the last phase of a run (`--only concurrency` runs it alone).
//!
//! The host runs in a process of its own, this binary re-run with the hidden
//! `--serve-host` flag and the same [`crate::host_config`] as the other
//! phases, so the resident memory and open file descriptors a thread samples
//! every 100 ms are the host's alone. The scripted backend stays in the
//! bench process, on its thread, and answers every request with a slow
//! stream: 20 words 250 ms apart (50 ms in a quick run).
//!
//! For each stream count N (1,000 and 5,000; 100 and 300 in a quick run;
//! `--streams` sets others) the phase opens N fresh HTTP/1.1 connections at
//! once and waits until every one is open. Then it sends N streamed
//! `POST /v1/responses` on them, evenly over 80% of one stream's length, so
//! that all N are open at once while new ones still arrive, as on a busy
//! server (sent all at the same instant, the first tokens would measure how
//! long N instantiations take to queue through two cores, and the backend's
//! own accept queue, not the cost of holding N streams), and reads every
//! stream to its end. The same N streams then go straight to the backend
//! (the chat-completions request the component sends for them), then to
//! every `--compare` server.
//!
//! Per stream it records the time to the first `response.output_text.delta`
//! (straight to the backend: the first chunk with content), the time to the
//! end, and how the stream ended: anything but `response.completed` (`data:
//! [DONE]` from the backend), a status other than 200, an I/O error or a
//! timeout is an error, counted by kind. Time to first token through the
//! host minus the backend's own at the same N is what the host adds; the
//! whole stream is held against the ideal, one stream alone straight to the
//! backend. The CPU time of the host, of this process and of the whole
//! machine is taken over each run: other work on a shared machine competes
//! with the host, and the report says how much there was.
//!
//! This module owns the host child process, the load generator for these
//! streams, the process sampling, and the phase's report section.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use edge_responses_host::{Config, Server, DEFAULT_MAX_MEMORY};
use http_body_util::BodyExt;
use hyper::StatusCode;
use scripted_backend::{Backend, Reply, DEFAULT_MODEL};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::client::{find_frame_end, frame_matches, Conn, Probe, Watch};
use crate::report::{Row, Section, Target, Unit};
use crate::stats::Percentiles;
use crate::system::{self, ProcessPeaks, ProcessSampler};
use crate::{compare, progress};

/// The hidden flag the bench re-runs itself with to serve the host in a
/// process of its own.
pub const SERVE_HOST_FLAG: &str = "--serve-host";

/// Targets, held at every stream count.
const TTFT_P99_TARGET_MS: f64 = 20.0;
const RSS_TARGET_BYTES: u64 = 2 << 30;

/// Descriptors a process needs besides two per stream (client and backend
/// side): listeners, the store, the runtime, margin.
const FD_MARGIN: u64 = 256;

/// The requests of a run go out evenly over this share of one stream's
/// length, so all of them are open at once before the first one ends: the
/// host holds N streams while new ones keep arriving, as a busy server does.
const ARRIVAL_SHARE: f64 = 0.8;

/// Pause between two runs, so the previous run's connections are closed
/// and the host is idle again.
const SETTLE: Duration = Duration::from_secs(1);

const MIB: f64 = 1024.0 * 1024.0;

/// What the phase sends.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The stream counts measured, in order.
    pub streams: Vec<usize>,
    /// Words in each answer, one content chunk each.
    pub words: usize,
    /// Pause before every chunk after the first (the role chunk).
    pub gap: Duration,
}

impl Settings {
    pub fn new(quick: bool, streams: Option<Vec<usize>>) -> Settings {
        let (default_streams, gap) = if quick {
            (vec![100, 300], Duration::from_millis(50))
        } else {
            (vec![1000, 5000], Duration::from_millis(250))
        };
        Settings {
            streams: streams.unwrap_or(default_streams),
            words: 20,
            gap,
        }
    }

    /// The backend's answer during the phase.
    fn reply(&self) -> Reply {
        let words = (1..=self.words).map(|i| {
            let space = if i == 1 { "" } else { " " };
            format!("{space}word{i}")
        });
        Reply::chunks(words).delay_between_chunks(self.gap)
    }

    /// How long one stream may take before it counts as timed out: the
    /// host's queue timeout and four times the stream, with margin.
    fn stream_timeout(&self) -> Duration {
        let chunks = u32::try_from(self.words + 3).unwrap_or(u32::MAX);
        edge_responses_host::DEFAULT_QUEUE_TIMEOUT + self.gap * chunks * 4 + Duration::from_secs(30)
    }

    /// The section title, with how long the requests of a run took to go out.
    fn title(&self, spread: Duration) -> String {
        format!(
            "Concurrent slow streams ({} words, {} ms apart, the requests sent over {:.1} s) through one host process",
            self.words,
            self.gap.as_millis(),
            spread.as_secs_f64()
        )
    }
}

/// Which API a target speaks, to know its first token and its proper end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// Responses events: first token `response.output_text.delta`, end
    /// `response.completed`.
    Responses,
    /// Chat-completions chunks: first token the first chunk with content,
    /// end `data: [DONE]`.
    Chat,
}

/// Where one run's streams go.
struct Endpoint {
    addr: SocketAddr,
    probe: Probe,
    api: Api,
}

/// One stream as the load generator saw it.
#[derive(Debug, Clone, Default)]
struct Stream {
    /// How much later than planned the request went out.
    late: Option<Duration>,
    first: Option<Duration>,
    total: Duration,
    /// What went wrong, if anything (the key errors are counted by).
    error: Option<String>,
}

/// N streams to one target.
#[derive(Debug, Clone)]
pub struct Run {
    pub streams: usize,
    /// From the first connect to every connection being open.
    pub opened_in: Duration,
    /// The requests went out evenly over this long (zero: all at once).
    pub spread: Duration,
    /// The latest a request went out after its planned time: how far the
    /// load generator fell behind.
    pub late: Duration,
    /// The most streams open at once.
    pub peak_open: usize,
    pub ttft: Percentiles,
    /// The whole stream, of the streams that completed.
    pub total: Percentiles,
    pub completed: usize,
    pub errors: BTreeMap<String, usize>,
}

impl Run {
    fn new(streams: Vec<Stream>, opened_in: Duration, spread: Duration, peak_open: usize) -> Run {
        let late = streams
            .iter()
            .filter_map(|stream| stream.late)
            .max()
            .unwrap_or_default();
        let mut errors = BTreeMap::new();
        for error in streams.iter().filter_map(|stream| stream.error.as_ref()) {
            *errors.entry(error.clone()).or_insert(0) += 1;
        }
        let ok = || streams.iter().filter(|stream| stream.error.is_none());
        Run {
            streams: streams.len(),
            opened_in,
            spread,
            late,
            peak_open,
            ttft: Percentiles::of(streams.iter().filter_map(|stream| stream.first)),
            total: Percentiles::of(ok().map(|stream| stream.total)),
            completed: ok().count(),
            errors,
        }
    }

    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// The errors by kind, most frequent first, e.g. `4900 HTTP 503
    /// server_overloaded; 2 timeout`.
    pub fn describe_errors(&self) -> String {
        let mut kinds: Vec<_> = self.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn to_json(&self) -> Value {
        json!({
            "streams": self.streams,
            "opened_in_ms": self.opened_in.as_secs_f64() * 1000.0,
            "spread_ms": self.spread.as_secs_f64() * 1000.0,
            "late_max_ms": self.late.as_secs_f64() * 1000.0,
            "peak_open_streams": self.peak_open,
            "time_to_first_token": self.ttft.to_json(),
            "total": self.total.to_json(),
            "completed": self.completed,
            "errors": self.errors,
        })
    }
}

/// Everything measured at one stream count.
#[derive(Debug, Clone)]
pub struct Measured {
    pub edge: Run,
    pub backend: Run,
    /// The host process's peaks while the edge-responses streams ran.
    pub host: ProcessPeaks,
    pub cpu: Cpu,
    /// One run per `--compare` server, in order.
    pub compared: Vec<Run>,
}

/// CPU time used while the edge-responses streams ran.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub wall: Duration,
    /// The host process.
    pub host: Duration,
    /// This process: the backend and the load generator.
    pub bench: Duration,
    /// Every core of the machine, whoever used it.
    pub machine: Duration,
}

impl Cpu {
    /// Cores busy on average.
    fn cores(time: Duration, wall: Duration) -> f64 {
        time.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON)
    }

    /// Cores other processes kept busy on average: work on the machine
    /// that competed with the host.
    fn others(&self) -> f64 {
        let others = self.machine.saturating_sub(self.host + self.bench);
        Cpu::cores(others, self.wall)
    }

    /// `host 0.56, backend and load generator 0.30, other processes 1.10`.
    fn describe(&self) -> String {
        format!(
            "cores busy on average: host {:.2}, backend and load generator {:.2}, other processes {:.2}",
            Cpu::cores(self.host, self.wall),
            Cpu::cores(self.bench, self.wall),
            self.others()
        )
    }
}

/// One stream count: measured, or skipped with the reason.
#[derive(Debug, Clone)]
pub struct Level {
    pub streams: usize,
    pub measured: Result<Measured, String>,
}

/// Warnings and errors the host logged during the phase.
#[derive(Debug, Clone, Default)]
pub struct HostLog {
    pub warnings: usize,
    pub errors: usize,
    /// The first few distinct messages.
    pub first: Vec<String>,
}

/// The whole phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub settings: Settings,
    /// One stream alone, straight to the backend.
    pub ideal: Run,
    /// The requests of each run go out evenly over this long.
    pub spread: Duration,
    /// The host process after one request, before any level.
    pub host_idle: ProcessPeaks,
    pub instance_limit: u64,
    /// The open-files limit both processes run with.
    pub fd_limit: u64,
    pub levels: Vec<Level>,
    pub host_log: HostLog,
}

/// The host in a child process: this binary with [`SERVE_HOST_FLAG`].
/// Closing its stdin stops it; dropping this does that and waits.
struct HostChild {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Kept open so the child never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl HostChild {
    fn start(component: &Path, backend_url: &str, log: &Path) -> anyhow::Result<HostChild> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg(SERVE_HOST_FLAG)
            .arg(backend_url)
            .arg("--component")
            .arg(component)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("starting the host process")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("the host's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line
            .trim()
            .strip_prefix("http://")
            .and_then(|addr| addr.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the host process did not start (it printed {line:?}); see {}",
                log.display()
            );
        };
        Ok(HostChild {
            child,
            stdin,
            _stdout: stdout,
            addr,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HostChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child side of [`HostChild`]: serves `config` on a multi-threaded
/// runtime (as the `edge-responses-host` binary does), prints its URL, and
/// stops when stdin closes. Warnings go to stderr.
pub fn serve_host(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = runtime.block_on(Server::start(config))?;
    println!("{}", server.url());
    std::io::Write::flush(&mut std::io::stdout())?;
    // Serve until the bench closes our stdin (or goes away).
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    runtime.block_on(server.shutdown());
    Ok(())
}

/// Runs the phase against the host (a child process serving `component`),
/// the backend alone, and every server in `compare`.
pub fn run(
    settings: &Settings,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
    compare: &[compare::Target],
) -> anyhow::Result<Phase> {
    let fd_limit = system::raise_fd_limit();
    let log_path = state_dir.join("concurrency-host.log");
    std::fs::create_dir_all(state_dir)?;
    progress(&format!(
        "concurrency: starting the host process (log: {})",
        log_path.display()
    ));
    let host = HostChild::start(component, &backend.url(), &log_path)?;
    // The load generator: one thread, like the other phases. It needs about
    // a quarter of a core at 5,000 streams (the backend's thread included);
    // a second worker would only compete with the host's two for the
    // cores. How far it falls behind its plan is reported with the numbers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let phase = runtime.block_on(measure(settings, &host, backend, compare, fd_limit));
    backend.set_default(Reply::text(crate::REPLY_TEXT));
    drop(host);
    let mut phase = phase?;
    phase.host_log = read_host_log(&log_path);
    if phase.host_log.warnings + phase.host_log.errors > 0 {
        progress(&format!(
            "concurrency: the host logged {} warning(s) and {} error(s) ({}), first: {}",
            phase.host_log.warnings,
            phase.host_log.errors,
            log_path.display(),
            phase.host_log.first.join(" | ")
        ));
    }
    Ok(phase)
}

async fn measure(
    settings: &Settings,
    host: &HostChild,
    backend: &Backend,
    compare: &[compare::Target],
    fd_limit: u64,
) -> anyhow::Result<Phase> {
    let create = json!({
        "model": DEFAULT_MODEL,
        "input": "Tell me a story, slowly",
        "stream": true,
    });
    let responses = Probe::responses(&create);
    // One request with the instant reply: warms the host and shows the
    // chat request the component sends for this input.
    let mut conn = Conn::connect(host.addr).await?;
    let chat = crate::capture_chat_request(backend, &mut conn, &responses).await?;
    drop(conn);
    let edge = Endpoint {
        addr: host.addr,
        probe: responses.clone(),
        api: Api::Responses,
    };
    let direct = Endpoint {
        addr: backend.addr(),
        probe: Probe::chat(chat, Watch::ChatContent),
        api: Api::Chat,
    };
    let others: Vec<Endpoint> = compare
        .iter()
        .map(|target| Endpoint {
            addr: target.addr,
            probe: responses.clone(),
            api: Api::Responses,
        })
        .collect();

    backend.set_default(settings.reply());
    let timeout = settings.stream_timeout();
    let ideal = run_streams(&direct, 1, Duration::ZERO, timeout).await;
    if ideal.completed != 1 {
        bail!(
            "one stream straight to the backend failed: {}",
            ideal.describe_errors()
        );
    }
    let spread = Duration::from_secs_f64(ideal.total.p50 / 1000.0 * ARRIVAL_SHARE);
    tokio::time::sleep(SETTLE).await;
    let host_idle = ProcessPeaks {
        rss: system::rss_of(host.pid()),
        fds: system::fds_of(host.pid()),
    };

    let mut levels = Vec::new();
    for &streams in &settings.streams {
        let needed = 2 * streams as u64 + FD_MARGIN;
        if needed > fd_limit {
            let note = format!(
                "skipped: {streams} streams need about {needed} open files per process, \
                 the limit is {fd_limit} (raise it with ulimit -n)"
            );
            progress(&format!("concurrency: {note}"));
            levels.push(Level {
                streams,
                measured: Err(note),
            });
            continue;
        }
        progress(&format!(
            "concurrency: {streams} streams through edge-responses"
        ));
        let sampler = ProcessSampler::start(host.pid())?;
        let cpu_before = (
            system::cpu_of(host.pid()),
            system::cpu_of(std::process::id()),
            system::machine_busy(),
        );
        let started = Instant::now();
        let edge_run = run_streams(&edge, streams, spread, timeout).await;
        let cpu = Cpu {
            wall: started.elapsed(),
            host: system::cpu_of(host.pid()).saturating_sub(cpu_before.0),
            bench: system::cpu_of(std::process::id()).saturating_sub(cpu_before.1),
            machine: system::machine_busy().saturating_sub(cpu_before.2),
        };
        let host_peaks = sampler.finish();
        log_run("edge-responses", &edge_run);
        progress(&format!(
            "  {}; host peak {:.0} MiB, {} descriptors",
            cpu.describe(),
            host_peaks.rss as f64 / MIB,
            host_peaks.fds
        ));
        tokio::time::sleep(SETTLE).await;

        progress(&format!(
            "concurrency: {streams} streams straight to the backend"
        ));
        let backend_run = run_streams(&direct, streams, spread, timeout).await;
        log_run("backend alone", &backend_run);
        tokio::time::sleep(SETTLE).await;

        let mut compared = Vec::new();
        for (target, endpoint) in compare.iter().zip(&others) {
            progress(&format!(
                "concurrency: {streams} streams through {}",
                target.name
            ));
            let run = run_streams(endpoint, streams, spread, timeout).await;
            log_run(&target.name, &run);
            compared.push(run);
            tokio::time::sleep(SETTLE).await;
        }
        levels.push(Level {
            streams,
            measured: Ok(Measured {
                edge: edge_run,
                backend: backend_run,
                host: host_peaks,
                cpu,
                compared,
            }),
        });
    }
    Ok(Phase {
        settings: settings.clone(),
        ideal,
        spread,
        host_idle,
        instance_limit: u64::from(edge_responses_host::instance_limit(DEFAULT_MAX_MEMORY)),
        fd_limit,
        levels,
        host_log: HostLog::default(),
    })
}

fn log_run(name: &str, run: &Run) {
    let errors = if run.errors.is_empty() {
        String::new()
    } else {
        format!(", errors: {}", run.describe_errors())
    };
    progress(&format!(
        "  {name}: opened in {:.0} ms, {} open at most, sent up to {:.1} ms late, first token p50 {:.1} ms p99 {:.1} ms, \
         whole stream p50 {:.0} ms p99 {:.0} ms, {} of {} completed{errors}",
        run.opened_in.as_secs_f64() * 1000.0,
        run.peak_open,
        run.late.as_secs_f64() * 1000.0,
        run.ttft.p50,
        run.ttft.p99,
        run.total.p50,
        run.total.p99,
        run.completed,
        run.streams,
    ));
}

/// Streams open at the moment, and the most there were.
#[derive(Default)]
struct OpenCount {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl OpenCount {
    fn opened(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens `count` connections to `endpoint` at once; once every one is open
/// (or failed), sends the probe on them evenly over `spread` (all together
/// when it is zero) and reads every stream to its end.
async fn run_streams(
    endpoint: &Endpoint,
    count: usize,
    spread: Duration,
    timeout: Duration,
) -> Run {
    let barrier = Arc::new(Barrier::new(count + 1));
    let go = Arc::new(OnceLock::new());
    let open = Arc::new(OpenCount::default());
    let probe = Arc::new(endpoint.probe.clone());
    let mut streams = JoinSet::new();
    let begin = Instant::now();
    for index in 0..count {
        let (barrier, go, open) = (Arc::clone(&barrier), Arc::clone(&go), Arc::clone(&open));
        let probe = Arc::clone(&probe);
        let (addr, api) = (endpoint.addr, endpoint.api);
        let offset = spread.mul_f64(index as f64 / count as f64);
        streams.spawn(async move {
            let conn = Conn::connect(addr).await;
            barrier.wait().await;
            let planned = *go.get_or_init(Instant::now) + offset;
            tokio::time::sleep_until(planned.into()).await;
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(err) => {
                    return Stream {
                        error: Some(format!("connect: {}", err.root_cause())),
                        ..Stream::default()
                    }
                }
            };
            let mut stream = Stream::default();
            open.opened();
            let read = one_stream(&mut conn, &probe, api, planned, &mut stream);
            if tokio::time::timeout(timeout, read).await.is_err() {
                stream.error = Some("timed out".to_owned());
            }
            open.closed();
            stream
        });
    }
    barrier.wait().await;
    let opened_in = begin.elapsed();
    go.get_or_init(Instant::now);
    let mut done = Vec::with_capacity(count);
    while let Some(stream) = streams.join_next().await {
        done.push(stream.unwrap_or_else(|err| Stream {
            error: Some(format!("load generator task failed: {err}")),
            ..Stream::default()
        }));
    }
    Run::new(done, opened_in, spread, open.peak.load(Ordering::Relaxed))
}

/// Sends `probe` on `conn` and reads the stream to its end, filling in
/// `stream` as it goes (so a timeout keeps what was seen).
async fn one_stream(
    conn: &mut Conn,
    probe: &Probe,
    api: Api,
    planned: Instant,
    stream: &mut Stream,
) {
    let (start, response) = match conn.send(probe).await {
        Ok(sent) => sent,
        Err(err) => {
            stream.error = Some(format!("request: {}", err.root_cause()));
            return;
        }
    };
    stream.late = Some(start.saturating_duration_since(planned));
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body.collect().await.map(|body| body.to_bytes());
        stream.error = Some(status_error(status, bytes.as_deref().unwrap_or_default()));
        return;
    }
    let mut events = Events::new(api);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                stream.total = start.elapsed();
                stream.error = Some(format!("reading the stream: {}", root_cause(&err)));
                return;
            }
        };
        if let Ok(data) = frame.into_data() {
            if events.push(&data) && stream.first.is_none() {
                stream.first = Some(start.elapsed());
            }
        }
    }
    stream.total = start.elapsed();
    stream.error = events.problem();
}

/// `HTTP 503 server_overloaded`: the status and the OpenAI error code (or
/// type) of the body, if it has one.
fn status_error(status: StatusCode, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Value>(body).ok().and_then(|body| {
        let error = &body["error"];
        error["code"]
            .as_str()
            .or_else(|| error["type"].as_str())
            .map(str::to_owned)
    });
    match code {
        Some(code) => format!("HTTP {} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The innermost cause of an error, for counting errors by kind.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Follows one server-sent-event stream: whether the first token has been
/// seen, and which event came last.
struct Events {
    api: Api,
    buffer: Vec<u8>,
    /// How far `buffer` has been searched for a frame end.
    searched: usize,
    first_seen: bool,
    /// The last event name (Responses) or whether `[DONE]` came (chat).
    last: Option<String>,
    done: bool,
}

impl Events {
    fn new(api: Api) -> Events {
        Events {
            api,
            buffer: Vec::new(),
            searched: 0,
            first_seen: false,
            last: None,
            done: false,
        }
    }

    /// Adds bytes; true if they completed the first token's frame.
    fn push(&mut self, bytes: &[u8]) -> bool {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.extend_from_slice(bytes);
        let mut start = 0;
        let mut first_now = false;
        while let Some(end) = find_frame_end(&buffer, self.searched.max(start)) {
            if self.frame(&String::from_utf8_lossy(&buffer[start..end])) {
                first_now = true;
            }
            start = end + 2;
        }
        buffer.drain(..start);
        // A frame end may straddle the next piece.
        self.searched = buffer.len().saturating_sub(1);
        self.buffer = buffer;
        first_now
    }

    /// Takes one frame; true if it is the first token.
    fn frame(&mut self, frame: &str) -> bool {
        let first = match self.api {
            Api::Responses => {
                let name = frame
                    .lines()
                    .find_map(|line| line.strip_prefix("event:"))
                    .map(str::trim);
                if let Some(name) = name {
                    self.last = Some(name.to_owned());
                }
                name == Some("response.output_text.delta")
            }
            Api::Chat => {
                if frame.lines().any(|line| line.trim_end() == "data: [DONE]") {
                    self.done = true;
                }
                !self.first_seen && frame_matches(Watch::ChatContent, frame)
            }
        };
        let first_now = first && !self.first_seen;
        self.first_seen |= first;
        first_now
    }

    /// What was wrong with the stream once it ended, if anything.
    fn problem(&self) -> Option<String> {
        let ended = match self.api {
            Api::Responses => self.last.as_deref() == Some("response.completed"),
            Api::Chat => self.done,
        };
        if !ended {
            let last = match self.api {
                Api::Responses => self.last.as_deref().unwrap_or("nothing"),
                Api::Chat => "no [DONE]",
            };
            return Some(format!("stream ended early (last event: {last})"));
        }
        (!self.first_seen).then(|| "stream completed without a token".to_owned())
    }
}

/// Counts the warning and error lines of the host's log.
fn read_host_log(path: &Path) -> HostLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = HostLog::default();
    for line in text.lines() {
        let level = line.split_whitespace().nth(1).unwrap_or_default();
        match level {
            "WARN" => log.warnings += 1,
            "ERROR" => log.errors += 1,
            _ => continue,
        }
        // The message without the timestamp, to tell kinds apart.
        let message = line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
        if log.first.len() < 3 && !log.first.contains(&message) {
            log.first.push(message);
        }
    }
    log
}

impl Phase {
    /// The phase's report section.
    pub fn section(&self) -> Section {
        let ideal_ms = self.ideal.total.p50;
        let mut rows = Vec::new();
        for level in &self.levels {
            let n = level.streams;
            let m = match &level.measured {
                Ok(m) => m,
                Err(note) => {
                    rows.push(
                        Row::columns(format!("{n} streams"), Unit::Count, [None; 3]).note(note),
                    );
                    continue;
                }
            };
            let (edge, backend) = (&m.edge, &m.backend);
            let p99_added = edge.ttft.p99 - backend.ttft.p99;
            rows.push(
                Row::compare(
                    format!("{n} streams: time to first token, p50"),
                    Unit::Millis,
                    edge.ttft.p50,
                    backend.ttft.p50,
                )
                .note(format!(
                    "sent evenly over {:.0} ms, {} / {} open at most; the load generator up to {:.1} / {:.1} ms late",
                    edge.spread.as_secs_f64() * 1000.0,
                    edge.peak_open,
                    backend.peak_open,
                    edge.late.as_secs_f64() * 1000.0,
                    backend.late.as_secs_f64() * 1000.0
                )),
            );
            rows.push(
                Row::compare(
                    format!("{n} streams: time to first token, p99"),
                    Unit::Millis,
                    edge.ttft.p99,
                    backend.ttft.p99,
                )
                .target(Target::new(
                    format!("added <= {TTFT_P99_TARGET_MS:.0} ms"),
                    p99_added <= TTFT_P99_TARGET_MS && edge.ttft.count > 0,
                )),
            );
            for (label, edge_ms, backend_ms) in [
                ("p50", edge.total.p50, backend.total.p50),
                ("p99", edge.total.p99, backend.total.p99),
            ] {
                rows.push(
                    Row::compare(
                        format!("{n} streams: whole stream {label} / ideal"),
                        Unit::Ratio,
                        edge_ms / ideal_ms,
                        backend_ms / ideal_ms,
                    )
                    .without_added()
                    .note(format!(
                        "{edge_ms:.0} ms / {backend_ms:.0} ms; ideal {ideal_ms:.0} ms (one stream alone)"
                    )),
                );
            }
            let errors = edge.error_count();
            rows.push(
                Row::compare(
                    format!("{n} streams: errors"),
                    Unit::Count,
                    errors as f64,
                    backend.error_count() as f64,
                )
                .target(Target::new("0", errors == 0))
                .note(join_notes(&[
                    ("edge-responses", edge.describe_errors()),
                    ("backend alone", backend.describe_errors()),
                ])),
            );
            rows.push(
                Row::value(
                    format!("{n} streams: host resident memory, peak"),
                    Unit::MiB,
                    m.host.rss as f64 / MIB,
                )
                .target(Target::new("<= 2 GiB", m.host.rss <= RSS_TARGET_BYTES))
                .note(format!(
                    "idle {:.1} MiB; {:.1} KiB per stream above idle",
                    self.host_idle.rss as f64 / MIB,
                    m.host.rss.saturating_sub(self.host_idle.rss) as f64 / 1024.0 / n as f64
                )),
            );
            rows.push(
                Row::value(
                    format!("{n} streams: host open file descriptors, peak"),
                    Unit::Count,
                    m.host.fds as f64,
                )
                .note(format!(
                    "idle {}; limit {}",
                    self.host_idle.fds, self.fd_limit
                )),
            );
            rows.push(
                Row::value(
                    format!("{n} streams: host CPU time per stream"),
                    Unit::Millis,
                    m.cpu.host.as_secs_f64() * 1000.0 / n as f64,
                )
                .note(format!(
                    "{} over {:.1} s",
                    m.cpu.describe(),
                    m.cpu.wall.as_secs_f64()
                )),
            );
            rows.push(
                Row::compare(
                    format!("{n} streams: time to open every connection"),
                    Unit::Millis,
                    edge.opened_in.as_secs_f64() * 1000.0,
                    backend.opened_in.as_secs_f64() * 1000.0,
                )
                .without_added()
                .note("all connect at once, before any request; a full accept queue costs a 1 s SYN retry"),
            );
        }
        if self.host_log.warnings + self.host_log.errors > 0 {
            rows.push(
                Row::value(
                    "host warnings and errors logged",
                    Unit::Count,
                    (self.host_log.warnings + self.host_log.errors) as f64,
                )
                .note(self.host_log.first.join(" | ")),
            );
        }
        Section::new(self.settings.title(self.spread), rows)
    }

    /// Rows for the side-by-side section of compared server `index`:
    /// edge-responses, that server, the backend alone.
    pub fn compare_rows(&self, index: usize) -> Vec<Row> {
        let mut rows = Vec::new();
        for level in &self.levels {
            let n = level.streams;
            let Ok(m) = &level.measured else {
                continue;
            };
            let Some(other) = m.compared.get(index) else {
                continue;
            };
            let (edge, backend) = (&m.edge, &m.backend);
            let three =
                |pick: fn(&Run) -> f64| [Some(pick(edge)), Some(pick(other)), Some(pick(backend))];
            rows.push(Row::columns(
                format!("{n} streams: time to first token, p50"),
                Unit::Millis,
                three(|run| run.ttft.p50),
            ));
            rows.push(Row::columns(
                format!("{n} streams: time to first token, p99"),
                Unit::Millis,
                three(|run| run.ttft.p99),
            ));
            rows.push(
                Row::columns(
                    format!("{n} streams: whole stream, p99"),
                    Unit::Millis,
                    three(|run| run.total.p99),
                )
                .note(format!("ideal {:.0} ms", self.ideal.total.p50)),
            );
            rows.push(
                Row::columns(
                    format!("{n} streams: errors"),
                    Unit::Count,
                    three(|run| run.error_count() as f64),
                )
                .note(other.describe_errors()),
            );
        }
        rows
    }

    pub fn to_json(&self) -> Value {
        let levels: Vec<Value> = self
            .levels
            .iter()
            .map(|level| match &level.measured {
                Ok(m) => json!({
                    "streams": level.streams,
                    "edge_responses": m.edge.to_json(),
                    "backend_alone": m.backend.to_json(),
                    "host_rss_peak_bytes": m.host.rss,
                    "host_fds_peak": m.host.fds,
                    "host_cpu_ms": m.cpu.host.as_secs_f64() * 1000.0,
                    "bench_process_cpu_ms": m.cpu.bench.as_secs_f64() * 1000.0,
                    "machine_busy_cpu_ms": m.cpu.machine.as_secs_f64() * 1000.0,
                    "edge_run_wall_ms": m.cpu.wall.as_secs_f64() * 1000.0,
                    "compared": m.compared.iter().map(Run::to_json).collect::<Vec<_>>(),
                }),
                Err(note) => json!({ "streams": level.streams, "skipped": note }),
            })
            .collect();
        json!({
            "words": self.settings.words,
            "chunk_gap_ms": self.settings.gap.as_secs_f64() * 1000.0,
            "spread_ms": self.spread.as_secs_f64() * 1000.0,
            "ideal": self.ideal.to_json(),
            "host_idle_rss_bytes": self.host_idle.rss,
            "host_idle_fds": self.host_idle.fds,
            "host_instance_limit": self.instance_limit,
            "fd_limit": self.fd_limit,
            "levels": levels,
            "host_log": {
                "warnings": self.host_log.warnings,
                "errors": self.host_log.errors,
                "first": self.host_log.first,
            },
        })
    }
}

/// `edge-responses: 3 timed out` for every non-empty note.
fn join_notes(notes: &[(&str, String)]) -> String {
    let notes: Vec<String> = notes
        .iter()
        .filter(|(_, note)| !note.is_empty())
        .map(|(name, note)| format!("{name}: {note}"))
        .collect();
    notes.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_responses_stream_to_its_end() {
        let mut events = Events::new(Api::Responses);
        assert!(!events.push(b"event: response.created\ndata: {}\n\n"));
        assert!(events.push(
            b"event: response.output_text.delta\ndata: {}\n\nevent: response.output_text.delta\n"
        ));
        assert!(!events.push(b"data: {}\n\n"));
        assert_eq!(
            events.problem().as_deref(),
            Some("stream ended early (last event: response.output_text.delta)")
        );
        assert!(!events.push(b"event: response.completed\ndata: {}\n"));
        assert!(events.problem().is_some());
        assert!(!events.push(b"\n"));
        assert_eq!(events.problem(), None);
    }

    #[test]
    fn a_completed_stream_without_a_token_is_an_error() {
        let mut events = Events::new(Api::Responses);
        events.push(b"event: response.completed\ndata: {}\n\n");
        assert_eq!(
            events.problem().as_deref(),
            Some("stream completed without a token")
        );
    }

    #[test]
    fn follows_a_chat_stream_to_done() {
        let mut events = Events::new(Api::Chat);
        let role = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        assert!(!events.push(role));
        let word = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert!(events.push(word));
        assert!(!events.push(word));
        assert!(events.problem().is_some());
        assert!(!events.push(b"data: [DONE]\n\n"));
        assert_eq!(events.problem(), None);
    }

    #[test]
    fn counts_errors_by_kind() {
        let ok = |ms| Stream {
            late: Some(Duration::from_millis(ms)),
            first: Some(Duration::from_millis(ms)),
            total: Duration::from_millis(100),
            error: None,
        };
        let failed = |kind: &str| Stream {
            error: Some(kind.to_owned()),
            ..Stream::default()
        };
        let streams = vec![
            ok(1),
            ok(3),
            failed("HTTP 503 server_overloaded"),
            failed("timed out"),
            failed("HTTP 503 server_overloaded"),
        ];
        let run = Run::new(streams, Duration::from_millis(7), Duration::ZERO, 2);
        assert_eq!((run.streams, run.completed, run.error_count()), (5, 2, 3));
        assert_eq!(
            run.describe_errors(),
            "2 HTTP 503 server_overloaded; 1 timed out"
        );
        assert_eq!(run.late, Duration::from_millis(3));
        assert_eq!((run.ttft.p50, run.ttft.count), (1.0, 2));
    }

    #[test]
    fn names_status_errors_by_code() {
        let body =
            br#"{"error":{"message":"busy","type":"server_error","code":"server_overloaded"}}"#;
        assert_eq!(
            status_error(StatusCode::SERVICE_UNAVAILABLE, body),
            "HTTP 503 server_overloaded"
        );
        assert_eq!(status_error(StatusCode::BAD_GATEWAY, b"oops"), "HTTP 502");
    }

    #[test]
    fn the_answer_has_the_words_asked_for() {
        let settings = Settings::new(true, Some(vec![10]));
        assert_eq!(settings.streams, vec![10]);
        assert!(settings.stream_timeout() > Duration::from_secs(10));
        assert!(format!("{:?}", settings.reply()).contains("word20"));
    }
}
