//! The integration-test harness: the built component served by the host,
//! in-process on an ephemeral loopback port with a temporary store, in front
//! of a scripted chat-completions backend: the in-process one (hyper), or,
//! with `EDGE_RESPONSES_TEST_BACKEND=python`, the independent Python one
//! (`tests/python/chat_backend.py`) driven through the same [`Backend`] API.

#![allow(dead_code)]

pub mod mcp;
pub mod search;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edge_responses_host::{Config, Server};
use scripted_backend::Backend;
use serde_json::Value;

/// The component the tests run. Built by `scripts/test` (or
/// `cargo build -p edge-responses --target wasm32-wasip2 --profile component`).
pub fn component() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/wasm32-wasip2/component/edge_responses.wasm");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p edge-responses --target wasm32-wasip2 --profile component` (scripts/test does)",
        path.display()
    );
    path
}

/// The backend the integration tests run against, chosen by the
/// environment variable `EDGE_RESPONSES_TEST_BACKEND`: `scripted` (the
/// default) starts the in-process scripted backend, `python` starts
/// `tests/python/chat_backend.py`.
pub fn start_backend() -> Backend {
    match std::env::var("EDGE_RESPONSES_TEST_BACKEND").as_deref() {
        Ok("python") => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/chat_backend.py");
            Backend::start_python(&script).expect("the python backend starts")
        }
        Ok("scripted") | Ok("") | Err(_) => Backend::start().expect("backend starts"),
        Ok(other) => panic!("EDGE_RESPONSES_TEST_BACKEND={other}: expected `scripted` or `python`"),
    }
}

/// A backend and a host serving the component against it.
pub struct Harness {
    pub backend: Backend,
    pub server: Server,
    pub client: reqwest::Client,
    pub state: tempfile::TempDir,
    variables: BTreeMap<String, String>,
    adjust: fn(&mut Config),
}

impl Harness {
    /// An open service (no API keys).
    pub async fn start() -> Harness {
        Self::with_variables(&[]).await
    }

    /// A service with extra `wasi:config` values.
    pub async fn with_variables(extra: &[(&str, &str)]) -> Harness {
        Self::configured(extra, |_| {}).await
    }

    /// A service with extra `wasi:config` values and host settings set by
    /// `adjust`.
    pub async fn configured(extra: &[(&str, &str)], adjust: fn(&mut Config)) -> Harness {
        let backend = start_backend();
        let state = tempfile::tempdir().expect("temp dir");
        // Removal steps run only where a test asks for them: one create in
        // eight would make the store's call counts and contents vary.
        let mut variables = BTreeMap::from([
            ("backend_url".to_owned(), backend.url()),
            ("retention_sweep_every".to_owned(), "0".to_owned()),
            // Likewise the usage totals each create adds after answering.
            ("usage_tracking".to_owned(), "false".to_owned()),
        ]);
        for (k, v) in extra {
            variables.insert((*k).to_owned(), (*v).to_owned());
        }
        let server = serve(state.path(), &variables, adjust).await;
        Harness {
            backend,
            server,
            client: reqwest::Client::new(),
            state,
            variables,
            adjust,
        }
    }

    /// Stops the host and starts a new one on the same store.
    pub async fn restart(self) -> Harness {
        self.restart_with(&[]).await
    }

    /// [`Harness::restart`], with `changes` to the `wasi:config` values.
    pub async fn restart_with(self, changes: &[(&str, &str)]) -> Harness {
        let Harness {
            backend,
            server,
            client,
            state,
            mut variables,
            adjust,
        } = self;
        for (k, v) in changes {
            variables.insert((*k).to_owned(), (*v).to_owned());
        }
        server.shutdown().await;
        let server = serve(state.path(), &variables, adjust).await;
        Harness {
            backend,
            server,
            client,
            state,
            variables,
            adjust,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// POSTs JSON; returns the status and the parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(self.url(path))).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        send(request).await
    }

    /// POSTs a streaming request and returns its SSE frames as `(event, data)`.
    pub async fn stream(&self, body: &Value) -> Vec<(String, String)> {
        let response = self
            .client
            .post(self.url("/v1/responses"))
            .json(body)
            .send()
            .await
            .expect("request reaches the host");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("body");
        parse_sse(&text)
    }

    /// The events of a streamed create, parsed, without `[DONE]`.
    pub async fn stream_events(&self, body: &Value) -> Vec<(String, Value)> {
        self.stream(body)
            .await
            .into_iter()
            .filter(|(_, data)| data != "[DONE]")
            .map(|(name, data)| (name, serde_json::from_str(&data).expect("JSON event")))
            .collect()
    }
}

async fn serve(
    state: &Path,
    variables: &BTreeMap<String, String>,
    adjust: fn(&mut Config),
) -> Server {
    let mut config = Config::new(component());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.to_path_buf();
    // One compiled-code cache for every test binary: the component is
    // compiled once per build instead of once per binary.
    config.cache = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    config.variables = variables.clone();
    adjust(&mut config);
    Server::start(config).await.expect("host starts")
}

/// Sends a request; returns the status and the parsed JSON body.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request reaches the host");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"));
    (status, body)
}

/// Splits an SSE body into `(event, data)` frames; `event` is empty for
/// frames without an `event:` line (such as `data: [DONE]`).
pub fn parse_sse(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut event = String::new();
            let mut data = Vec::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

/// The text of a Response's output messages.
pub fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

/// The interpreter used to read the SQLite store and to run the SDK tests:
/// `EDGE_RESPONSES_PYTHON`, else the project's `.venv`, else `python3`.
pub fn python() -> String {
    if let Ok(python) = std::env::var("EDGE_RESPONSES_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".to_owned()
}

/// `(key, size in bytes)` of every value in a host's key-value store (Spin's
/// `spin_key_value` table), read with Python's `sqlite3` module.
pub fn stored_values(store: &Path) -> Vec<(String, usize)> {
    let db = rusqlite::Connection::open(store).expect("the store opens");
    let mut query = db
        .prepare("SELECT key, length(value) FROM spin_key_value")
        .expect("the store has Spin's table");
    let rows = query
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("the table reads");
    rows.map(|row| row.expect("a row")).collect()
}

/// Runs pytest over `target` (relative to tests/python) against the
/// Responses API at `base_url` in front of the scripted backend at
/// `backend_origin`, with extra pytest arguments and environment; returns
/// pytest's report, and fails the test when pytest does.
pub async fn pytest(
    base_url: &str,
    backend_origin: &str,
    target: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(target);
    let output = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .arg(&tests)
        .env("EDGE_RESPONSES_BASE_URL", base_url)
        .env("EDGE_RESPONSES_BACKEND_ORIGIN", backend_origin)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "openai SDK tests against {base_url} failed:\n{report}"
    );
    // pytest's summary line ("N passed, M skipped in ..."), for the log.
    let summary = report.lines().rev().find(|l| !l.trim().is_empty());
    eprintln!("pytest {target}: {}", summary.unwrap_or_default());
    report
}
