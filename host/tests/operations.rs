//! Operations, end to end against the built component: request ids,
//! `/healthz` and `/readyz`, Prometheus metrics, the request log line, and
//! a background response whose host is killed.
//!
//! Servers run in this process (the library), except for the log and kill
//! tests, which run the `edge-responses-host` binary. Every
//! backend is the scripted one on loopback. Build the component first:
//! `cargo build -p edge-responses --target wasm32-wasip2 --profile component`.

mod common;

use common::component;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_responses_host::{Config, Server};
use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A closed loopback port: connecting to it is refused.
fn dead_backend_url() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    format!("http://{addr}/v1")
}

fn server_config(state: &tempfile::TempDir, backend_url: &str) -> Config {
    let mut config = Config::new(component());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.path().to_owned();
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    config
        .variables
        .insert("backend_url".into(), backend_url.into());
    config
}

/// A response as read off the wire: status, headers (names lowercased) and
/// body (de-chunked).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

/// One request on a connection of its own, `extra` being more header lines
/// (each ending in `\r\n`).
async fn send(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = match headers.get("transfer-encoding") {
        Some(coding) if coding.contains("chunked") => dechunk(body),
        _ => body.to_owned(),
    };
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, "GET", path, "", "").await
}

async fn create(addr: SocketAddr, input: &str, stream: bool, extra: &str) -> Answer {
    let body = json!({"model": "m", "input": input, "stream": stream}).to_string();
    send(addr, "POST", "/v1/responses", extra, &body).await
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// One sample of a scrape: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text scrape (label values here hold no `,`
/// or `"`).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("a label");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
        .sum()
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|sample| sample.name == name)
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answer.headers
    );
    samples(&answer.body)
}

/// Scrapes until `done` holds for the samples (metrics are recorded as the
/// body ends, which can trail the client's read by a moment).
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(addr).await;
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 28
        && id.starts_with("req_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const REQUESTS: &str = "edge_responses_requests_total";
const CREATES: &[(&str, &str)] = &[("route", "/v1/responses"), ("method", "POST")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_requests_backend_calls_and_store_calls() {
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let server = Server::start(server_config(&state, &backend.url()))
        .await
        .expect("server starts");
    let metrics = server.metrics_addr().expect("a metrics address");
    let before = scrape(metrics).await;
    assert_eq!(value(&before, REQUESTS, &[]), 0.0);
    assert_eq!(
        value(&before, "edge_responses_instance_limit", &[]),
        f64::from(server.instance_limit())
    );
    for gauge in ["instances_in_use", "requests_waiting"] {
        assert!(has(&before, &format!("edge_responses_{gauge}")), "{gauge}");
    }

    let plain = create(server.addr(), "plain", false, "").await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let stream = create(server.addr(), "streamed", true, "").await;
    assert_eq!(stream.status, 200, "{}", stream.body);
    assert!(
        stream.body.contains("response.completed"),
        "{}",
        stream.body
    );
    let missing = get(server.addr(), "/no/such/path").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    backend.push(Reply::error(500, "the model crashed"));
    let failed = create(server.addr(), "fails", false, "").await;
    assert!(failed.status >= 500, "{}: {}", failed.status, failed.body);
    let failed_status = failed.status.to_string();

    let samples = scrape_until(metrics, "four requests and their backend calls", |s| {
        let counted = value(s, "edge_responses_backend_requests_total", &[]);
        let timed = value(
            s,
            "edge_responses_backend_request_duration_seconds_count",
            &[],
        );
        value(s, REQUESTS, &[]) >= 4.0 && counted >= 3.0 && timed == counted
    })
    .await;
    let ok = [CREATES, &[("status", "200")]].concat();
    assert_eq!(value(&samples, REQUESTS, &ok), 2.0);
    let not_found = [("route", "other"), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&samples, REQUESTS, &not_found), 1.0);
    let failure = [CREATES, &[("status", failed_status.as_str())]].concat();
    assert_eq!(value(&samples, REQUESTS, &failure), 1.0);

    let route = [("route", "/v1/responses")];
    for histogram in ["request_duration_seconds", "time_to_first_byte_seconds"] {
        let count = format!("edge_responses_{histogram}_count");
        assert_eq!(value(&samples, &count, &route), 3.0, "{histogram}");
        let sum = format!("edge_responses_{histogram}_sum");
        assert!(value(&samples, &sum, &route) > 0.0, "{histogram}");
        let infinite = [("route", "/v1/responses"), ("le", "+Inf")];
        let bucket = format!("edge_responses_{histogram}_bucket");
        assert_eq!(value(&samples, &bucket, &infinite), 3.0, "{histogram}");
    }

    let backend_calls = "edge_responses_backend_requests_total";
    assert_eq!(value(&samples, backend_calls, &[("status", "200")]), 2.0);
    assert!(value(&samples, backend_calls, &[("status", "500")]) >= 1.0);
    let backend_count = "edge_responses_backend_request_duration_seconds_count";
    assert_eq!(
        value(&samples, backend_count, &[]),
        value(&samples, backend_calls, &[])
    );

    // Instances end a moment after their last byte, some with key-value
    // calls (usage totals) after the answer.
    let idle = scrape_until(metrics, "idle instances", |s| {
        value(s, "edge_responses_instances_in_use", &[]) == 0.0
    })
    .await;
    assert_eq!(value(&idle, "edge_responses_requests_waiting", &[]), 0.0);

    // Every key-value call the component made, by operation, as the
    // server's own count has them, once no instance is left to make more.
    let kv = server.kv_stats();
    let settled = scrape(metrics).await;
    assert!(kv.total() > 0);
    let calls = "edge_responses_keyvalue_operations_total";
    assert_eq!(value(&settled, calls, &[]), kv.total() as f64);
    for (op, count) in kv.fields() {
        assert_eq!(value(&settled, calls, &[("op", op)]), count as f64, "{op}");
    }
    assert!(
        value(
            &settled,
            "edge_responses_keyvalue_operation_duration_seconds_count",
            &[]
        ) > 0.0
    );

    // The stream's first token; the plain answer has none.
    let first_token = "edge_responses_time_to_first_token_seconds_count";
    assert_eq!(value(&samples, first_token, &route), 1.0);
    // Tokens by model, as the component reported them for both creates.
    let tokens = "edge_responses_tokens_total";
    let counted = scrape_until(metrics, "tokens of both creates", |s| {
        value(s, tokens, &[("model", "m"), ("direction", "output")]) >= 2.0
    })
    .await;
    assert!(value(&counted, tokens, &[("model", "m"), ("direction", "input")]) >= 2.0);
    assert_eq!(
        value(&counted, tokens, &[]),
        value(&counted, tokens, &[("model", "m")])
    );

    // Metrics are on their own listener only.
    let elsewhere = get(metrics, "/other").await;
    assert_eq!(elsewhere.status, 404);
    let on_the_api = get(server.addr(), "/metrics").await;
    assert_eq!(on_the_api.status, 404);
    assert!(server
        .metrics_text()
        .contains("edge_responses_requests_total"));

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_replaced_or_made() {
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let server = Server::start(server_config(&state, &backend.url()))
        .await
        .expect("server starts");

    for stream in [false, true] {
        let kept = create(
            server.addr(),
            "kept",
            stream,
            "X-Request-Id: client-7.a:b_c\r\n",
        )
        .await;
        assert_eq!(kept.status, 200, "{}", kept.body);
        assert_eq!(kept.header("x-request-id"), Some("client-7.a:b_c"));
        let sent = backend.chat_requests().pop().expect("a chat request");
        assert_eq!(sent.header("x-request-id"), Some("client-7.a:b_c"));

        let replaced = create(
            server.addr(),
            "replaced",
            stream,
            "X-Request-Id: not valid!\r\n",
        )
        .await;
        let id = replaced.header("x-request-id").expect("an id");
        assert!(is_generated_id(id), "{id}");
        let sent = backend.chat_requests().pop().expect("a chat request");
        assert_eq!(sent.header("x-request-id"), Some(id));

        let made = create(server.addr(), "made", stream, "").await;
        let made_id = made.header("x-request-id").expect("an id");
        assert!(is_generated_id(made_id), "{made_id}");
        assert_ne!(made_id, id);
    }

    // Longer than 128 characters: replaced.
    let long = format!("X-Request-Id: {}\r\n", "x".repeat(129));
    let answer = send(server.addr(), "GET", "/no/such/path", &long, "").await;
    assert!(is_generated_id(
        answer.header("x-request-id").expect("an id")
    ));
    // The component's errors and the host's own answers carry it too.
    let answer = send(
        server.addr(),
        "GET",
        "/no/such/path",
        "x-request-id: lookup-1\r\n",
        "",
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("x-request-id"), Some("lookup-1"));
    let health = send(
        server.addr(),
        "GET",
        "/healthz",
        "x-request-id: probe-1\r\n",
        "",
    )
    .await;
    assert_eq!(health.header("x-request-id"), Some("probe-1"));
    assert!(is_generated_id(
        get(server.addr(), "/readyz")
            .await
            .header("x-request-id")
            .expect("an id")
    ));

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_answered_by_the_host() {
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let mut config = server_config(&state, &backend.url());
    // One instance, held by a stream: health checks take none.
    config.cache = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    config.max_memory = edge_responses_host::INSTANCE_MEMORY;
    config.queue_timeout = Duration::from_millis(300);
    let server = Server::start(config).await.expect("server starts");
    assert_eq!(server.instance_limit(), 1);

    let health = get(server.addr(), "/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = get(server.addr(), "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.json(),
        json!({"status": "ok", "checks": {"component": "ok", "store": "ok"}})
    );
    let with_backend = get(server.addr(), "/readyz?backend=true").await;
    assert_eq!(with_backend.status, 200, "{}", with_backend.body);
    assert_eq!(with_backend.json()["checks"]["backend"], "ok");
    let models = backend
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/models")
        .count();
    assert_eq!(models, 1, "the readiness check asked the backend once");
    assert_eq!(
        server.kv_stats().total(),
        0,
        "the host's read is not a guest call"
    );

    let (reply, gate) = Reply::text("held").pause_before(1);
    backend.push(reply);
    let addr = server.addr();
    let held = tokio::spawn(async move { create(addr, "held", true, "").await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.chat_requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the held stream never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let turned_away = create(server.addr(), "no room", false, "x-request-id: busy-1\r\n").await;
    assert_eq!(turned_away.status, 503, "{}", turned_away.body);
    assert_eq!(turned_away.header("x-request-id"), Some("busy-1"));
    let health = get(server.addr(), "/healthz").await;
    let ready = get(server.addr(), "/readyz").await;
    assert_eq!((health.status, ready.status), (200, 200), "{}", ready.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    gate.release();
    let held = held.await.expect("task");
    assert_eq!(held.status, 200, "{}", held.body);

    let wrong_method = send(server.addr(), "POST", "/healthz", "", "{}").await;
    assert_eq!(wrong_method.status, 405);
    let metrics = server.metrics_addr().expect("metrics");
    let samples = scrape_until(metrics, "the health requests", |s| {
        value(s, REQUESTS, &[("route", "/healthz")]) >= 3.0
    })
    .await;
    let health = [("route", "/healthz"), ("method", "GET"), ("status", "200")];
    assert_eq!(value(&samples, REQUESTS, &health), 2.0);
    let refused = [("route", "/healthz"), ("method", "POST"), ("status", "405")];
    assert_eq!(value(&samples, REQUESTS, &refused), 1.0);
    assert_eq!(
        value(
            &samples,
            REQUESTS,
            &[("route", "/readyz"), ("status", "200")]
        ),
        3.0
    );
    server.shutdown().await;

    // A backend that does not answer fails the backend check only.
    let state = tempfile::tempdir().expect("temp dir");
    let server = Server::start(server_config(&state, &dead_backend_url()))
        .await
        .expect("server starts");
    assert_eq!(get(server.addr(), "/readyz").await.status, 200);
    let started = Instant::now();
    let unready = get(server.addr(), "/readyz?backend=true").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(unready.status, 503, "{}", unready.body);
    assert_eq!(unready.header("content-type"), Some("application/json"));
    let unready = unready.json();
    assert_eq!(unready["status"], "unavailable");
    assert_eq!(unready["checks"]["store"], "ok");
    let reason = unready["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("backend: the backend did not answer"),
        "{reason}"
    );
    assert_eq!(get(server.addr(), "/healthz").await.status, 200);
    server.shutdown().await;

    // Routed backends are asked too, each under a check of its own.
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let mut config = server_config(&state, &backend.url());
    let routes = json!([{"models": "x*", "url": dead_backend_url()}]).to_string();
    config.variables.insert("backends".into(), routes);
    let server = Server::start(config).await.expect("server starts");
    let unready = get(server.addr(), "/readyz?backend=true").await;
    assert_eq!(unready.status, 503, "{}", unready.body);
    let unready = unready.json();
    assert_eq!(unready["checks"]["backend"], "ok", "{unready}");
    let routed = unready["checks"]["backends[0]"]
        .as_str()
        .unwrap_or_default();
    assert!(
        routed.starts_with("the backend did not answer"),
        "{unready}"
    );
    server.shutdown().await;
}

/// The host binary, killed on drop, and the lines it writes to stderr.
struct Host {
    child: Child,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts the binary with its key-value store in `state`. Its state
    /// directory (the compiled-component cache) is shared by the tests of
    /// this file and kept between runs, so the component compiles once.
    fn start(backend: &Backend, state: &std::path::Path, args: &[&str]) -> Host {
        let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operations-host");
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-responses-host"))
            .args(["--listen", "127.0.0.1:0", "--backend-url", &backend.url()])
            .arg("--state-dir")
            .arg(shared)
            .arg("--store")
            .arg(state.join("kv.db"))
            .arg("--component")
            .arg(component())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the host starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut next = || lines.next().expect("a line").expect("readable");
        let address = |line: String, after: &str| -> SocketAddr {
            line.split(after)
                .nth(1)
                .and_then(|rest| rest.split(['/', ' ']).next())
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("an address in {line:?}"))
        };
        let addr = address(next(), "http://");
        let _limit = next();
        let metrics = args
            .contains(&"--metrics-listen")
            .then(|| address(next(), "metrics on http://"));
        std::thread::spawn(move || lines.for_each(drop));
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Host {
            child,
            addr,
            metrics,
            stderr: receiver,
        }
    }

    /// The stderr lines up to and including the first that `wanted` picks,
    /// within 10 seconds.
    fn lines_until(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let done = wanted(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no such line within 10 s; saw {seen:#?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_line_per_request() {
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let host = Host::start(
        &backend,
        state.path(),
        &["--log-format", "json", "--metrics-listen", "127.0.0.1:0"],
    );

    let answer = create(host.addr, "logged", false, "x-request-id: log-test-1\r\n").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let lines = host.lines_until(|line| line.contains("\"log-test-1\""));
    let records: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let record = records.last().expect("the request's line");
    assert_eq!(record["target"], edge_responses_host::REQUEST_LOG_TARGET);
    assert_eq!(record["level"], "INFO");
    assert!(record["timestamp"].is_string(), "{record}");
    assert_eq!(record["request_id"], "log-test-1");
    assert_eq!(record["method"], "POST");
    assert_eq!(record["route"], "/v1/responses");
    assert_eq!(record["path"], "/v1/responses");
    assert_eq!(record["status"], 200);
    for field in ["duration_ms", "ttfb_ms", "backend_ms"] {
        assert!(
            record[field].as_f64().is_some_and(|ms| ms >= 0.0),
            "{field}: {record}"
        );
    }
    assert!(record["ttfb_ms"].as_f64() <= record["duration_ms"].as_f64());
    assert_eq!(record["backend_calls"], 1);
    assert_eq!(record["backend_status"], "200");
    // What the component reports, when it does: not a line of its own.
    if record.get("model").is_some() {
        assert_eq!(record["model"], "m");
        assert!(record["tenant"].is_string(), "{record}");
        assert!(record["input_tokens"].is_u64(), "{record}");
        assert!(record["output_tokens"].is_u64(), "{record}");
        assert_eq!(record["stored"], true);
    }
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("edge-responses-request")),
        "{lines:#?}"
    );

    // A request the component answers without a backend call.
    let missing = send(
        host.addr,
        "GET",
        "/v1/responses/resp_nope",
        "x-request-id: log-test-2\r\n",
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
    let lines = host.lines_until(|line| line.contains("\"log-test-2\""));
    let record: Value = serde_json::from_str(lines.last().expect("a line")).expect("JSON");
    assert_eq!(record["route"], "/v1/responses/{id}");
    assert_eq!(record["path"], "/v1/responses/resp_nope");
    assert_eq!(record["status"], 404);
    assert_eq!(record["backend_calls"], 0);
    assert!(record.get("backend_status").is_none(), "{record}");
    assert!(record.get("model").is_none(), "{record}");

    // What the component writes when something goes wrong is a JSON line
    // too, naming its request.
    backend.push(Reply::error(500, "the model fell over"));
    let failed = create(host.addr, "fails", false, "x-request-id: log-test-3\r\n").await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    let lines = host.lines_until(|line| {
        line.contains("\"log-test-3\"") && line.contains(edge_responses_host::REQUEST_LOG_TARGET)
    });
    let records: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let warning = records
        .iter()
        .find(|r| r["target"] == edge_responses_host::GUEST_LOG_TARGET)
        .unwrap_or_else(|| panic!("no component line in {records:#?}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["request_id"], "log-test-3");
    let message = warning["fields"]["message"]
        .as_str()
        .or(warning["message"].as_str())
        .unwrap_or_default();
    assert!(message.contains("answered 500"), "{warning}");

    // The flag's metrics listener serves the same requests.
    let samples = scrape(host.metrics.expect("a metrics address")).await;
    let ok = [CREATES, &[("status", "200")]].concat();
    assert_eq!(value(&samples, REQUESTS, &ok), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_are_readable_lines() {
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let host = Host::start(&backend, state.path(), &[]);
    assert!(host.metrics.is_none());

    let answer = get(host.addr, "/healthz").await;
    let id = answer.header("x-request-id").expect("an id").to_owned();
    let lines = host.lines_until(|line| line.contains(&id));
    let line = lines.last().expect("a line");
    assert!(
        line.contains(" INFO edge_responses::request: request "),
        "{line}"
    );
    for field in [
        format!("request_id=\"{id}\""),
        "method=\"GET\"".to_owned(),
        "route=\"/healthz\"".to_owned(),
        "status=200".to_owned(),
        "duration_ms=".to_owned(),
        "backend_calls=0".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_the_component_compiles() {
    let backend = Backend::start().expect("backend starts");
    // A fresh state directory: no compiled component to load, so loading
    // takes the seconds compiling takes.
    let state = tempfile::tempdir().expect("temp dir");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-responses-host"))
        .args([
            "--listen",
            &addr.to_string(),
            "--backend-url",
            &backend.url(),
        ])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--component")
        .arg(component())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the host starts");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    let host = Host {
        child,
        addr,
        metrics: None,
        stderr: mpsc::channel().1,
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "/healthz never answered");
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut raw = Vec::new();
            if stream.write_all(request.as_bytes()).await.is_ok()
                && stream.read_to_end(&mut raw).await.is_ok()
                && raw.starts_with(b"HTTP/1.1 200")
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request for the component waits for it.
    let waiting = tokio::spawn(async move { create(addr, "early", false, "").await });
    let ready = get(host.addr, "/readyz").await;
    let loaded = listening.try_recv().is_ok();
    if !loaded {
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(
            ready.json()["checks"]["component"],
            "the component is loading"
        );
    }
    let early = waiting.await.expect("task");
    assert_eq!(early.status, 200, "{}", early.body);
    assert_eq!(get(host.addr, "/readyz").await.status, 200);
}

/// A background response whose host is killed mid-work: a new host on the
/// same store shows it `in_progress` while the worker's lease runs, then
/// `failed` once the lease has run out (moved into the past in the SQLite
/// store rather than waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_background_response_fails_after_its_lease() {
    let backend = Backend::start().expect("backend starts");
    let (reply, gate) = Reply::text("never sent").pause_before(0);
    backend.push(reply);
    let state = tempfile::tempdir().expect("temp dir");
    let host = Host::start(&backend, state.path(), &[]);
    let create = json!({"model": "m", "input": "x", "background": true}).to_string();
    let queued = send(host.addr, "POST", "/v1/responses", "", &create).await;
    assert_eq!(queued.status, 200, "{}", queued.body);
    let queued = queued.json();
    assert_eq!(queued["status"], "queued");
    let path = format!("/v1/responses/{}", queued["id"].as_str().expect("an id"));
    gate.reached().await;

    // SIGKILL: the worker dies mid-work.
    drop(host);
    drop(gate);
    let host = Host::start(&backend, state.path(), &[]);
    let running = get(host.addr, &path).await.json();
    assert_eq!(
        running["status"], "in_progress",
        "its lease still runs: {running}"
    );

    // A minute on: the lease is in the past.
    let db = rusqlite::Connection::open(state.path().join("kv.db")).expect("store");
    let (key, value): (String, Vec<u8>) = db
        .query_row(
            "SELECT key, value FROM spin_key_value WHERE key LIKE ?1",
            [format!(
                "%/bg/{}",
                queued["id"].as_str().unwrap_or_default()
            )],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the job is stored");
    let mut job: Value = serde_json::from_slice(&value).expect("a JSON job");
    job["lease_until"] = json!(job["lease_until"].as_i64().expect("a lease") - 120);
    db.execute(
        "UPDATE spin_key_value SET value = ?1 WHERE key = ?2",
        rusqlite::params![serde_json::to_vec(&job).expect("encodes"), key],
    )
    .expect("the lease moves");
    let failed = get(host.addr, &path).await.json();
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stopped before it finished"), "{message}");
    // And stays so.
    assert_eq!(get(host.addr, &path).await.json()["status"], "failed");
}

/// A host told to stop (SIGTERM) while a background response waits on its
/// backend finishes it before it exits: a new host on the same store reads
/// it `completed`. With a shutdown timeout shorter than the work, the host
/// exits anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_host_finishes_its_background_responses() {
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    for (timeout, held, finished) in [("30s", 1_500, true), ("1s", 4_000, false)] {
        let (reply, gate) = Reply::text("finished on the way out").pause_before(0);
        backend.push(reply);
        let mut host = Host::start(&backend, state.path(), &["--shutdown-timeout", timeout]);
        let create = json!({"model": "m", "input": "x", "background": true}).to_string();
        let queued = send(host.addr, "POST", "/v1/responses", "", &create)
            .await
            .json();
        let path = format!("/v1/responses/{}", queued["id"].as_str().expect("an id"));
        gate.reached().await;

        let stopped = Command::new("kill")
            .args(["-TERM", &host.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(stopped.success());
        let sent = Instant::now();
        tokio::time::sleep(Duration::from_millis(held)).await;
        gate.release();
        let status = loop {
            if let Some(status) = host.child.try_wait().expect("the host's status") {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(60),
                "the host never exited"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{status}");
        drop(host);

        let host = Host::start(&backend, state.path(), &[]);
        let read = get(host.addr, &path).await.json();
        let expected = if finished { "completed" } else { "in_progress" };
        assert_eq!(
            read["status"], expected,
            "shutdown timeout {timeout}: {read}"
        );
    }
}
