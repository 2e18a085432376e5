//! The built component under a real `spin up` of the unmodified
//! `spin.toml`, configured through its variables, with Spin's default
//! SQLite store and with Redis through a runtime config file: a backend that
//! reads request bodies by `Content-Length` only and sits behind a path with
//! a query string and a required header (as Azure OpenAI does), then the
//! official `openai` SDK tests.
//!
//! Spin is found at `EDGE_RESPONSES_SPIN`, else at
//! `../shared/tools/spin/spin` next to the repository, else on `PATH`;
//! Redis is `redis-server` on `PATH` (`scripts/ensure-redis` installs it).
//! Without them the tests say so loudly and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::mcp::McpServer;
use common::search::SearchProvider;
use common::{component, output_text, parse_sse};
use scripted_backend::redis::RedisServer as Redis;
use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};

const QUERY: &str = "api-version=2024-10-21";

fn spin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("EDGE_RESPONSES_SPIN") {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/spin/spin");
    if shared.exists() {
        return Some(shared);
    }
    on_path("spin")
}

fn skip(what: &str) {
    // Straight to stderr: the test harness captures `eprintln!`.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {what}; the component was not run under Spin ***\n"
    );
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// A Spin runtime config whose default store is `redis`.
fn runtime_config(redis: &Redis, dir: &Path) -> PathBuf {
    let path = dir.join("runtime-config.toml");
    let config = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    std::fs::write(&path, config).expect("the runtime config is written");
    path
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// `spin up` serving the repository's `spin.toml`, killed on drop.
struct Spin {
    child: tokio::process::Child,
    url: String,
    _state: tempfile::TempDir,
}

impl Spin {
    async fn up(spin: &Path, variables: &[(&str, &str)], redis: Option<&Redis>) -> Spin {
        Self::up_with_env(spin, variables, redis, &[]).await
    }

    /// [`Spin::up`] with more environment variables for `spin up`.
    async fn up_with_env(
        spin: &Path,
        variables: &[(&str, &str)],
        redis: Option<&Redis>,
        env: &[(&str, &str)],
    ) -> Spin {
        component();
        let state = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut command = tokio::process::Command::new(spin);
        command
            .arg("up")
            .arg("--from")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("spin.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // `spin up` runs the app in a child of its own: a group of their
            // own lets the test stop both.
            .process_group(0)
            .kill_on_drop(true)
            .envs(env.iter().copied());
        for (name, value) in variables {
            command.arg("--variable").arg(format!("{name}={value}"));
        }
        if let Some(redis) = redis {
            command
                .arg("--runtime-config-file")
                .arg(runtime_config(redis, state.path()));
        }
        let child = command.spawn().expect("spin starts");
        let spin = Spin {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _state: state,
        };
        spin.wait_until_serving().await;
        spin
    }

    async fn wait_until_serving(&self) {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            let answer = client
                .get(format!("{}/v1/responses/resp_none", self.url))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 404) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("spin up did not serve within 60 s");
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, String) {
    let answer = client
        .post(format!("{url}/v1/responses"))
        .json(body)
        .send()
        .await
        .expect("spin answers");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("a body"))
}

/// Create, read, continue (streamed, answered with one JSON completion)
/// and delete under Spin, against a strict Azure-like backend.
async fn strict_backend_scenario(spin: &Path, redis: Option<&Redis>) {
    let backend = Backend::start().expect("backend starts");
    backend.require_content_length(true);
    backend.require_query(QUERY);
    backend.require_header("api-key", "azure-key");
    let path = format!("/openai/deployments/gpt-4o?{QUERY}");
    let origin = backend.origin();
    let spin = Spin::up(
        spin,
        &[
            ("backend_origin", origin.as_str()),
            ("backend_path", path.as_str()),
            ("backend_headers", "api-key: azure-key"),
            ("backend_max_tokens_param", "max_completion_tokens"),
        ],
        redis,
    )
    .await;
    let client = reqwest::Client::new();

    let (status, text) = post(
        &client,
        &spin.url,
        &json!({"model": "gpt-4o", "input": "hello", "max_output_tokens": 20}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(output_text(&first), "Hello! You said: hello");
    let sent = backend.last_request().expect("the backend was called");
    assert_eq!(sent.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(sent.query.as_deref(), Some(QUERY));
    assert_eq!(sent.content_length, Some(sent.raw_body.len() as u64));
    assert_eq!(sent.body["max_completion_tokens"], 20);

    // Spin's key-value store keeps the turn: it can be read and continued.
    let id = first["id"].as_str().expect("an id");
    let stored: Value = client
        .get(format!("{}/v1/responses/{id}", spin.url))
        .send()
        .await
        .expect("spin answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stored, first);
    backend.push(Reply::text("Streamed on.").json_despite_stream());
    let (status, text) = post(
        &client,
        &spin.url,
        &json!({"model": "gpt-4o", "input": "more", "stream": true, "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let frames = parse_sse(&text);
    let (_, completed) = frames
        .iter()
        .find(|(event, _)| event == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed: {text}"));
    let completed: Value = serde_json::from_str(completed).expect("JSON");
    assert_eq!(output_text(&completed["response"]), "Streamed on.");
    assert_eq!(backend.last_request().unwrap().messages().len(), 3);

    // A delete is seen at once; the response is gone.
    let deleted = client
        .delete(format!("{}/v1/responses/{id}", spin.url))
        .send()
        .await
        .expect("spin answers");
    assert_eq!(deleted.status(), 200);
    let gone = client
        .get(format!("{}/v1/responses/{id}", spin.url))
        .send()
        .await
        .expect("spin answers");
    assert_eq!(gone.status(), 404);
}

/// The official `openai` SDK tests against the component under Spin: the
/// Responses API, and conversation objects (their appends and reads go
/// through Spin's store, Redis included).
async fn sdk_scenario(spin: &Path, redis: Option<&Redis>) {
    let backend = Backend::start().expect("backend starts");
    let origin = backend.origin();
    // A real MCP server, reached through the `mcp_servers` variable that
    // feeds both the allow-list and Spin's `allowed_outbound_hosts`.
    let mcp = McpServer::start(false).await;
    let mcp_origin = mcp.as_ref().map(|m| format!("http://127.0.0.1:{}", m.port));
    let search = SearchProvider::start(None);
    let mut variables = vec![
        ("backend_origin", origin.as_str()),
        ("web_search_provider", "searxng"),
        ("web_search_origin", search.url.as_str()),
    ];
    variables.extend(mcp_origin.as_deref().map(|o| ("mcp_servers", o)));
    let spin = Spin::up(spin, &variables, redis).await;
    for suite in [
        "test_openai_sdk.py",
        "test_conversations.py",
        "test_background.py",
    ] {
        common::pytest(&spin.url, &origin, suite, &[], &[]).await;
    }
    if let Some(mcp) = &mcp {
        let env = [("EDGE_RESPONSES_MCP_URL", mcp.url.as_str())];
        let report = common::pytest(&spin.url, &origin, "test_mcp.py", &[], &env).await;
        assert!(report.contains("6 passed"), "{report}");
    }

    // Web search through Spin's outbound HTTP, to the `web_search_origin`
    // it allows: the SDK and Agents SDK tests of the host.
    let env = [("EDGE_RESPONSES_WEB_SEARCH", "1")];
    let report = common::pytest(&spin.url, &origin, "test_web_search.py", &[], &env).await;
    assert!(report.contains("4 passed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_backend_under_spin_with_sqlite() {
    let Some(spin) = spin() else {
        return skip("no Spin CLI found (set EDGE_RESPONSES_SPIN)");
    };
    strict_backend_scenario(&spin, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_backend_under_spin_with_redis() {
    let Some(spin) = spin() else {
        return skip("no Spin CLI found (set EDGE_RESPONSES_SPIN)");
    };
    let Some(redis) = Redis::start("strict_backend_under_spin_with_redis") else {
        return;
    };
    strict_backend_scenario(&spin, Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_under_spin_with_sqlite() {
    let Some(spin) = spin() else {
        return skip("no Spin CLI found (set EDGE_RESPONSES_SPIN)");
    };
    sdk_scenario(&spin, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_under_spin_with_redis() {
    let Some(spin) = spin() else {
        return skip("no Spin CLI found (set EDGE_RESPONSES_SPIN)");
    };
    let Some(redis) = Redis::start("openai_sdk_under_spin_with_redis") else {
        return;
    };
    sdk_scenario(&spin, Some(&redis)).await;
}

/// An OTLP/HTTP collector stand-in: every `POST` body, kept as it came
/// (protobuf, which keeps trace ids as their raw 16 bytes).
struct Collector {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    async fn start() -> Collector {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match stream.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length.min(64 << 20)];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        kept.lock().expect("bodies").push(body);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Collector { url, bodies }
    }

    /// How often `needle` occurs in everything received.
    fn count(&self, needle: &[u8]) -> usize {
        let bodies = self.bodies.lock().expect("bodies");
        bodies
            .iter()
            .map(|body| body.windows(needle.len()).filter(|w| *w == needle).count())
            .sum()
    }
}

/// Under Spin the component needs nothing for traces: `spin up` with
/// `OTEL_EXPORTER_OTLP_ENDPOINT` continues the client's `traceparent` and
/// exports spans of the request, its outbound call to the backend and its
/// key-value calls, all in the client's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_exports_the_requests_spans_in_the_clients_trace() {
    let Some(spin) = spin() else {
        return skip("no Spin CLI found (set EDGE_RESPONSES_SPIN)");
    };
    let collector = Collector::start().await;
    let backend = Backend::start().expect("backend starts");
    let origin = backend.origin();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let spin = Spin::up_with_env(&spin, &[("backend_origin", origin.as_str())], None, &env).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/responses", spin.url))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"model": "m", "input": "trace me"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let trace_bytes: Vec<u8> = (0..trace.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace[i..i + 2], 16).expect("hex"))
        .collect();
    let mut spans = 0;
    for _ in 0..300 {
        spans = collector.count(&trace_bytes);
        if spans >= 3 && collector.count(b"chat/completions") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        spans >= 3,
        "{spans} spans of the client's trace reached the collector"
    );
    assert!(
        collector.count(b"chat/completions") > 0,
        "no span of the backend call"
    );
    assert!(collector.count(b"key_value") > 0, "no key-value span");
    let sent = backend.chat_requests();
    let traceparent = sent[0].header("traceparent").unwrap_or_default();
    assert!(
        traceparent.contains(trace),
        "the backend got {traceparent:?}"
    );
}
