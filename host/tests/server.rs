//! End-to-end checks of the host against the built component.
//!
//! The component is `EDGE_RESPONSES_COMPONENT` or, by default, the workspace's
//! `target/wasm32-wasip2/component/edge_responses.wasm` (built with
//! `cargo build -p edge-responses --target wasm32-wasip2 --profile component`).
//! When it has not been built, these tests print why and pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edge_responses_host::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The built component; `scripts/test` builds it before the tests run.
fn component() -> PathBuf {
    let path = std::env::var_os("EDGE_RESPONSES_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(edge_responses_host::DEFAULT_COMPONENT)
        });
    assert!(
        path.is_file(),
        "no component at {}: build it with `cargo build -p edge-responses --target wasm32-wasip2 --profile component`",
        path.display()
    );
    path
}

async fn start(component: PathBuf, state: &tempfile::TempDir) -> Server {
    let mut config = Config::new(component);
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.path().to_owned();
    // Nothing listens on port 9; no test here reaches the backend.
    config
        .variables
        .insert("backend_url".into(), "http://127.0.0.1:9".into());
    Server::start(config).await.expect("server starts")
}

/// Status and body of `GET path`, over a fresh HTTP/1.1 connection.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
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
async fn more_concurrent_requests_than_instance_slots() {
    let component = component();
    let state = tempfile::tempdir().expect("temp dir");
    let server = start(component, &state).await;

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..200 {
        requests.spawn(get(server.addr(), "/nope"));
    }
    let statuses: Vec<u16> = requests
        .join_all()
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert!(statuses.iter().all(|&status| status == 404), "{statuses:?}");

    server.shutdown().await;
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
