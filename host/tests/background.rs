//! A background response whose host is killed mid-work: the
//! `edge-responses-host` binary serves a background create against a
//! backend that holds its answer, is killed with SIGKILL, and a new host on
//! the same store shows the response `in_progress` while the worker's lease
//! runs, then `failed` once it has run out (the lease is moved into the
//! past in the SQLite store rather than waited for).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn component() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(edge_responses_host::DEFAULT_COMPONENT)
}

/// The host process, killed on drop.
struct Host {
    child: Child,
    addr: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(backend: &Backend, state: &Path) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-responses-host"))
        .args(["--listen", "127.0.0.1:0", "--backend-url", &backend.url()])
        .arg("--state-dir")
        .arg(state)
        .arg("--component")
        .arg(component())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the host starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let listening = lines.next().expect("a first line").expect("readable");
    let addr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address")
        .to_owned();
    // The rest of its output is not read; keep the pipe drained.
    std::thread::spawn(move || lines.for_each(drop));
    Host { child, addr }
}

/// One HTTP/1.1 exchange on its own connection: status and JSON body.
async fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = match head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        true => dechunk(body),
        false => body.to_owned(),
    };
    (status, serde_json::from_str(&body).expect("a JSON body"))
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
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_background_response_fails_after_its_lease() {
    assert!(
        component().exists(),
        "build the component first: cargo build -p edge-responses --target wasm32-wasip2 --profile component"
    );
    let backend = Backend::start().expect("backend starts");
    let (reply, gate) = Reply::text("never sent").pause_before(0);
    backend.push(reply);
    let state = tempfile::tempdir().expect("temp dir");
    let host = start_host(&backend, state.path());
    let create = json!({"model": "m", "input": "x", "background": true});
    let (status, queued) = http(&host.addr, "POST", "/v1/responses", Some(&create)).await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["status"], "queued");
    let id = queued["id"].as_str().expect("an id").to_owned();
    gate.reached().await;

    // SIGKILL: the worker dies mid-work.
    drop(host);
    drop(gate);
    let host = start_host(&backend, state.path());
    let path = format!("/v1/responses/{id}");
    let (_, running) = http(&host.addr, "GET", &path, None).await;
    assert_eq!(
        running["status"], "in_progress",
        "its lease still runs: {running}"
    );

    // A minute on: the lease is in the past.
    let db = rusqlite::Connection::open(state.path().join("sqlite_key_value.db")).expect("store");
    let (key, value): (String, Vec<u8>) = db
        .query_row(
            "SELECT key, value FROM spin_key_value WHERE key LIKE ?1",
            [format!("%/bg/{id}")],
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
    let (_, failed) = http(&host.addr, "GET", &path, None).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stopped before it finished"), "{message}");
    // And stays so.
    let (_, again) = http(&host.addr, "GET", &path, None).await;
    assert_eq!(again["status"], "failed");
}
