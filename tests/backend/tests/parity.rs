//! Parity of the two backends: the same scripted replies to the same
//! requests give the same bytes from the in-process backend and from the
//! Python one (`tests/python/chat_backend.py`), once completion ids and
//! `created` times are masked; and the wire habits the Python one has on
//! purpose (close-delimited streams, bodies read only by `content-length`).

#[macro_use]
mod support;

use std::time::Duration;

use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};
use support::{chat, collect, python_backend, python_script, Collected};

fn body(stream: bool, usage: bool) -> Value {
    let mut body = json!({
        "model": "my-model",
        "messages": [
            {"role": "system", "content": "be\u{2003}brief\u{1c}now"},
            {"role": "user", "content": [
                {"type": "text", "text": "héllo  wörld"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"type": "text", "text": "✓"},
            ]},
            {"role": "assistant", "content": null},
        ],
    });
    if stream {
        body["stream"] = json!(true);
    }
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Scripted replies, each answered streamed (with and without usage) and
/// not streamed.
fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        ("echo", Reply::echo()),
        ("empty", Reply::new()),
        ("chunks", Reply::chunks(["a", "", " b\u{1c}c"])),
        (
            "everything",
            Reply::text("Let me check\u{3000}the\tweather.")
                .reasoning("The user\nwants weather.")
                .tool_call("call_1", "get_weather", r#"{"city":"Paris","unit":"c"}"#)
                .tool_call("call_2", "get_time", r#"{"tz":"Europe/Paris"}"#)
                .usage(12, 30)
                .cached_tokens(4)
                .reasoning_tokens(3),
        ),
        (
            "interleaved",
            Reply::new()
                .tool_call("a", "f", "1234é")
                .tool_call("b", "g", "56")
                .argument_fragment_chars(2)
                .interleave_tool_calls()
                .finish_reason("length"),
        ),
        (
            "finish on last delta",
            Reply::text("cut short")
                .finish_on_last_delta()
                .empty_deltas(),
        ),
        (
            "logprobs",
            Reply::text("a b c d e f g h")
                .logprobs()
                .keepalive_comment(),
        ),
        (
            "renamed reasoning",
            Reply::text("ok")
                .reasoning("hmm yes")
                .reasoning_field("reasoning"),
        ),
        (
            "error",
            Reply::error(429, "slow down")
                .header("retry-after", "2")
                .code("rate_limited")
                .param("p"),
        ),
        (
            "typed error",
            Reply::error(404, "nope").error_type("not_found_error"),
        ),
        (
            "raw",
            Reply::raw(502, "text/html", "<html>bad gateway</html>"),
        ),
        ("malformed", Reply::text("a b").malformed_after(1)),
        ("malformed late", Reply::text("a b").malformed_after(99)),
        (
            "in-stream error",
            Reply::text("a b c").error_after(2, "boom"),
        ),
        ("without done", Reply::text("a").without_done()),
        (
            "json despite stream",
            Reply::text("x y").reasoning("r").json_despite_stream(),
        ),
        (
            "no usage",
            Reply::text("x y").tool_call("c", "f", "{}").no_usage(),
        ),
    ]
}

/// Masks what legitimately differs: completion ids and creation times.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let id = rest.find("chatcmpl-scripted");
        let created = rest.find("\"created\":");
        let (at, skip, mask) = match (id, created) {
            (Some(i), Some(c)) if c < i => (c, "\"created\":".len(), "\"created\":0"),
            (Some(i), _) => (i, "chatcmpl-scripted".len(), "chatcmpl-scripted#"),
            (None, Some(c)) => (c, "\"created\":".len(), "\"created\":0"),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        out.push_str(mask);
        rest = &rest[at + skip..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

fn shape(response: &Collected) -> (u16, String, Option<String>, String) {
    let header = |name: &str| {
        response
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    (
        response.status.as_u16(),
        response.content_type().to_string(),
        header("retry-after"),
        masked(&String::from_utf8_lossy(&response.body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_send_the_same_bytes() {
    let rust = Backend::start().unwrap();
    let python = python_backend();
    for backend in [&rust, &python] {
        backend.set_models(["first-model", "second"]);
    }
    for (name, reply) in replies() {
        for (stream, usage) in [(true, true), (true, false), (false, false)] {
            let request = body(stream, usage);
            let mut answers = Vec::new();
            for backend in [&rust, &python] {
                backend.push(reply.clone());
                answers.push(shape(&chat(backend.addr(), &request).await));
            }
            assert_eq!(
                answers[0], answers[1],
                "{name}, stream {stream}, usage {usage}: in-process (left) and python (right) differ"
            );
        }
    }

    // Requests: logprobs asked for, no model named, invalid bodies.
    let mut logprobs = body(true, false);
    logprobs["logprobs"] = json!(true);
    logprobs["top_logprobs"] = json!(3);
    let mut unnamed = body(false, false);
    unnamed.as_object_mut().unwrap().remove("model");
    for request in [
        logprobs,
        unnamed,
        json!({"model": "m"}),
        json!([1]),
        json!({"messages": "no"}),
    ] {
        let mut answers = Vec::new();
        for backend in [&rust, &python] {
            backend.push(Reply::text("p q"));
            answers.push(shape(&chat(backend.addr(), &request).await));
        }
        assert_eq!(answers[0], answers[1], "{request}");
    }
    let mut answers = Vec::new();
    for backend in [&rust, &python] {
        let mut connection = support::Connection::open(backend.addr()).await;
        for (method, path, body) in [
            ("GET", "/v1/models", ""),
            ("POST", "/v1/responses", "{}"),
            ("POST", "/v1/chat/completions", "{not json"),
        ] {
            let response = collect(connection.send(method, path, &[], body).await)
                .await
                .unwrap();
            answers.push(shape(&response));
        }
    }
    assert_eq!(answers[..3], answers[3..]);
}

#[tokio::test]
async fn python_streams_end_by_closing_the_connection() {
    let backend = python_backend();
    let response = support::open_chat(backend.addr(), &body(true, false)).await;
    assert_eq!(response.headers()["connection"], "close");
    assert!(response.headers().get("content-length").is_none());
    assert!(response.headers().get("transfer-encoding").is_none());
    let text = collect(response).await.unwrap().text();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn python_json_answers_keep_the_connection_alive() {
    let backend = python_backend();
    let mut connection = support::Connection::open(backend.addr()).await;
    for _ in 0..3 {
        let response = connection.post_json(&body(false, false)).await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.headers["content-length"],
            response.body.len().to_string()
        );
    }
    assert_eq!(backend.connections(), 1);
    chat(backend.addr(), &body(false, false)).await;
    assert_eq!(backend.connections(), 2);
    // Control requests are neither logged nor counted.
    assert_eq!(backend.request_count(), 4);
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn python_reads_bodies_only_by_content_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = python_backend();
    backend.push(Reply::text("kept"));
    let body = body(false, false).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(backend.addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The backend closes the connection after answering: what is left of
    // the chunked body is never read as a request.
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
    let recorded = backend.requests();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].chunked);
    assert_eq!(recorded[0].content_length, None);
    assert!(recorded[0].raw_body.is_empty());
    assert!(recorded[0].body.is_null());
    assert_eq!(backend.pending_replies(), 1);
}

#[tokio::test]
async fn python_backends_stop_with_their_handle() {
    let backend = python_backend();
    let addr = backend.addr();
    assert!(backend.is_python());
    assert_eq!(backend.url(), format!("http://{addr}/v1"));
    drop(backend);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let missing = python_script().with_file_name("no_such_backend.py");
    assert!(Backend::start_python(&missing).is_err());
}

#[tokio::test]
async fn python_gates_released_before_the_push_do_not_hold() {
    let backend = python_backend();
    let (reply, gate) = Reply::text("free").pause_before(1);
    gate.release();
    backend.push(reply);
    let response = tokio::time::timeout(
        Duration::from_secs(60),
        chat(backend.addr(), &body(false, false)),
    )
    .await
    .expect("nothing holds the reply");
    assert_eq!(response.json()["choices"][0]["message"]["content"], "free");
    assert!(gate.is_reached());
}

#[tokio::test]
async fn python_default_and_rejection_replies_can_be_gated() {
    let backend = python_backend();
    let (reply, gate) = Reply::text("default").pause_before_last();
    backend.set_default(reply);
    let addr = backend.addr();
    let held = tokio::spawn(async move { chat(addr, &body(true, false)).await });
    gate.reached().await;
    assert!(!held.is_finished());
    gate.release();
    let text = held.await.unwrap().text();
    assert_eq!(
        support::joined(&support::chunks(&text), "content"),
        "default"
    );

    let (reply, gate) = Reply::error(400, "no").pause_before(0);
    backend.reject_param("seed", reply);
    let mut request = body(false, false);
    request["seed"] = json!(7);
    let held = tokio::spawn(async move { chat(addr, &request).await });
    gate.reached().await;
    drop(gate);
    assert_eq!(held.await.unwrap().status, 400);
}
