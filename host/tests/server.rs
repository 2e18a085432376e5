//! End-to-end checks of the host against the built component, some with
//! the scripted chat-completions backend behind it.
//!
//! The component is `EDGE_RESPONSES_COMPONENT` or, by default, the workspace's
//! `target/wasm32-wasip2/component/edge_responses.wasm` (built with
//! `cargo build -p edge-responses --target wasm32-wasip2 --profile component`).
//! When it has not been built, these tests print why and pass.

mod common;

use common::component;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edge_responses_host::{Config, Server};
use scripted_backend::{Backend, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The built component; `scripts/test` builds it before the tests run.
async fn start(component: PathBuf, state: &tempfile::TempDir) -> Server {
    // Nothing listens on port 9; the tests using this never reach a backend.
    start_with_backend(component, state, "http://127.0.0.1:9").await
}

async fn start_with_backend(
    component: PathBuf,
    state: &tempfile::TempDir,
    backend_url: &str,
) -> Server {
    let config = config_with_backend(component, state, backend_url);
    Server::start(config).await.expect("server starts")
}

fn config_with_backend(component: PathBuf, state: &tempfile::TempDir, backend_url: &str) -> Config {
    let mut config = Config::new(component);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.path().to_owned();
    config
        .variables
        .insert("backend_url".into(), backend_url.into());
    config
}

/// Status and body of `GET path`, over a fresh HTTP/1.1 connection.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(addr, &format!("GET {path} HTTP/1.1\r\n"), "").await
}

/// Status and body of `POST path` with a JSON body, over a fresh HTTP/1.1
/// connection.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    exchange(addr, &head, body).await
}

/// Like [`post`], but returns the response head (status line and headers)
/// and the raw body.
async fn post_with_head(addr: SocketAddr, path: &str, body: &str) -> (String, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    let raw = exchange_raw(addr, &head, body).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    (head.to_owned(), body.to_owned())
}

/// Sends `head` (request line and headers) and `body` on a fresh connection
/// the server closes after answering; returns the status and raw body.
async fn exchange(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let raw = exchange_raw(addr, head, body).await;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The whole raw response to `head` and `body` on a fresh connection.
async fn exchange_raw(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{head}Host: localhost\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_a_json_404() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let server = start(component, &state).await;

    let (status, body) = get(server.addr(), "/no/such/path").await;
    assert_eq!(status, 404, "body: {body}");
    assert!(body.contains("error"), "body: {body}");

    server.shutdown().await;
    assert!(state.path().join("sqlite_key_value.db").is_file());
    let cached = std::fs::read_dir(state.path().join("cache"))
        .expect("cache dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
        .count();
    assert_eq!(cached, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_side_by_side() {
    let component = component();
    let (first_state, second_state) = (tempfile::tempdir(), tempfile::tempdir());
    let first = start(component.clone(), first_state.as_ref().expect("temp dir")).await;
    let second = start(component, second_state.as_ref().expect("temp dir")).await;
    assert_ne!(first.addr(), second.addr());

    let ((a, _), (b, _)) = tokio::join!(get(first.addr(), "/nope"), get(second.addr(), "/nope"));
    assert_eq!((a, b), (404, 404));

    first.shutdown().await;
    let (status, _) = get(second.addr(), "/nope").await;
    assert_eq!(status, 404);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_are_all_served() {
    // More streams at once than the fixed pool of 128 instances the host
    // once had, all held open by the backend until every one has reached it.
    const STREAMS: usize = 300;
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let (reply, gate) = Reply::text("held open").pause_before(1);
    backend.set_default(reply);
    let server = start_with_backend(component, &state, &backend.url()).await;
    assert!(server.instance_limit() as usize >= STREAMS);

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let body = responses_request(&format!("stream {i}"), true);
        let addr = server.addr();
        requests.spawn(async move { post(addr, "/v1/responses", &body).await });
    }
    wait_until(
        "every stream reaches the backend",
        Duration::from_secs(120),
        || backend.chat_requests().len() >= STREAMS,
    )
    .await;
    gate.release();
    let answers = requests.join_all().await;
    assert_eq!(answers.len(), STREAMS);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("response.completed"), "{body}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_a_full_pool_gets_503_after_the_queue_timeout() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let (reply, gate) = Reply::text("slow answer").pause_before(1);
    backend.set_default(reply);
    let mut config = config_with_backend(component, &state, &backend.url());
    // A pool of its own size is an engine of its own: share the on-disk
    // cache of compiled code so that it loads rather than compiles.
    config.cache = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    config.max_memory = 2 * edge_responses_host::INSTANCE_MEMORY;
    config.queue_timeout = Duration::from_millis(300);
    let server = Server::start(config).await.expect("server starts");
    assert_eq!(server.instance_limit(), 2);

    let slow: Vec<_> = (0..2)
        .map(|i| {
            let body = responses_request(&format!("slow {i}"), true);
            let addr = server.addr();
            tokio::spawn(async move { post(addr, "/v1/responses", &body).await })
        })
        .collect();
    wait_until(
        "both slow requests reach the backend",
        Duration::from_secs(30),
        || backend.chat_requests().len() >= 2,
    )
    .await;

    let started = std::time::Instant::now();
    let body = responses_request("third", false);
    let (head, body) = post_with_head(server.addr(), "/v1/responses", &body).await;
    assert!(started.elapsed() < Duration::from_secs(10), "bounded wait");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{head}"
    );
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "server_overloaded");
    assert_eq!(error["error"]["param"], serde_json::Value::Null);
    assert!(error["error"]["message"].is_string());
    // The host's own errors name the request too.
    let id = error["request_id"].as_str().expect("a request id");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "\r\nx-request-id: {}\r\n",
            id.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert_eq!(backend.chat_requests().len(), 2, "the third never ran");
    // A typed call finds no free instance either, and gets the same error.
    let typed = server
        .responses()
        .get(None, "resp_x")
        .await
        .expect("no trap");
    let error = typed.expect_err("an overloaded server answers with an error");
    assert_eq!(error.status, 503);
    assert_eq!(error.code.as_deref(), Some("server_overloaded"));

    gate.release();
    for request in slow {
        let (status, body) = request.await.expect("task");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("response.completed"), "{body}");
    }
    // With the slots free again, requests are served.
    let (status, body) = post(
        server.addr(),
        "/v1/responses",
        &responses_request("after", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after
/// `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_return_api_errors() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let server = start(component, &state).await;

    let answer = server
        .responses()
        .get(Some("sk-test"), "resp_does_not_exist")
        .await
        .expect("no trap");
    let error = answer.expect_err("an unknown id is an API error");
    assert!(error.status >= 400, "{error:?}");

    server.shutdown().await;
}

/// A Responses request the component answers with one backend call.
fn responses_request(input: &str, stream: bool) -> String {
    serde_json::json!({"model": "m", "input": input, "stream": stream}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_calls_reuse_one_connection() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let server = start_with_backend(component, &state, &backend.url()).await;

    for (input, stream) in [("one", false), ("two", true), ("three", false)] {
        let body = responses_request(input, stream);
        let (status, body) = post(server.addr(), "/v1/responses", &body).await;
        assert_eq!(status, 200, "{input}: {body}");
    }
    let calls = backend.chat_requests();
    assert_eq!(calls.len(), 3);
    assert_eq!(backend.connections(), 1, "one connection for every call");
    // On the wire the request target is the path alone, the host in `Host`.
    assert_eq!(calls[0].path, "/v1/chat/completions");
    let host = backend.addr().to_string();
    assert_eq!(calls[0].header("host"), Some(host.as_str()));

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_gets_a_new_connection() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start().expect("backend starts");
    let addr = backend.addr();
    let server = start_with_backend(component, &state, &backend.url()).await;

    let (status, body) = post(
        server.addr(),
        "/v1/responses",
        &responses_request("before", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The pooled connection to it closes with the backend.
    backend.shutdown().await;
    let backend = Backend::start_on(addr).expect("backend restarts on its port");
    // The host drops the closed connection from its pool once the close has
    // reached it; a request that races the close itself fails, as with any
    // keep-alive client.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for input in ["after", "again"] {
        let (status, body) = post(
            server.addr(),
            "/v1/responses",
            &responses_request(input, false),
        )
        .await;
        assert_eq!(status, 200, "{input}: {body}");
    }
    assert_eq!(backend.chat_requests().len(), 2);
    assert_eq!(backend.connections(), 1);

    server.shutdown().await;
}
