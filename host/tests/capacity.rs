//! What concurrent streams cost the host: starts the `edge-responses-host`
//! binary against a scripted backend that holds every stream open, opens
//! many streaming requests at once, and reports the host process's resident
//! memory and memory mappings before, while they are all open, and after
//! they end. Ignored by default (it takes a minute and wants a release
//! build):
//!
//! ```sh
//! cargo build -p edge-responses --target wasm32-wasip2 --profile component
//! CAPACITY_STREAMS=5000 cargo test --release -p edge-responses-host \
//!     --test capacity -- --ignored --nocapture
//! ```
//!
//! `CAPACITY_STREAMS` (default 1000) sets the number of streams,
//! `CAPACITY_INPUT_BYTES` (default a few) the size of each request's input
//! text, and `CAPACITY_MAX_MEMORY` (default 2GiB) the host's
//! `--max-memory`. `CAPACITY_SMAPS=FILE` saves the host's
//! `/proc/PID/smaps` while the streams are open.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scripted_backend::{Backend, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn component() -> PathBuf {
    std::env::var_os("EDGE_RESPONSES_COMPONENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(edge_responses_host::DEFAULT_COMPONENT)
        })
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

fn start_host(backend: &Backend, state: &std::path::Path, max_memory: &str) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-responses-host"))
        .args(["--listen", "127.0.0.1:0", "--backend-url", &backend.url()])
        .args(["--max-memory", max_memory, "--queue-timeout", "60s"])
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
    let limit = lines.next().expect("a second line").expect("readable");
    println!("{listening}\n{limit}");
    let addr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address")
        .to_owned();
    Host { child, addr }
}

/// `(VmRSS, RssAnon, RssFile)` in KiB, and the number of mappings.
fn memory(pid: u32) -> (u64, u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    (
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        maps.lines().count(),
    )
}

fn report(what: &str, pid: u32) -> (u64, u64, u64, usize) {
    let m = memory(pid);
    println!(
        "{what:<28} rss {:>8} KiB  anon {:>8} KiB  file {:>8} KiB  mappings {:>6}",
        m.0, m.1, m.2, m.3
    );
    m
}

/// Opens a streaming request whose input is `padding` and a number, and
/// returns once its response head arrived.
async fn open_stream(addr: &str, i: usize, padding: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = format!(r#"{{"model":"m","input":"{padding}stream {i}","stream":true}}"#);
    let request = format!(
        "POST /v1/responses HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it with --ignored --nocapture"]
async fn memory_per_concurrent_stream() {
    let streams: usize = std::env::var("CAPACITY_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let max_memory = std::env::var("CAPACITY_MAX_MEMORY").unwrap_or_else(|_| "2GiB".into());
    let input_bytes: usize = std::env::var("CAPACITY_INPUT_BYTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let padding: std::sync::Arc<str> = "word ".repeat(input_bytes / 5).into();
    let backend = Backend::start_in_thread().expect("backend starts");
    backend.set_recording(false);
    let (reply, gate) = Reply::text("a held answer").pause_before(1);
    backend.set_default(reply);
    let state = tempfile::tempdir().expect("temp dir");
    let host = start_host(&backend, state.path(), &max_memory);
    let pid = host.child.id();

    // One request first: compiles nothing (cached) but warms every path.
    drop(open_stream(&host.addr, 0, &padding).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = report("before", pid);

    let started = Instant::now();
    let mut open = tokio::task::JoinSet::new();
    for i in 0..streams {
        let (addr, padding) = (host.addr.clone(), padding.clone());
        open.spawn(async move { open_stream(&addr, i, &padding).await });
    }
    let readers = tokio::time::timeout(Duration::from_secs(600), open.join_all())
        .await
        .expect("every stream opens in time");
    println!("{streams} streams open after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = report(&format!("{streams} streams open"), pid);
    if let Some(copy) = std::env::var_os("CAPACITY_SMAPS") {
        let smaps = std::fs::read(format!("/proc/{pid}/smaps")).expect("smaps");
        std::fs::write(copy, smaps).expect("smaps copy");
    }

    gate.release();
    let mut finish = tokio::task::JoinSet::new();
    for mut reader in readers {
        finish.spawn(async move {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.expect("read");
            String::from_utf8_lossy(&rest).contains("response.completed")
        });
    }
    let completed = finish.join_all().await;
    assert!(completed.iter().all(|&ok| ok), "every stream completes");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = report("after, idle", pid);

    let per = |after: u64, before: u64| (after.saturating_sub(before)) / streams as u64;
    println!(
        "per open stream: rss {} KiB, anon {} KiB, file {} KiB, {:.1} mappings",
        per(held.0, before.0),
        per(held.1, before.1),
        per(held.2, before.2),
        (held.3.saturating_sub(before.3)) as f64 / streams as f64
    );
    println!(
        "per idle slot after: rss {} KiB, anon {} KiB, {:.1} mappings",
        per(idle.0, before.0),
        per(idle.1, before.1),
        (idle.3.saturating_sub(before.3)) as f64 / streams as f64
    );
}
