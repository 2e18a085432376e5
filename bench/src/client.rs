//! The load generator: one HTTP/1.1 keep-alive connection per concurrent
//! worker (`TCP_NODELAY`, no pool, no retries), requests described as
//! [`Probe`]s, and server-sent events scanned incrementally so the time to
//! the first token is taken when its frame arrives, not when the body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Which event of a streamed body counts as the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing: the body is read to its end.
    Nothing,
    /// A Responses `response.output_text.delta` event.
    OutputTextDelta,
    /// A chat-completions chunk whose `choices[0].delta.content` is not empty.
    ChatContent,
}

/// One request, sent the same way every time.
#[derive(Debug, Clone)]
pub struct Probe {
    pub method: Method,
    pub path: &'static str,
    /// The status a correct answer has.
    pub status: StatusCode,
    pub body: Bytes,
    pub watch: Watch,
    /// Keep the response body (for reading ids out of it).
    pub keep_body: bool,
}

impl Probe {
    /// `POST /v1/responses` with a JSON body.
    pub fn responses(body: &Value) -> Probe {
        let watch = if body.get("stream").and_then(Value::as_bool) == Some(true) {
            Watch::OutputTextDelta
        } else {
            Watch::Nothing
        };
        Probe {
            method: Method::POST,
            path: "/v1/responses",
            status: StatusCode::OK,
            body: Bytes::from(body.to_string()),
            watch,
            keep_body: false,
        }
    }

    /// `GET /v1/responses/{id}` of a response that does not exist: the
    /// least work a request to the component can be (a fresh instance, one
    /// key-value read, a 404), with no backend call and no write.
    pub fn missing_response() -> Probe {
        Probe {
            method: Method::GET,
            path: "/v1/responses/resp_missing",
            status: StatusCode::NOT_FOUND,
            body: Bytes::new(),
            watch: Watch::Nothing,
            keep_body: false,
        }
    }

    /// `POST /v1/chat/completions` with exactly these bytes.
    pub fn chat(raw_body: Vec<u8>, watch: Watch) -> Probe {
        Probe {
            method: Method::POST,
            path: "/v1/chat/completions",
            status: StatusCode::OK,
            body: Bytes::from(raw_body),
            watch,
            keep_body: false,
        }
    }

    /// The same probe, keeping the response body.
    pub fn keeping_body(mut self) -> Probe {
        self.keep_body = true;
        self
    }
}

/// The timing of one exchange.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From sending the request to the watched event, if the probe watches one.
    pub first: Option<Duration>,
    /// From sending the request to the last byte of the response.
    pub total: Duration,
    /// The response body, when the probe keeps it.
    pub body: Bytes,
}

/// A keep-alive HTTP/1.1 connection to one server.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (loopback) and starts driving the connection on
    /// the current runtime.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        if !addr.ip().is_loopback() {
            bail!("refusing to connect to {addr}: only loopback addresses are used");
        }
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// `count` connections to `addr`.
    pub async fn connect_many(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            conns.push(Conn::connect(addr).await?);
        }
        Ok(conns)
    }

    /// Sends `probe` and returns when the response head arrived, with the
    /// time the request was sent; the body is the caller's to read.
    pub async fn send(&mut self, probe: &Probe) -> anyhow::Result<(Instant, Response<Incoming>)> {
        let request = Request::builder()
            .method(probe.method.clone())
            .uri(probe.path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(probe.body.clone()))?;
        self.sender.ready().await.context("the connection closed")?;
        let start = Instant::now();
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("{} {}", probe.method, probe.path))?;
        Ok((start, response))
    }

    /// Sends `probe` and reads the whole response. A status other than the
    /// probe's is an error carrying the body.
    pub async fn exchange(&mut self, probe: &Probe) -> anyhow::Result<Sample> {
        let (start, response) = self.send(probe).await?;
        let status = response.status();
        let expected = status == probe.status;
        let mut body = response.into_body();
        let mut scanner = SseScanner::new(probe.watch);
        let mut first = None;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .with_context(|| format!("reading the body of {} {}", probe.method, probe.path))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if first.is_none() && scanner.push(&data) {
                first = Some(start.elapsed());
            }
            if probe.keep_body || !expected {
                kept.extend_from_slice(&data);
            }
        }
        let total = start.elapsed();
        if !expected {
            bail!(
                "{} {} answered {status}: {}",
                probe.method,
                probe.path,
                String::from_utf8_lossy(&kept)
            );
        }
        if probe.watch != Watch::Nothing && first.is_none() {
            bail!(
                "{} {}: the stream ended without a {:?} event",
                probe.method,
                probe.path,
                probe.watch
            );
        }
        Ok(Sample {
            first,
            total,
            body: Bytes::from(kept),
        })
    }
}

/// Finds the first frame of interest in a server-sent-event body delivered
/// in arbitrary pieces.
struct SseScanner {
    watch: Watch,
    buffer: Vec<u8>,
    /// How far `buffer` has been searched for a frame end.
    searched: usize,
}

impl SseScanner {
    fn new(watch: Watch) -> Self {
        Self {
            watch,
            buffer: Vec::new(),
            searched: 0,
        }
    }

    /// Adds bytes; true once a complete frame of interest has been seen.
    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.watch == Watch::Nothing {
            return false;
        }
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        let mut found = false;
        while let Some(end) = find_frame_end(&self.buffer, self.searched.max(start)) {
            let frame = String::from_utf8_lossy(&self.buffer[start..end]);
            if frame_matches(self.watch, &frame) {
                found = true;
                break;
            }
            start = end + 2;
            self.searched = start;
        }
        self.buffer.drain(..start);
        self.searched = self.searched.saturating_sub(start);
        if !found {
            // A frame end may straddle the next piece.
            self.searched = self.buffer.len().saturating_sub(1);
        }
        found
    }
}

/// Position of the next `\n\n` at or after `from`.
pub fn find_frame_end(buffer: &[u8], from: usize) -> Option<usize> {
    buffer
        .get(from..)?
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map(|pos| from + pos)
}

/// Whether one server-sent-event frame (without its blank line) is the
/// event `watch` looks for.
pub fn frame_matches(watch: Watch, frame: &str) -> bool {
    match watch {
        Watch::Nothing => false,
        Watch::OutputTextDelta => frame
            .lines()
            .any(|line| line.trim_end() == "event: response.output_text.delta"),
        Watch::ChatContent => frame.lines().any(|line| {
            let Some(data) = line.strip_prefix("data:") else {
                return false;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return false;
            }
            serde_json::from_str::<Value>(data).is_ok_and(|chunk| {
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|content| !content.is_empty())
            })
        }),
    }
}

/// Runs `per_conn` exchanges of `probe` on each connection at once; gives
/// the connections back with every sample.
pub async fn run_concurrent(
    conns: Vec<Conn>,
    per_conn: usize,
    probe: &Probe,
) -> anyhow::Result<(Vec<Conn>, Vec<Sample>)> {
    let probe = Arc::new(probe.clone());
    let mut workers = JoinSet::new();
    for mut conn in conns {
        let probe = Arc::clone(&probe);
        workers.spawn(async move {
            let mut samples = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                samples.push(conn.exchange(&probe).await?);
            }
            anyhow::Ok((conn, samples))
        });
    }
    let mut conns = Vec::new();
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        let (conn, mut more) = done??;
        conns.push(conn);
        samples.append(&mut more);
    }
    Ok((conns, samples))
}

/// Sends `probe` on every connection back to back for `duration`; returns
/// the connections, the number of completed requests and the time taken
/// until the last one finished.
pub async fn run_for(
    conns: Vec<Conn>,
    duration: Duration,
    probe: &Probe,
) -> anyhow::Result<(Vec<Conn>, u64, Duration)> {
    let probe = Arc::new(probe.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for mut conn in conns {
        let probe = Arc::clone(&probe);
        workers.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                conn.exchange(&probe).await?;
                done += 1;
            }
            anyhow::Ok((conn, done))
        });
    }
    let mut conns = Vec::new();
    let mut total = 0;
    while let Some(done) = workers.join_next().await {
        let (conn, count) = done??;
        conns.push(conn);
        total += count;
    }
    Ok((conns, total, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_delta_event_split_across_pieces() {
        let mut scanner = SseScanner::new(Watch::OutputTextDelta);
        let body = "event: response.created\ndata: {}\n\nevent: response.output_text.delta\ndata: {\"delta\":\"Hi\"}\n\n";
        let (a, b) = body.split_at(body.len() - 1);
        assert!(!scanner.push(a.as_bytes()));
        assert!(scanner.push(b.as_bytes()));
    }

    #[test]
    fn finds_the_first_chat_chunk_with_content() {
        let mut scanner = SseScanner::new(Watch::ChatContent);
        let role =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        assert!(!scanner.push(role.as_bytes()));
        let content = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n";
        assert!(!scanner.push(content.as_bytes()));
        assert!(scanner.push(b"\n"));
    }

    #[test]
    fn the_end_of_stream_is_not_a_token() {
        let mut scanner = SseScanner::new(Watch::ChatContent);
        assert!(!scanner.push(b"data: [DONE]\n\n"));
        let mut scanner = SseScanner::new(Watch::Nothing);
        assert!(!scanner.push(b"event: response.output_text.delta\n\n"));
    }
}
