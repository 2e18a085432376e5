//! The backend in another process: starts `tests/python/chat_backend.py`,
//! kills it when done, and drives it through its `/_scripted/` control
//! endpoints with small HTTP/1.1 exchanges on loopback (blocking ones for
//! the synchronous methods of [`Backend`](crate::Backend) and [`Gate`],
//! async ones for the waits). Every wait is bounded.
//!
//! [`Gate`]: crate::Gate

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::record::RecordedRequest;
use crate::reply::Reply;

/// The longest [`Gate::reached`](crate::Gate::reached) and
/// `wait_for_requests` wait on an out-of-process backend.
pub(crate) const GATE_WAIT: Duration = Duration::from_secs(120);

/// How long one control request may ask the backend to wait, in seconds.
const POLL_SECONDS: u64 = 5;

/// The longest one control exchange may take beyond its requested wait.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the script may take to print its port.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `chat_backend.py`; killed on drop.
pub(crate) struct Python {
    addr: SocketAddr,
    child: Child,
    /// The script exits when this pipe closes, so it does not outlive a
    /// test process that dies without dropping the backend.
    stdin: Option<ChildStdin>,
}

impl Python {
    /// Starts `script` with `--port 0` and reads the bound port from the
    /// first line it prints (`... http://127.0.0.1:PORT/v1`).
    pub(crate) fn start(script: &Path) -> anyhow::Result<Python> {
        let interpreter = interpreter();
        let mut child = Command::new(&interpreter)
            .arg(script)
            .args(["--port", "0", "--exit-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", interpreter.display(), script.display()))?;
        let stdin = child.stdin.take();
        let port = match child.stdout.take() {
            Some(stdout) => first_line_port(stdout),
            None => Err(anyhow!("no stdout pipe")),
        };
        let port = match port {
            Ok(port) => port,
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(error.context(format!("starting {}", script.display())));
            }
        };
        Ok(Python {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            child,
            stdin,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the process and waits for it.
    pub(crate) fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn push(&self, replies: Vec<Reply>) {
        let specs: Vec<Value> = replies
            .iter()
            .map(|reply| {
                reply.bind_gates(self.addr);
                reply.to_spec()
            })
            .collect();
        self.control("POST", "/_scripted/replies", Some(&json!(specs)));
    }

    pub(crate) fn pending_replies(&self) -> usize {
        let answer = self.control("GET", "/_scripted/replies", None);
        count_field(&answer, "pending")
    }

    pub(crate) fn set_default(&self, reply: &Reply) {
        reply.bind_gates(self.addr);
        self.control("POST", "/_scripted/default", Some(&reply.to_spec()));
    }

    pub(crate) fn set_models(&self, models: &[String]) {
        self.control("POST", "/_scripted/models", Some(&json!(models)));
    }

    pub(crate) fn set_recording(&self, recording: bool) {
        let body = json!({ "recording": recording });
        self.control("POST", "/_scripted/recording", Some(&body));
    }

    pub(crate) fn quirks(&self, quirks: &Value) {
        self.control("POST", "/_scripted/quirks", Some(quirks));
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        let answer = self.control("GET", "/_scripted/requests", None);
        match parse_log(&answer) {
            Ok(log) => log,
            Err(error) => panic!("python backend at {}: {error}", self.addr),
        }
    }

    pub(crate) fn connections(&self) -> usize {
        let answer = self.control("GET", "/_scripted/connections", None);
        count_field(&answer, "connections")
    }

    pub(crate) fn clear_requests(&self) {
        self.control("DELETE", "/_scripted/requests", None);
    }

    /// Polls until the log holds `count` requests, for at most
    /// [`GATE_WAIT`].
    pub(crate) async fn wait_for_requests(&self, count: usize) {
        let path = format!("/_scripted/requests?wait_for={count}&wait={POLL_SECONDS}");
        let deadline = Instant::now() + GATE_WAIT;
        loop {
            let answer = match exchange_async(self.addr, "GET", &path, None).await {
                Ok(answer) => answer,
                Err(error) => panic!("python backend at {}: {error:#}", self.addr),
            };
            let logged = answer
                .get("requests")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if logged >= count {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "python backend at {}: {logged} of {count} requests after {GATE_WAIT:?}",
                    self.addr
                );
            }
        }
    }

    /// One control exchange; panics when the backend does not answer it
    /// (the methods calling it cannot report errors otherwise).
    fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        match exchange(self.addr, method, path, body) {
            Ok(answer) => answer,
            Err(error) => panic!("python backend at {}: {error:#}", self.addr),
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether gate `id` on the backend at `addr` is reached now; `false` when
/// the backend cannot be asked.
pub(crate) fn gate_reached(addr: SocketAddr, id: &str) -> bool {
    exchange(addr, "GET", &format!("/_scripted/gates/{id}"), None)
        .is_ok_and(|answer| answer.get("reached") == Some(&Value::Bool(true)))
}

/// Releases gate `id` on the backend at `addr`.
pub(crate) fn release_gate(addr: SocketAddr, id: &str) -> anyhow::Result<()> {
    exchange(
        addr,
        "POST",
        &format!("/_scripted/gates/{id}/release"),
        Some(&json!({})),
    )
    .map(drop)
}

/// Polls until gate `id` is reached, for at most [`GATE_WAIT`].
pub(crate) async fn wait_for_gate(addr: SocketAddr, id: &str) -> anyhow::Result<()> {
    let path = format!("/_scripted/gates/{id}?wait={POLL_SECONDS}");
    let deadline = Instant::now() + GATE_WAIT;
    loop {
        let answer = exchange_async(addr, "GET", &path, None).await?;
        if answer.get("reached") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("not reached after {GATE_WAIT:?}");
        }
    }
}

/// `EDGE_RESPONSES_PYTHON`, else the workspace's `.venv/bin/python` if it
/// exists, else `python3`.
fn interpreter() -> PathBuf {
    if let Some(python) = std::env::var_os("EDGE_RESPONSES_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Reads the first line the script prints, within [`STARTUP_TIMEOUT`],
/// and takes the port from its URL.
fn first_line_port(stdout: impl Read + Send + 'static) -> anyhow::Result<u16> {
    let (sender, receiver) = mpsc::channel();
    thread::Builder::new()
        .name("python-backend-start".to_string())
        .spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = sender.send(read);
        })
        .context("spawning the start-up reader")?;
    let line = receiver
        .recv_timeout(STARTUP_TIMEOUT)
        .map_err(|_| anyhow!("no port printed within {STARTUP_TIMEOUT:?}"))?
        .context("reading the first line")?;
    parse_port(&line).ok_or_else(|| anyhow!("no port in its first line {line:?}"))
}

/// The port of the last `host:port` in `line` (`... 127.0.0.1:PORT/v1`).
fn parse_port(line: &str) -> Option<u16> {
    let after = &line[line.rfind(':')? + 1..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|port| *port != 0)
}

fn count_field(answer: &Value, field: &str) -> usize {
    answer
        .get(field)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| panic!("control answer without `{field}`: {answer}"))
}

fn parse_log(answer: &Value) -> Result<Vec<RecordedRequest>, String> {
    answer
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("control answer without `requests`: {answer}"))?
        .iter()
        .map(RecordedRequest::from_log)
        .collect()
}

/// The bytes of one control request; the connection closes after it.
fn request_bytes(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    request.into_bytes()
}

/// The JSON body of a `2xx` control answer.
fn parse_answer(method: &str, path: &str, response: &[u8]) -> anyhow::Result<Value> {
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: incomplete answer"))?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status in {head:?}"))?;
    let body = &response[head_end + 4..];
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(body)
        );
    }
    serde_json::from_slice(body).with_context(|| format!("{method} {path}: answer is not JSON"))
}

/// One blocking control exchange.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(&request_bytes(addr, method, path, body))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("{method} {path}: reading the answer"))?;
    parse_answer(method, path, &response)
}

/// One async control exchange (for the waits, which must not block the
/// runtime).
async fn exchange_async(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let request = request_bytes(addr, method, path, body);
    let limit = IO_TIMEOUT + Duration::from_secs(POLL_SECONDS);
    let response = tokio::time::timeout(limit, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    })
    .await
    .map_err(|_| anyhow!("{method} {path}: no answer within {limit:?}"))?
    .with_context(|| format!("{method} {path}"))?;
    parse_answer(method, path, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_first_line() {
        assert_eq!(
            parse_port("chat_backend listening on http://127.0.0.1:4321/v1\n"),
            Some(4321)
        );
        assert_eq!(parse_port("4321"), None);
        assert_eq!(parse_port("on 127.0.0.1:0"), None);
    }

    #[test]
    fn answers_are_parsed() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}";
        assert_eq!(parse_answer("GET", "/", ok).unwrap(), json!({"a": true}));
        let refused = b"HTTP/1.1 400 Bad Request\r\n\r\n{\"error\":{}}";
        assert!(parse_answer("GET", "/", refused).is_err());
        assert!(parse_answer("GET", "/", b"HTTP/1.1 200").is_err());
    }
}
