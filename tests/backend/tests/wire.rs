//! Wire-level tests: start a backend, talk HTTP to it, and check the bytes
//! it sends against what real chat-completions backends send.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};
use support::{chat, chunks, collect, data_payloads, deltas, joined, open_chat, EventReader};

fn request(text: &str) -> Value {
    json!({
        "model": "my-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text},
        ],
    })
}

fn streamed(text: &str) -> Value {
    let mut body = request(text);
    body["stream"] = json!(true);
    body
}

fn streamed_with_usage(text: &str) -> Value {
    let mut body = streamed(text);
    body["stream_options"] = json!({"include_usage": true});
    body
}

// Each scenario below runs twice: against the in-process backend and
// against the Python one (`<name>::in_process`, `<name>::python`).
on_both_backends!(
    urls_point_at_the_bound_port,
    default_reply_echoes_the_last_user_message,
    echo_reads_text_parts,
    queued_replies_come_first_then_the_default,
    streamed_text_arrives_word_by_word,
    usage_chunk_only_when_asked,
    reasoning_comes_before_content,
    reasoning_field_can_be_renamed,
    streamed_tool_calls_are_split_like_real_backends,
    tool_call_chunks_can_interleave,
    non_streamed_tool_calls,
    finish_reason_and_placement_options,
    logprobs_cover_content_tokens,
    empty_deltas_and_keepalive_comments,
    error_replies_carry_openai_error_bodies,
    raw_replies_are_sent_verbatim,
    cut_streams_break_the_connection_without_done,
    cut_non_streamed_bodies_break_mid_body,
    malformed_chunks_are_not_json,
    in_stream_errors_end_with_done,
    streams_can_end_without_done,
    hang_sends_nothing_then_closes,
    delays_hold_chunks_back,
    gate_holds_the_finish_chunk_until_released,
    gate_at_a_chunk_index_and_before_done,
    gate_holds_a_non_streamed_response,
    requests_are_recorded,
    invalid_bodies_get_400_and_keep_the_queue,
    models_and_unknown_routes,
    recording_can_be_turned_off,
    wait_for_requests_sees_concurrent_arrivals,
    shutdown_closes_the_port,
    content_length_can_be_required,
    rejected_params_leave_the_queue_alone,
    required_headers_answer_like_azure,
    required_queries_answer_like_azure,
    json_despite_stream_answers_one_object,
    no_usage_ignores_stream_options,
    specs_script_the_backend_over_http,
    any_base_path_is_served,
);

async fn urls_point_at_the_bound_port(backend: Backend) {
    let port = backend.addr().port();
    assert_ne!(port, 0);
    assert_eq!(backend.origin(), format!("http://127.0.0.1:{port}"));
    assert_eq!(backend.url(), format!("http://127.0.0.1:{port}/v1"));
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
    assert!(Backend::start_on(addr).is_err());
}

async fn default_reply_echoes_the_last_user_message(backend: Backend) {
    let response = chat(backend.addr(), &request("hi there")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), "application/json");
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "my-model");
    assert!(body["created"].as_u64().unwrap() > 0);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello! You said: hi there");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 9);
}

async fn echo_reads_text_parts(backend: Backend) {
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "from parts"}]}],
    });
    let response = chat(backend.addr(), &body).await.json();
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "Hello! You said: from parts"
    );
}

async fn queued_replies_come_first_then_the_default(backend: Backend) {
    backend.push_all([Reply::text("one"), Reply::text("two")]);
    backend.set_default(Reply::text("fallback"));
    assert_eq!(backend.pending_replies(), 2);
    let mut texts = Vec::new();
    for _ in 0..3 {
        let body = chat(backend.addr(), &request("x")).await.json();
        texts.push(body["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(texts, [json!("one"), json!("two"), json!("fallback")]);
    assert_eq!(backend.pending_replies(), 0);
}

async fn streamed_text_arrives_word_by_word(backend: Backend) {
    backend.push(Reply::text("The quick brown fox"));
    let response = chat(backend.addr(), &streamed("go")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), "text/event-stream");
    let text = response.text();
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let chunks = chunks(&text);
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "my-model");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks.iter().all(|chunk| chunk["id"] == id));
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));

    let contents: Vec<String> = deltas(&chunks)
        .iter()
        .skip(1)
        .filter_map(|delta| delta.get("content").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    assert_eq!(contents, ["The", " quick", " brown", " fox"]);

    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let finishes = chunks
        .iter()
        .filter(|chunk| !chunk["choices"][0]["finish_reason"].is_null())
        .count();
    assert_eq!(finishes, 1);
}

async fn usage_chunk_only_when_asked(backend: Backend) {
    backend.push(
        Reply::text("a b")
            .usage(7, 2)
            .cached_tokens(3)
            .reasoning_tokens(1),
    );
    let text = chat(backend.addr(), &streamed_with_usage("x")).await.text();
    let chunks = chunks(&text);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({
            "prompt_tokens": 7,
            "completion_tokens": 2,
            "total_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 1},
        })
    );
    let others = &chunks[..chunks.len() - 1];
    assert!(others.iter().all(|chunk| chunk["usage"].is_null()));
    assert_eq!(
        others.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(data_payloads(&text).last().unwrap(), "[DONE]");
}

async fn reasoning_comes_before_content(backend: Backend) {
    backend.push(Reply::text("Answer.").reasoning("Think first"));
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    let deltas = deltas(&chunks);
    let first_reasoning = deltas
        .iter()
        .position(|delta| delta.get("reasoning_content").is_some())
        .unwrap();
    let first_content = deltas
        .iter()
        .position(|delta| delta.get("content").and_then(Value::as_str) == Some("Answer."))
        .unwrap();
    assert!(first_reasoning < first_content);
    assert_eq!(joined(&chunks, "reasoning_content"), "Think first");

    backend.push(Reply::text("Answer.").reasoning("Think"));
    let body = chat(backend.addr(), &request("q")).await.json();
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], "Think");
    assert_eq!(body["choices"][0]["message"]["content"], "Answer.");
}

async fn reasoning_field_can_be_renamed(backend: Backend) {
    backend.push(
        Reply::text("ok")
            .reasoning("hmm yes")
            .reasoning_field("reasoning"),
    );
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    assert_eq!(joined(&chunks, "reasoning"), "hmm yes");
    assert_eq!(joined(&chunks, "reasoning_content"), "");

    backend.push(Reply::new().reasoning("r").reasoning_field("reasoning"));
    let body = chat(backend.addr(), &request("q")).await.json();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning"], "r");
    assert!(message["content"].is_null());
}

async fn streamed_tool_calls_are_split_like_real_backends(backend: Backend) {
    backend.push(
        Reply::text("Checking.")
            .tool_call("call_1", "get_weather", r#"{"city":"Paris","unit":"c"}"#)
            .tool_call("call_2", "get_time", r#"{"tz":"Europe/Paris"}"#),
    );
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    let tool_deltas: Vec<Value> = deltas(&chunks)
        .into_iter()
        .filter_map(|delta| delta.get("tool_calls").cloned())
        .map(|calls| {
            assert_eq!(calls.as_array().unwrap().len(), 1);
            calls[0].clone()
        })
        .collect();

    // Calls follow each other: all of index 0, then all of index 1.
    let indexes: Vec<u64> = tool_deltas
        .iter()
        .map(|call| call["index"].as_u64().unwrap())
        .collect();
    let switch = indexes.iter().position(|index| *index == 1).unwrap();
    assert!(indexes[..switch].iter().all(|index| *index == 0));
    assert!(indexes[switch..].iter().all(|index| *index == 1));

    for (index, id, name, arguments) in [
        (0, "call_1", "get_weather", r#"{"city":"Paris","unit":"c"}"#),
        (1, "call_2", "get_time", r#"{"tz":"Europe/Paris"}"#),
    ] {
        let parts: Vec<&Value> = tool_deltas
            .iter()
            .filter(|call| call["index"] == index)
            .collect();
        assert_eq!(
            parts[0],
            &json!({
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            })
        );
        let fragments = &parts[1..];
        assert!(fragments.len() >= 2, "arguments arrive in several chunks");
        for fragment in fragments {
            let mut keys: Vec<&String> = fragment.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["function", "index"]);
            let function_keys: Vec<&String> =
                fragment["function"].as_object().unwrap().keys().collect();
            assert_eq!(function_keys, ["arguments"]);
        }
        let joined: String = fragments
            .iter()
            .map(|fragment| fragment["function"]["arguments"].as_str().unwrap())
            .collect();
        assert_eq!(joined, arguments);
    }
    assert_eq!(joined(&chunks, "content"), "Checking.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

async fn tool_call_chunks_can_interleave(backend: Backend) {
    backend.push(
        Reply::new()
            .tool_call("a", "f", "1234")
            .tool_call("b", "g", "5678")
            .argument_fragment_chars(2)
            .interleave_tool_calls(),
    );
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    let indexes: Vec<u64> = deltas(&chunks)
        .iter()
        .filter_map(|delta| delta.pointer("/tool_calls/0/index").and_then(Value::as_u64))
        .collect();
    assert_eq!(indexes, [0, 1, 0, 1, 0, 1]);
}

async fn non_streamed_tool_calls(backend: Backend) {
    backend.push(Reply::new().tool_call("call_9", "lookup", r#"{"q":"x"}"#));
    let body = chat(backend.addr(), &request("q")).await.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{
            "id": "call_9",
            "type": "function",
            "function": {"name": "lookup", "arguments": r#"{"q":"x"}"#},
        }])
    );
}

async fn finish_reason_and_placement_options(backend: Backend) {
    backend.push(
        Reply::text("cut short")
            .finish_reason("length")
            .finish_on_last_delta(),
    );
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["choices"][0]["delta"]["content"], " short");
}

async fn logprobs_cover_content_tokens(backend: Backend) {
    backend.push(Reply::text("a b").logprobs());
    let chunks = chunks(&chat(backend.addr(), &streamed("q")).await.text());
    let entries: Vec<&Value> = chunks
        .iter()
        .filter(|chunk| !chunk["choices"][0]["logprobs"].is_null())
        .map(|chunk| &chunk["choices"][0]["logprobs"]["content"][0])
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["token"], " b");
    assert_eq!(entries[1]["bytes"], json!([32, 98]));
    assert!(entries[1]["logprob"].as_f64().unwrap() < 0.0);
    assert_eq!(entries[1]["top_logprobs"], json!([]));

    let mut body = request("q");
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    backend.push(Reply::text("a b"));
    let response = chat(backend.addr(), &body).await.json();
    let content = &response["choices"][0]["logprobs"]["content"];
    assert_eq!(content.as_array().unwrap().len(), 2);
    assert_eq!(content[0]["top_logprobs"][0]["token"], "a");
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
}

async fn empty_deltas_and_keepalive_comments(backend: Backend) {
    backend.push(Reply::text("x y").empty_deltas().keepalive_comment());
    let text = chat(backend.addr(), &streamed("q")).await.text();
    assert!(text.starts_with(": keep-alive\n\n"));
    let chunks = chunks(&text);
    let deltas = deltas(&chunks);
    assert!(deltas.contains(&json!({})));
    assert!(deltas.contains(&json!({"content": ""})));
    assert_eq!(joined(&chunks, "content"), "x y");
}

async fn error_replies_carry_openai_error_bodies(backend: Backend) {
    backend.push(Reply::error(404, "The model `nope` does not exist").code("model_not_found"));
    backend.push(Reply::error(429, "slow down").header("retry-after", "2"));
    backend.push(Reply::error(500, "boom"));

    let response = chat(backend.addr(), &streamed("q")).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.content_type(), "application/json");
    assert_eq!(
        response.json(),
        json!({"error": {
            "message": "The model `nope` does not exist",
            "type": "invalid_request_error",
            "param": null,
            "code": "model_not_found",
        }})
    );

    let response = chat(backend.addr(), &request("q")).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.headers["retry-after"], "2");
    assert_eq!(response.json()["error"]["type"], "rate_limit_error");

    let response = chat(backend.addr(), &request("q")).await;
    assert_eq!(response.status, 500);
    assert_eq!(response.json()["error"]["type"], "server_error");
}

async fn raw_replies_are_sent_verbatim(backend: Backend) {
    backend.push(Reply::raw(502, "text/html", "<html>bad gateway</html>"));
    let response = chat(backend.addr(), &request("q")).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.content_type(), "text/html");
    assert_eq!(response.text(), "<html>bad gateway</html>");
}

async fn cut_streams_break_the_connection_without_done(backend: Backend) {
    backend.push(Reply::text("one two three four").cut_after(2));
    let mut reader = EventReader::new(open_chat(backend.addr(), &streamed("q")).await);
    let first: Value = reader.next_json().await;
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let second: Value = reader.next_json().await;
    assert_eq!(second["choices"][0]["delta"]["content"], "one");
    assert!(
        reader.try_next().await.is_err(),
        "a cut stream must not end cleanly"
    );

    backend.push(Reply::text("one two").cut_after(10));
    let result = collect(open_chat(backend.addr(), &streamed("q")).await).await;
    assert!(
        result.is_err(),
        "cut after every chunk still breaks before [DONE]"
    );
}

async fn cut_non_streamed_bodies_break_mid_body(backend: Backend) {
    backend.push(Reply::text("a long enough answer").cut_after(0));
    let response = open_chat(backend.addr(), &request("q")).await;
    assert_eq!(response.status(), 200);
    assert!(collect(response).await.is_err());
}

async fn malformed_chunks_are_not_json(backend: Backend) {
    backend.push(Reply::text("a b").malformed_after(1));
    let text = chat(backend.addr(), &streamed("q")).await.text();
    let payloads = data_payloads(&text);
    assert!(serde_json::from_str::<Value>(&payloads[0]).is_ok());
    assert!(serde_json::from_str::<Value>(&payloads[1]).is_err());
    assert_eq!(payloads.last().unwrap(), "[DONE]");

    backend.push(Reply::text("a b").malformed_after(0));
    let response = chat(backend.addr(), &request("q")).await;
    assert_eq!(response.status, 200);
    assert!(serde_json::from_slice::<Value>(&response.body).is_err());
}

async fn in_stream_errors_end_with_done(backend: Backend) {
    backend.push(Reply::text("a b c").error_after(2, "generation failed"));
    let text = chat(backend.addr(), &streamed("q")).await.text();
    let payloads = data_payloads(&text);
    assert_eq!(payloads.len(), 4);
    let error: Value = serde_json::from_str(&payloads[2]).unwrap();
    assert_eq!(error["error"]["message"], "generation failed");
    assert_eq!(payloads[3], "[DONE]");
}

async fn streams_can_end_without_done(backend: Backend) {
    backend.push(Reply::text("a").without_done());
    let text = chat(backend.addr(), &streamed("q")).await.text();
    assert!(!text.contains("[DONE]"));
    assert_eq!(joined(&chunks(&text), "content"), "a");
}

async fn hang_sends_nothing_then_closes(backend: Backend) {
    backend.push(Reply::hang(Duration::from_secs(30)));
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        open_chat(backend.addr(), &request("q")),
    )
    .await;
    assert!(waited.is_err(), "no response while hanging");

    backend.push(Reply::hang(Duration::from_millis(10)));
    let mut connection = support::Connection::open(backend.addr()).await;
    let body = request("q").to_string();
    let result = connection
        .try_send("POST", "/v1/chat/completions", &[], &body)
        .await;
    assert!(result.is_err(), "the connection closes without a response");
}

async fn delays_hold_chunks_back(backend: Backend) {
    backend.push(
        Reply::text("a b c")
            .delay_before_first(Duration::from_millis(50))
            .delay_between_chunks(Duration::from_millis(20)),
    );
    let started = Instant::now();
    let response = open_chat(backend.addr(), &streamed("q")).await;
    let mut reader = EventReader::new(response);
    reader.next().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    while reader.next().await.is_some() {}
    // role, 3 words, finish: four gaps after the first chunk.
    assert!(started.elapsed() >= Duration::from_millis(50 + 4 * 20));
}

async fn gate_holds_the_finish_chunk_until_released(backend: Backend) {
    let (reply, gate) = Reply::text("a b c").pause_before_last();
    backend.push(reply);
    let mut reader = EventReader::new(open_chat(backend.addr(), &streamed("q")).await);
    let mut content = String::new();
    for _ in 0..4 {
        let chunk = reader.next_json().await;
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(text);
        }
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(content, "a b c");
    gate.reached().await;
    assert!(gate.is_reached());
    let early = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
    assert!(early.is_err(), "nothing arrives while the gate is closed");
    gate.release();
    let finish = reader.next_json().await;
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(reader.next().await.unwrap(), "[DONE]");
    assert!(reader.next().await.is_none());
}

async fn gate_at_a_chunk_index_and_before_done(backend: Backend) {
    let (reply, first_gate) = Reply::text("a b").pause_before(1);
    let (reply, done_gate) = reply.pause_before_done();
    backend.push(reply);
    let mut reader = EventReader::new(open_chat(backend.addr(), &streamed("q")).await);
    let role = reader.next_json().await;
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    first_gate.reached().await;
    assert!(!done_gate.is_reached());
    drop(first_gate);
    for _ in 0..3 {
        reader.next_json().await;
    }
    done_gate.reached().await;
    done_gate.release();
    assert_eq!(reader.next().await.unwrap(), "[DONE]");
}

async fn gate_holds_a_non_streamed_response(backend: Backend) {
    let (reply, gate) = Reply::text("held").pause_before_last();
    backend.push(reply);
    let addr = backend.addr();
    let pending = tokio::spawn(async move { chat(addr, &request("q")).await });
    gate.reached().await;
    assert!(!pending.is_finished());
    gate.release();
    let body = pending.await.unwrap().json();
    assert_eq!(body["choices"][0]["message"]["content"], "held");
}

async fn requests_are_recorded(backend: Backend) {
    let mut body = streamed("record me");
    body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let mut connection = support::Connection::open(backend.addr()).await;
    let response = connection
        .send(
            "POST",
            "/v1/chat/completions?trace=1",
            &[
                ("Authorization", "Bearer sk-test"),
                ("Content-Type", "application/json"),
                ("X-Custom", "one"),
                ("x-custom", "two"),
            ],
            &body.to_string(),
        )
        .await;
    collect(response).await.unwrap();

    assert_eq!(backend.request_count(), 1);
    let recorded = backend.last_request().unwrap();
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.query.as_deref(), Some("trace=1"));
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.header("AUTHORIZATION"), Some("Bearer sk-test"));
    assert_eq!(recorded.headers["x-custom"], "one, two");
    assert!(recorded.is_stream());
    assert_eq!(recorded.model(), Some("my-model"));
    assert_eq!(recorded.messages().len(), 2);
    assert_eq!(recorded.tools()[0]["function"]["name"], "f");
    assert_eq!(recorded.body, body);
    assert_eq!(recorded.raw_body, body.to_string().into_bytes());

    backend.clear_requests();
    assert_eq!(backend.request_count(), 0);
    assert!(backend.last_request().is_none());
}

async fn invalid_bodies_get_400_and_keep_the_queue(backend: Backend) {
    backend.push(Reply::text("kept"));
    let mut connection = support::Connection::open(backend.addr()).await;
    let response = connection
        .send("POST", "/v1/chat/completions", &[], "{not json")
        .await;
    let response = collect(response).await.unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");

    let response = connection.post_json(&json!({"model": "m"})).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["param"], "messages");

    let recorded = backend.requests();
    assert_eq!(recorded.len(), 2);
    assert!(recorded[0].body.is_null());
    assert_eq!(recorded[0].raw_text(), "{not json");
    assert_eq!(backend.pending_replies(), 1);
}

async fn models_and_unknown_routes(backend: Backend) {
    let mut connection = support::Connection::open(backend.addr()).await;
    let response = collect(connection.send("GET", "/v1/models", &[], "").await)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "test-model");
    assert_eq!(body["data"][0]["object"], "model");
    assert!(body["data"][0]["created"].is_u64());
    assert!(body["data"][0]["owned_by"].is_string());

    backend.set_models(["a", "b"]);
    let response = collect(connection.send("GET", "/v1/models", &[], "").await)
        .await
        .unwrap();
    let ids: Vec<Value> = response.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].clone())
        .collect();
    assert_eq!(ids, [json!("a"), json!("b")]);

    let response = collect(connection.send("POST", "/v1/responses", &[], "{}").await)
        .await
        .unwrap();
    assert_eq!(response.status, 404);
    assert!(response.json()["error"]["message"].is_string());
    assert_eq!(backend.chat_requests().len(), 0);
    assert_eq!(backend.request_count(), 3);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let backend = Backend::start().unwrap();
    let mut connection = support::Connection::open(backend.addr()).await;
    for word in ["one", "two", "three"] {
        let response = connection.post_json(&streamed(word)).await;
        assert_eq!(
            joined(&chunks(&response.text()), "content"),
            format!("Hello! You said: {word}")
        );
    }
    assert_eq!(backend.chat_requests().len(), 3);
    assert_eq!(backend.connections(), 1);
    chat(backend.addr(), &request("again")).await;
    assert_eq!(backend.connections(), 2);
}

async fn recording_can_be_turned_off(backend: Backend) {
    backend.set_recording(false);
    chat(backend.addr(), &request("q")).await;
    assert_eq!(backend.request_count(), 0);
}

async fn wait_for_requests_sees_concurrent_arrivals(backend: Backend) {
    let (reply, gate) = Reply::text("slow").pause_before(0);
    backend.push(reply);
    let addr = backend.addr();
    let first = tokio::spawn(async move { chat(addr, &streamed("1")).await });
    let second = tokio::spawn(async move { chat(addr, &streamed("2")).await });
    backend.wait_for_requests(2).await;
    gate.release();
    let texts = [first.await.unwrap().text(), second.await.unwrap().text()];
    assert!(texts
        .iter()
        .any(|text| joined(&chunks(text), "content") == "slow"));
}

async fn shutdown_closes_the_port(backend: Backend) {
    let addr = backend.addr();
    chat(addr, &request("q")).await;
    backend.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A raw HTTP/1.1 exchange over a blocking socket, for tests without a
/// runtime.
fn blocking_post(addr: SocketAddr, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn start_outside_a_runtime_uses_a_thread() {
    let backend = Backend::start().unwrap();
    let response = blocking_post(backend.addr(), &request("sync").to_string());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(response.contains("Hello! You said: sync"));
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn thread_backends_survive_a_blocked_runtime() {
    let backend = Backend::start_in_thread().unwrap();
    // Blocking the test's only runtime thread would starve a backend
    // spawned on it; the threaded one still answers.
    let response = blocking_post(backend.addr(), &streamed("blocked").to_string());
    assert!(response.contains("text/event-stream"));
    assert!(response.contains("data: [DONE]"));
    backend.shutdown().await;
}

#[test]
fn binary_serves_the_echo_reply() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scripted-backend"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--delay-ms",
            "1",
            "--model",
            "demo",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("scripted-backend listening on http://")
        .unwrap()
        .to_string();
    let addr: SocketAddr = url.strip_suffix("/v1").unwrap().parse().unwrap();
    let response = blocking_post(addr, &streamed("demo").to_string());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(response.contains("\"content\":\" demo\""));
    assert!(response.contains("\"model\":\"my-model\""));
}

#[test]
fn binary_rejects_unknown_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_scripted-backend"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown argument"));
}

/// Sends raw request bytes (which must ask for `connection: close`) and
/// returns the whole raw response.
async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

/// A chat-completions POST whose body is sent chunked, without
/// `content-length`.
fn chunked_post(addr: SocketAddr, body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

/// The JSON body of a raw response with `content-length`.
fn raw_json(response: &str) -> Value {
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

async fn content_length_can_be_required(backend: Backend) {
    let body = request("framed").to_string();

    // Off (the default): the in-process backend reads a chunked body like
    // any other; the Python one reads it as empty.
    let response = raw_exchange(backend.addr(), &chunked_post(backend.addr(), &body)).await;
    let recorded = backend.last_request().unwrap();
    assert!(recorded.chunked);
    assert_eq!(recorded.content_length, None);
    if backend.is_python() {
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        assert_eq!(recorded.raw_text(), "");
    } else {
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert_eq!(recorded.raw_text(), body);
    }

    backend.require_content_length(true);
    let response = raw_exchange(backend.addr(), &chunked_post(backend.addr(), &body)).await;
    assert!(response.starts_with("HTTP/1.1 411 "), "{response}");
    assert_eq!(
        raw_json(&response),
        json!({"error": {
            "message": "A request body needs a Content-Length header.",
            "type": "invalid_request_error",
            "param": null,
            "code": null,
        }})
    );
    assert_eq!(
        backend.chat_requests().len(),
        2,
        "refused requests are logged"
    );

    let response = chat(backend.addr(), &request("framed")).await;
    assert_eq!(response.status, 200);
    let recorded = backend.last_request().unwrap();
    assert!(!recorded.chunked);
    assert_eq!(recorded.content_length, Some(body.len() as u64));

    backend.require_content_length(false);
    let response = raw_exchange(backend.addr(), &chunked_post(backend.addr(), &body)).await;
    assert!(!response.starts_with("HTTP/1.1 411 "), "{response}");
}

async fn rejected_params_leave_the_queue_alone(backend: Backend) {
    backend.push(Reply::text("queued"));
    backend.reject_param(
        "max_tokens",
        Reply::error(400, "Unsupported parameter: 'max_tokens'").param("max_tokens"),
    );
    backend.reject_param(
        "store",
        Reply::raw(422, "text/plain", "store is not supported"),
    );

    let mut body = request("q");
    body["max_tokens"] = json!(5);
    let response = chat(backend.addr(), &body).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["param"], "max_tokens");
    // A null value still names the key.
    let mut body = request("q");
    body["store"] = Value::Null;
    let response = chat(backend.addr(), &body).await;
    assert_eq!(response.status, 422);
    assert_eq!(response.text(), "store is not supported");
    assert_eq!(backend.pending_replies(), 1);
    assert_eq!(backend.chat_requests().len(), 2);

    // A nested key of the same name is not a top-level one.
    let mut body = request("q");
    body["metadata"] = json!({"max_tokens": 1});
    let response = chat(backend.addr(), &body).await;
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "queued"
    );

    backend.clear_rejections();
    let mut body = request("q");
    body["max_tokens"] = json!(5);
    let response = chat(backend.addr(), &body).await;
    assert_eq!(response.status, 200);
}

async fn required_headers_answer_like_azure(backend: Backend) {
    backend.require_header("api-key", "secret");
    let mut connection = support::Connection::open(backend.addr()).await;
    for (method, path, body) in [
        ("POST", "/v1/chat/completions", request("q").to_string()),
        ("GET", "/v1/models", String::new()),
    ] {
        let without = collect(connection.send(method, path, &[], &body).await)
            .await
            .unwrap();
        assert_eq!(without.status, 401);
        assert_eq!(
            without.json(),
            json!({"error": {
                "message": "Access denied due to invalid subscription key or wrong API endpoint.",
                "type": "invalid_request_error",
                "param": null,
                "code": "401",
            }})
        );
        let wrong = collect(
            connection
                .send(method, path, &[("api-key", "Secret")], &body)
                .await,
        )
        .await
        .unwrap();
        assert_eq!(wrong.status, 401);
        let right = collect(
            connection
                .send(method, path, &[("API-Key", "secret")], &body)
                .await,
        )
        .await
        .unwrap();
        assert_eq!(right.status, 200, "{}", right.text());
    }
    assert_eq!(backend.request_count(), 6);
}

async fn required_queries_answer_like_azure(backend: Backend) {
    backend.require_query("api-version=2024-10-21");
    let mut connection = support::Connection::open(backend.addr()).await;
    let body = request("q").to_string();
    for path in [
        "/v1/chat/completions",
        "/v1/chat/completions?api-version=2024-02-01",
        "/v1/chat/completions?api-version=2024-10-21&x=1",
    ] {
        let response = collect(connection.send("POST", path, &[], &body).await)
            .await
            .unwrap();
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(
            response.json(),
            json!({"error": {"code": "404", "message": "Resource not found"}})
        );
    }
    let response = collect(
        connection
            .send(
                "POST",
                "/v1/chat/completions?api-version=2024-10-21",
                &[],
                &body,
            )
            .await,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let models = collect(connection.send("GET", "/v1/models", &[], "").await)
        .await
        .unwrap();
    assert_eq!(models.status, 404);
    let models = collect(
        connection
            .send("GET", "/v1/models?api-version=2024-10-21", &[], "")
            .await,
    )
    .await
    .unwrap();
    assert_eq!(models.status, 200);
    assert_eq!(
        backend.last_request().unwrap().query.as_deref(),
        Some("api-version=2024-10-21")
    );
}

async fn json_despite_stream_answers_one_object(backend: Backend) {
    backend.push(
        Reply::text("It is sunny.")
            .reasoning("Look it up")
            .reasoning_field("reasoning")
            .tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#)
            .usage(9, 4)
            .json_despite_stream(),
    );
    let response = chat(backend.addr(), &streamed_with_usage("q")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), "application/json");
    assert_eq!(
        response.headers["content-length"],
        response.body.len().to_string()
    );
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "It is sunny.");
    assert_eq!(message["reasoning"], "Look it up");
    assert!(message.get("reasoning_content").is_none());
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["total_tokens"], 13);

    backend.push(Reply::text("plain").json_despite_stream().no_usage());
    let body = chat(backend.addr(), &streamed("q")).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "plain");
    assert!(body.get("usage").is_none());
}

async fn no_usage_ignores_stream_options(backend: Backend) {
    backend.push(Reply::text("a b").usage(1, 2).no_usage());
    let text = chat(backend.addr(), &streamed_with_usage("q")).await.text();
    let chunks = chunks(&text);
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(data_payloads(&text).last().unwrap(), "[DONE]");

    backend.push(Reply::text("a b").no_usage());
    let body = chat(backend.addr(), &request("q")).await.json();
    assert!(body.get("usage").is_none());
    assert_eq!(body["choices"][0]["message"]["content"], "a b");
}

async fn specs_script_the_backend_over_http(backend: Backend) {
    let mut control = support::Connection::open(backend.addr()).await;
    let mut call = async |method: &str, path: &str, body: Value| {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        collect(control.send(method, path, &[], &body).await)
            .await
            .unwrap()
    };
    let (reply, gate) = Reply::text("held back").pause_before(1);
    drop(gate);
    let queued = call(
        "POST",
        "/_scripted/replies",
        json!([Reply::text("spec").no_usage().to_spec(), reply.to_spec()]),
    )
    .await;
    assert_eq!(queued.json(), json!({"queued": 2}));
    assert_eq!(backend.pending_replies(), 2);
    let refused = call("POST", "/_scripted/replies", json!([{"txet": "typo"}])).await;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("txet"));

    let body = chat(backend.addr(), &request("q")).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "spec");
    assert!(body.get("usage").is_none());
    // The gate was released before the spec was sent: nothing holds.
    let body = chat(backend.addr(), &request("q")).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "held back");

    call(
        "POST",
        "/_scripted/default",
        json!({"text": "fallback", "gates": [{"id": "g1", "at": "finish"}]}),
    )
    .await;
    call(
        "POST",
        "/_scripted/quirks",
        json!({"reject_params": {"seed": {"error": {"status": 400, "message": "no seed"}}}}),
    )
    .await;
    call("POST", "/_scripted/models", json!(["m1"])).await;
    let not_yet = call("GET", "/_scripted/gates/g1?wait=0", Value::Null).await;
    assert_eq!(not_yet.json(), json!({"reached": false, "released": false}));

    let addr = backend.addr();
    let held = tokio::spawn(async move { chat(addr, &streamed("q")).await });
    let reached = call("GET", "/_scripted/gates/g1?wait=30", Value::Null).await;
    assert_eq!(reached.json()["reached"], true);
    call("POST", "/_scripted/gates/g1/release", json!({})).await;
    let text = held.await.unwrap().text();
    assert_eq!(joined(&chunks(&text), "content"), "fallback");

    let mut body = request("q");
    body["seed"] = json!(1);
    assert_eq!(chat(backend.addr(), &body).await.status, 400);
    call(
        "POST",
        "/_scripted/quirks",
        json!({"clear": ["reject_params"]}),
    )
    .await;
    assert_eq!(chat(backend.addr(), &body).await.status, 200);

    let log = call("GET", "/_scripted/requests?wait_for=4&wait=5", Value::Null).await;
    let log = log.json();
    let log = log["requests"].as_array().unwrap();
    assert_eq!(log.len(), 5, "control requests are not logged");
    assert_eq!(log[0]["path"], "/v1/chat/completions");
    assert!(log[0]["body_base64"].as_str().unwrap().starts_with("eyJ"));
    assert_eq!(log[0]["chunked"], false);
    assert!(log[0]["content_length"].is_u64());
    let connections = call("GET", "/_scripted/connections", Value::Null).await;
    assert!(connections.json()["connections"].as_u64().unwrap() >= 5);
    call("POST", "/_scripted/recording", json!({"recording": false})).await;
    chat(backend.addr(), &request("q")).await;
    call("DELETE", "/_scripted/requests", Value::Null).await;
    assert_eq!(backend.request_count(), 0);
    let unknown = call("GET", "/_scripted/nothing", Value::Null).await;
    assert_eq!(unknown.status, 404);
}

async fn any_base_path_is_served(backend: Backend) {
    let mut connection = support::Connection::open(backend.addr()).await;
    let body = request("azure").to_string();
    for path in [
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
        "/api/v1/chat/completions",
        "/chat/completions",
    ] {
        let response = collect(connection.send("POST", path, &[], &body).await)
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.json()["choices"][0]["message"]["content"],
            "Hello! You said: azure"
        );
    }
    let models = collect(
        connection
            .send("GET", "/openai/deployments/gpt4o/models", &[], "")
            .await,
    )
    .await
    .unwrap();
    assert_eq!(models.json()["data"][0]["id"], "test-model");
    let unknown = collect(
        connection
            .send("POST", "/v1/chat/completions/extra", &[], &body)
            .await,
    )
    .await
    .unwrap();
    assert_eq!(unknown.status, 404);
    let chat = backend.chat_requests();
    assert_eq!(chat.len(), 3);
    assert_eq!(chat[0].path, "/openai/deployments/gpt4o/chat/completions");
    assert_eq!(chat[0].query.as_deref(), Some("api-version=2024-10-21"));
}
