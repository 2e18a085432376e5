//! Limits over the built component: the request-size limit (413 before the
//! body is read past it, the key checked before any of it), the limits
//! inside a request (400 with `param`), ids that cannot be keys, and what
//! the backend can send (an endless event line, absurd token counts).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::Harness;
use futures::StreamExt as _;
use scripted_backend::Reply;
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Held by the tests that move tens of MiB, so that the one measuring this
/// process's memory runs alone among them.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One MiB of spaces, allocated once and shared by every chunk sent.
fn mebibyte() -> &'static [u8] {
    static CHUNK: OnceLock<Vec<u8>> = OnceLock::new();
    CHUNK.get_or_init(|| vec![b' '; MIB as usize])
}

/// A body of `total` bytes made as it is sent, one shared MiB at a time,
/// never held in memory; `sent` counts the bytes handed to the client.
fn lazy_body(total: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    let chunks = total.div_ceil(MIB);
    let stream = futures::stream::iter(0..chunks).map(move |i| {
        let len = (total - i * MIB).min(MIB) as usize;
        sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(&mebibyte()[..len])
    });
    reqwest::Body::wrap_stream(stream)
}

/// This process's resident memory (the host runs in it), in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The highest resident memory seen while `work` runs, sampled every 5 ms.
async fn peak_resident_during<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(resident()));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes of samples.
            for _ in 0..120_000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                peak.fetch_max(resident(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(resident(), Ordering::Relaxed);
    (out, peak.load(Ordering::Relaxed))
}

/// Sends an upload whose body counts into `sent`; returns the status, the
/// JSON body, the bytes handed to the client when the answer's head came
/// back, and how long that took. Bounded to a minute.
async fn upload(request: reqwest::RequestBuilder, sent: &AtomicU64) -> (u16, Value, u64, Duration) {
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(60), request.send())
        .await
        .expect("answered within a minute")
        .expect("the answer reaches the client");
    let (elapsed, sent) = (started.elapsed(), sent.load(Ordering::Relaxed));
    let status = response.status().as_u16();
    let text = response.text().await.expect("the whole answer");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body, sent, elapsed)
}

fn assert_too_large(status: u16, body: &Value, limit: u64) {
    assert_eq!(status, 413, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["code"], "request_too_large", "{body}");
    assert!(error["param"].is_null(), "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{limit} bytes")),
        "{body}"
    );
}

/// A request body of exactly `len` bytes.
fn request_of(len: usize) -> String {
    let frame = r#"{"model":"m","input":""}"#;
    let text = "x".repeat(len - frame.len());
    let body = format!(r#"{{"model":"m","input":"{text}"}}"#);
    assert_eq!(body.len(), len);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_limit_are_413_with_or_without_a_length() {
    let h = Harness::with_variables(&[("max_request_bytes", "1000")]).await;
    let post = |body: reqwest::Body| {
        h.client
            .post(h.url("/v1/responses"))
            .header("content-type", "application/json")
            .body(body)
    };
    // With Content-Length: the limit itself is taken, one byte more is not.
    let (status, body) = h.send(post(request_of(1000).into())).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.send(post(request_of(1001).into())).await;
    assert_too_large(status, &body, 1000);

    // Chunked, without Content-Length: refused once past the limit.
    let chunked = |text: String| {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = text
            .into_bytes()
            .chunks(100)
            .map(|c| Ok(c.to_vec()))
            .collect();
        reqwest::Body::wrap_stream(futures::stream::iter(pieces))
    };
    let (status, body) = h.send(post(chunked(request_of(1000)))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.send(post(chunked(request_of(1001)))).await;
    assert_too_large(status, &body, 1000);
    let (status, body) = h.send(post(chunked(request_of(50_000)))).await;
    assert_too_large(status, &body, 1000);

    // The typed export has the same limit.
    let responses = h.server.responses();
    let error = responses
        .create(None, &request_of(1001))
        .await
        .expect("no trap")
        .unwrap_err();
    assert_eq!(
        (error.status, error.code.as_deref()),
        (413, Some("request_too_large"))
    );

    assert_eq!(
        h.backend.chat_requests().len(),
        2,
        "only the two within the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_upload_is_refused_quickly_and_memory_stays_flat() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    let limit = 32 * MIB;
    // Warm up: the first instance and connection cost memory of their own.
    let (status, _) = h
        .post("/v1/responses", &json!({"model": "m", "input": "x"}))
        .await;
    assert_eq!(status, 200);

    for declared in [true, false] {
        let sent = Arc::new(AtomicU64::new(0));
        let mut request = h
            .client
            .post(h.url("/v1/responses"))
            .header("content-type", "application/json")
            .body(lazy_body(GIB, sent.clone()));
        if declared {
            request = request.header("content-length", GIB.to_string());
        }
        let before = resident();
        let ((status, body, sent, elapsed), peak) =
            peak_resident_during(upload(request, &sent)).await;
        let growth = peak.saturating_sub(before);
        eprintln!(
            "1 GiB upload, Content-Length {declared}: {status} after {elapsed:?}, \
             {} MiB handed to the client by then, resident {} MiB before, peak growth {} MiB, \
             {} MiB after",
            sent / MIB,
            before / MIB,
            growth / MIB,
            resident() / MIB,
        );
        assert_too_large(status, &body, limit);
        assert!(
            growth < 200 * MIB,
            "resident memory grew by {} MiB",
            growth / MIB
        );
        assert!(
            sent < 128 * MIB,
            "the upload was read on: {} MiB",
            sent / MIB
        );
        assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    }
    assert_eq!(h.backend.chat_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_checked_before_the_body_is_read() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::with_variables(&[("api_keys", "sk-right")]).await;
    for (key, expected) in [("sk-wrong", 401), ("sk-right", 413)] {
        let sent = Arc::new(AtomicU64::new(0));
        let request = h
            .client
            .post(h.url("/v1/responses"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("content-length", GIB.to_string())
            .body(lazy_body(GIB, sent.clone()));
        let (status, body, sent, elapsed) = upload(request, &sent).await;
        eprintln!(
            "key {key}: {status} after {elapsed:?}, {} MiB handed to the client by then",
            sent / MIB
        );
        assert_eq!(status, expected, "{body}");
        // What the client wrote before the answer sat in socket buffers;
        // the component read none of it.
        assert!(sent < 128 * MIB, "{} MiB sent", sent / MIB);
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }
    // Without a key, the same.
    let request = h
        .client
        .post(h.url("/v1/responses"))
        .body(lazy_body(GIB, Arc::default()));
    let (status, _) = h.send(request).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_inside_a_request_are_400_with_param() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    let message = json!({"role": "user", "content": "x"});
    let tool = json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
    let long_id = "i".repeat(257);
    let cases = [
        (
            json!({"model": "m", "input": vec![message.clone(); 10_001]}),
            "input",
            "array_above_max_length",
        ),
        (
            json!({"model": "m", "input": "x", "tools": vec![tool.clone(); 129]}),
            "tools",
            "array_above_max_length",
        ),
        (
            json!({"model": "m", "input": [{"type": "message", "id": long_id, "role": "user", "content": "x"}]}),
            "input[0].id",
            "string_above_max_length",
        ),
        (
            json!({"model": "m", "input": [message, {"type": "item_reference", "id": long_id}]}),
            "input[1].id",
            "string_above_max_length",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "id": "fc/1", "call_id": "c", "name": "f", "arguments": "{}"}]}),
            "input[0].id",
            "invalid_value",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c".repeat(257), "output": "o"}]}),
            "input[0].call_id",
            "string_above_max_length",
        ),
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_".repeat(60)}),
            "previous_response_id",
            "string_above_max_length",
        ),
    ];
    for (request, param, code) in cases {
        let (status, body) = h.post("/v1/responses", &request).await;
        let error = &body["error"];
        assert_eq!(status, 400, "{param}: {body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["code"], code, "{body}");
    }
    // At the limits, taken.
    let (status, body) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": vec![json!({"role": "user", "content": "x"}); 10_000],
                    "tools": vec![tool; 128]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A body whose JSON would cost the component gigabytes as a tree is
    // refused before it is parsed: 16 MiB of `{"a":0},`.
    let junk = r#"{"a":0},"#.repeat(2 << 20);
    let body = format!(r#"{{"model":"m","input":"x","text":{{"junk":[{junk}{{}}]}}}}"#);
    let (status, answer) = h.post_raw("/v1/responses", &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "request_too_complex");
    assert_eq!(
        h.backend.chat_requests().len(),
        1,
        "only the request at the limits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_cannot_be_keys_are_404_on_reads() {
    let h = Harness::start().await;
    let long = "r".repeat(10_000);
    for path in [
        format!("/v1/responses/{long}"),
        format!("/v1/responses/{long}/input_items"),
        "/v1/responses/resp_%00x".to_owned(),
    ] {
        let (status, body) = h.get(&path).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() < 200);
    }
    let (status, body) = h.delete(&format!("/v1/responses/{long}")).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let responses = h.server.responses();
    for id in ["a/b", "a\u{0}b", long.as_str()] {
        let error = responses.get(None, id).await.unwrap().unwrap_err();
        assert_eq!(error.status, 404, "{id:?}");
        let error = responses.delete(None, id).await.unwrap().unwrap_err();
        assert_eq!(error.status, 404, "{id:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_near_the_default_limit_is_taken() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    // 30 MiB of base64 in a data URL: the kind of body the limit is sized for.
    let image = format!("data:image/png;base64,{}", "A".repeat(30 * MIB as usize));
    let request = json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": image},
    ]}]});
    let started = Instant::now();
    let (status, body) = h.post("/v1/responses", &request).await;
    eprintln!("a 30 MiB image: {status} after {:?}", started.elapsed());
    assert_eq!(
        status,
        200,
        "{}",
        &body.to_string()[..200.min(body.to_string().len())]
    );
    let sent = h.backend.last_request().unwrap();
    let part = &sent.body["messages"][0]["content"][1];
    assert_eq!(
        part["image_url"]["url"].as_str().map(str::len),
        Some(image.len())
    );
    let id = body["id"].as_str().unwrap();
    let (status, _) = h.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_event_line_from_the_backend_fails_the_response() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    // 9 MiB without a line end, past the reader's 8 MiB bound.
    let line = format!("data: {}", "x".repeat(9 * MIB as usize));
    h.backend
        .push(Reply::raw(200, "text/event-stream", line.clone()));
    let (status, body) = h
        .post("/v1/responses", &json!({"model": "m", "input": "x"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "backend_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("longer than 8388608 bytes"), "{message}");

    h.backend.push(Reply::raw(200, "text/event-stream", line));
    let frames = h
        .stream(&json!({"model": "m", "input": "x", "stream": true}))
        .await;
    let events: Vec<&str> = frames.iter().map(|(e, _)| e.as_str()).collect();
    assert!(events.contains(&"error"), "{events:?}");
    assert_eq!(
        events.iter().rev().find(|e| !e.is_empty()),
        Some(&"response.failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_token_counts_saturate() {
    let h = Harness::start().await;
    let completion = json!({
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": u64::MAX, "completion_tokens": 5},
    });
    h.backend
        .push(Reply::raw(200, "application/json", completion.to_string()));
    let (status, body) = h
        .post("/v1/responses", &json!({"model": "m", "input": "x"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["input_tokens"], u64::MAX);
    assert_eq!(body["usage"]["total_tokens"], u64::MAX, "not wrapped to 4");
}
