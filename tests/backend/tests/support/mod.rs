//! A small HTTP/1.1 client over hyper for talking to the backend, helpers
//! that split server-sent events, and [`on_both_backends!`], which runs a
//! scenario against the in-process backend and against the Python one.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use scripted_backend::Backend;
use serde_json::Value;
use tokio::net::TcpStream;

/// Runs each `async fn name(backend: Backend)` of the list twice, as the
/// tests `name::in_process` and `name::python`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn in_process() {
                super::$scenario(scripted_backend::Backend::start().unwrap()).await;
            }

            #[tokio::test]
            async fn python() {
                super::$scenario(crate::support::python_backend()).await;
            }
        }
    )*};
}

/// `tests/python/chat_backend.py`.
pub fn python_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/chat_backend.py")
}

/// The Python backend, started from `tests/python/chat_backend.py`.
pub fn python_backend() -> Backend {
    Backend::start_python(&python_script()).expect("the python backend starts")
}

/// A response read to its end.
#[derive(Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// One keep-alive connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Connection { sender }
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        self.try_send(method, path, headers, body).await.unwrap()
    }

    /// Like [`Connection::send`]; `Err` when the server closed the
    /// connection without answering.
    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response<Incoming>, hyper::Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    pub async fn post_json(&mut self, body: &Value) -> Collected {
        let response = self
            .send(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                &body.to_string(),
            )
            .await;
        collect(response).await.unwrap()
    }
}

/// Reads a body to its end; `Err` when the connection broke mid-body.
pub async fn collect(response: Response<Incoming>) -> Result<Collected, hyper::Error> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Collected {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Sends one chat-completions request on a fresh connection.
pub async fn chat(addr: SocketAddr, body: &Value) -> Collected {
    Connection::open(addr).await.post_json(body).await
}

/// Sends a request on a fresh connection and returns the unread response.
pub async fn open_chat(addr: SocketAddr, body: &Value) -> Response<Incoming> {
    Connection::open(addr)
        .await
        .send(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .await
}

/// The payloads of the `data:` lines of an event stream, in order.
pub fn data_payloads(stream: &str) -> Vec<String> {
    stream
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The JSON chunks of an event stream (everything but `[DONE]`).
pub fn chunks(stream: &str) -> Vec<Value> {
    data_payloads(stream)
        .iter()
        .filter(|payload| payload.as_str() != "[DONE]")
        .map(|payload| serde_json::from_str(payload).unwrap())
        .collect()
}

/// The `choices[0].delta` of every chunk that has one.
pub fn deltas(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta").cloned())
        .collect()
}

/// The concatenated string values of one delta field.
pub fn joined(chunks: &[Value], field: &str) -> String {
    deltas(chunks)
        .iter()
        .filter_map(|delta| delta.get(field).and_then(Value::as_str))
        .collect()
}

/// Reads complete events from a streamed body as they arrive.
pub struct EventReader {
    body: Incoming,
    buffer: String,
}

impl EventReader {
    pub fn new(response: Response<Incoming>) -> EventReader {
        EventReader {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next `data:` payload; `None` at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        self.try_next().await.unwrap()
    }

    /// Like [`EventReader::next`]; `Err` when the connection broke.
    pub async fn try_next(&mut self) -> Result<Option<String>, hyper::Error> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(payload) = event.trim_end().strip_prefix("data: ") {
                    return Ok(Some(payload.to_string()));
                }
                continue;
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            if let Ok(data) = frame?.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next payload parsed as JSON.
    pub async fn next_json(&mut self) -> Value {
        serde_json::from_str(&self.next().await.unwrap()).unwrap()
    }
}
