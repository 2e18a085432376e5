//! The whole API natively: create, stream, continue, branch, delete, item
//! references and the error paths, on [`MemoryKv`] and an in-memory backend
//! that replays scripted answers, with a fixed clock and counting ids. (One
//! file of cases over one fixture, hence its length.)

use std::rc::Rc;

use serde_json::{json, Value};

use super::Service;
use crate::backend::replay::{self, events, text, ReplayBackend, Scripted};
use crate::create::EventSink;
use crate::error::ApiError;
use crate::ids::fixed::FixedClock;
use crate::store::MemoryKv;

struct Fixture {
    service: Service<MemoryKv, Rc<ReplayBackend>>,
    backend: Rc<ReplayBackend>,
    clock: Rc<FixedClock>,
}

const T0: i64 = 1_800_000_000;

fn fixture(pairs: &[(&str, &str)]) -> Fixture {
    let (service, backend, clock) = replay::service(pairs, T0);
    Fixture {
        service,
        backend,
        clock,
    }
}

/// Runs a future to completion; nothing here ever waits on anything.
fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

impl Fixture {
    fn create(&self, body: Value) -> Result<Value, ApiError> {
        let bytes = body.to_string().into_bytes();
        block(self.service.create(None, &bytes)).map(|r| serde_json::to_value(r).unwrap())
    }

    /// A streamed create: the events as JSON, checked for numbering.
    fn stream(&self, mut body: Value) -> Vec<Value> {
        body["stream"] = json!(true);
        let bytes = body.to_string().into_bytes();
        let mut sink = Collect::default();
        block(async {
            let create = self.service.start(None, &bytes).await.unwrap();
            create.run(&mut sink).await
        });
        let text = String::from_utf8(sink.0).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], n, "{event}");
        }
        events
    }

    fn get(&self, id: &Value) -> Result<Value, ApiError> {
        self.service
            .get(None, id.as_str().unwrap())
            .map(|r| serde_json::to_value(r).unwrap())
    }
}

/// A client: collects what it is sent, or goes away after `limit` writes.
#[derive(Default)]
struct Collect(Vec<u8>, Option<usize>);

impl EventSink for Collect {
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        if let Some(left) = self.1.as_mut() {
            if *left == 0 {
                return false;
            }
            *left -= 1;
        }
        self.0.extend(bytes);
        true
    }
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .filter_map(|i| i["content"][0]["text"].as_str())
        .collect()
}

fn id_number(n: u8) -> String {
    format!("{:046}{n:02x}", 0)
}

#[test]
fn create_is_stored_with_fixed_ids_and_time() {
    let f = fixture(&[]);
    f.backend.push(Ok(events(&text("Hello there"))));
    let response = f.create(json!({"model": "m", "input": "hi"})).unwrap();
    assert_eq!(output_text(&response), "Hello there");
    // Ids in the order they are made: the input message, the response,
    // the output message.
    assert_eq!(response["id"], format!("resp_{}", id_number(2)));
    assert_eq!(response["output"][0]["id"], format!("msg_{}", id_number(3)));
    assert_eq!(
        (
            response["created_at"].as_i64(),
            response["completed_at"].as_i64()
        ),
        (Some(T0), Some(T0))
    );
    assert_eq!(response["usage"]["total_tokens"], 5);
    assert_eq!(f.get(&response["id"]).unwrap(), response);
    let chat = &f.backend.chats()[0];
    assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(chat["stream"], true);
}

#[test]
fn stream_emits_every_event_and_stores_the_terminal_response() {
    let f = fixture(&[]);
    f.backend.push(Ok(events(&text("One two"))));
    let events = f.stream(json!({"model": "m", "input": "hi"}));
    let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let terminal = &events.last().unwrap()["response"];
    assert_eq!(&f.get(&terminal["id"]).unwrap(), terminal);
}

#[test]
fn continue_and_branch_replay_their_own_lineage() {
    let f = fixture(&[]);
    f.backend.push(Ok(events(&text("A1"))));
    let first = f.create(json!({"model": "m", "input": "Q1"})).unwrap();
    f.backend.push(Ok(events(&text("A2"))));
    let second = f
        .create(json!({"model": "m", "input": "Q2", "previous_response_id": first["id"]}))
        .unwrap();
    f.backend.push(Ok(events(&text("B2"))));
    f.create(json!({"model": "m", "input": "R2", "previous_response_id": first["id"]}))
        .unwrap();
    f.backend.push(Ok(events(&text("A3"))));
    f.create(
        json!({"model": "m", "input": "Q3", "previous_response_id": second["id"],
                    "instructions": "Be brief."}),
    )
    .unwrap();
    let contents = |chat: &Value| -> Vec<String> {
        chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    let chats = f.backend.chats();
    assert_eq!(contents(&chats[1]), ["Q1", "A1", "Q2"]);
    assert_eq!(contents(&chats[2]), ["Q1", "A1", "R2"]);
    assert_eq!(
        contents(&chats[3]),
        ["Be brief.", "Q1", "A1", "Q2", "A2", "Q3"]
    );
}

#[test]
fn delete_removes_the_response_and_what_continues_it() {
    let f = fixture(&[]);
    let first = f.create(json!({"model": "m", "input": "hi"})).unwrap();
    let deleted = f
        .service
        .delete(None, first["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(f.get(&first["id"]).unwrap_err().status, 404);
    let again = f
        .service
        .delete(None, first["id"].as_str().unwrap())
        .unwrap_err();
    assert_eq!(again.status, 404);
    let error = f
        .create(json!({"model": "m", "input": "x", "previous_response_id": first["id"]}))
        .unwrap_err();
    assert_eq!(
        (error.status, error.param.as_deref()),
        (404, Some("previous_response_id"))
    );
}

#[test]
fn item_references_resolve_from_the_conversation_and_the_store() {
    let f = fixture(&[]);
    let first = f
        .create(json!({"model": "m", "input": "remember this"}))
        .unwrap();
    let items = f
        .service
        .list_input_items(None, first["id"].as_str().unwrap(), &Default::default())
        .unwrap();
    let item_id = items["data"][0]["id"].clone();
    let output_id = first["output"][0]["id"].clone();
    f.create(
        json!({"model": "m", "input": [{"type": "item_reference", "id": item_id},
                                             {"type": "item_reference", "id": output_id}]}),
    )
    .unwrap();
    let chat = f.backend.chats().pop().unwrap();
    assert_eq!(chat["messages"][0]["content"], "remember this");
    assert_eq!(chat["messages"][1]["role"], "assistant");
    let error = f
        .create(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_nope"}]}))
        .unwrap_err();
    assert_eq!(
        (error.status, error.param.as_deref()),
        (404, Some("input[0].id"))
    );
}

#[test]
fn expired_responses_are_gone() {
    let f = fixture(&[("response_ttl_seconds", "60")]);
    let response = f.create(json!({"model": "m", "input": "hi"})).unwrap();
    f.clock.0.set(T0 + 59);
    assert!(f.get(&response["id"]).is_ok());
    f.clock.0.set(T0 + 61);
    assert_eq!(f.get(&response["id"]).unwrap_err().status, 404);
}

#[test]
fn request_errors_are_answered_before_the_backend_is_called() {
    let f = fixture(&[("api_keys", "k1")]);
    let body = json!({"model": "m", "input": "hi"}).to_string();
    let unauthorized = block(f.service.create(Some("nope"), body.as_bytes())).unwrap_err();
    assert_eq!(unauthorized.status, 401);
    let malformed = block(f.service.create(Some("k1"), b"{")).unwrap_err();
    assert_eq!(malformed.status, 400);
    let bad = json!({"model": "m", "input": "hi", "temperature": "hot"}).to_string();
    let invalid = block(f.service.create(Some("k1"), bad.as_bytes())).unwrap_err();
    assert_eq!(
        (invalid.status, invalid.param.as_deref()),
        (400, Some("temperature"))
    );
    let routed = fixture(&[
        (
            "backends",
            r#"[{"models": "gpt-*", "url": "http://127.0.0.1:9/v1"}]"#,
        ),
        ("backend_url", ""),
    ]);
    let unknown = routed
        .create(json!({"model": "llama", "input": "hi"}))
        .unwrap_err();
    assert_eq!(
        (unknown.status, unknown.code.as_deref()),
        (404, Some("model_not_found"))
    );
    assert!(f.backend.sent.borrow().is_empty() && routed.backend.sent.borrow().is_empty());
}

#[test]
fn backend_failures_by_kind() {
    let f = fixture(&[]);
    let cases: Vec<(Scripted, u16)> = vec![
        (
            Ok((
                400,
                "application/json",
                vec![br#"{"error":{"message":"bad temp","param":"temperature"}}"#.to_vec()],
            )),
            400,
        ),
        (Ok((500, "text/plain", vec![b"boom".to_vec()])), 502),
        (
            Err(ApiError::backend(
                "The backend could not be reached: the connection was refused.",
            )),
            502,
        ),
        (Ok((200, "text/html", vec![b"<html>".to_vec()])), 502),
        (
            Ok((
                200,
                "application/json",
                vec![br#"{"error":{"message":"busy","code":429}}"#.to_vec()],
            )),
            429,
        ),
        (Ok(cut_after_one_chunk()), 502),
    ];
    for (answer, status) in cases {
        f.backend.push(answer);
        let error = f.create(json!({"model": "m", "input": "hi"})).unwrap_err();
        assert_eq!(error.status, status, "{error:?}");
    }
    // Nothing failed is stored: its client never learned its id.
    assert!(f.service.kv.values.borrow().is_empty());
}

/// A stream that stops after its first chunk, without a finish reason.
fn cut_after_one_chunk() -> (u16, &'static str, Vec<Vec<u8>>) {
    let (status, kind, mut pieces) = events(&text("a b c"));
    pieces.truncate(1);
    (status, kind, pieces)
}

#[test]
fn streams_fail_with_response_failed() {
    let f = fixture(&[]);
    let cut = {
        let (status, kind, mut pieces) = events(&text("a b c"));
        pieces.truncate(2);
        (status, kind, pieces)
    };
    let malformed = (
        200,
        "text/event-stream",
        vec![b"data: {\"choices\": [\n\n".to_vec()],
    );
    let in_stream = events(&[json!({"error": {"message": "out of memory"}})]);
    let cases: Vec<(Scripted, &str)> = vec![
        (
            Ok((500, "text/plain", vec![b"boom".to_vec()])),
            "status 500",
        ),
        (Ok(cut), "before the completion was finished"),
        (Ok(malformed), "malformed chunk"),
        (Ok(in_stream), "out of memory"),
    ];
    for (answer, message) in cases {
        f.backend.push(answer);
        let events = f.stream(json!({"model": "m", "input": "hi"}));
        let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            names[names.len() - 2..],
            ["error", "response.failed"],
            "{message}"
        );
        let failed = &events.last().unwrap()["response"];
        assert!(
            failed["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{failed}"
        );
        assert_eq!(&f.get(&failed["id"]).unwrap(), failed);
    }
}

#[test]
fn a_client_that_goes_away_leaves_an_incomplete_response() {
    let f = fixture(&[]);
    f.backend.push(Ok(events(&text("one two three four"))));
    let body = json!({"model": "m", "input": "hi", "stream": true}).to_string();
    let mut sink = Collect(Vec::new(), Some(3));
    let (response, _) = block(async {
        let create = f.service.start(None, body.as_bytes()).await.unwrap();
        create.run(&mut sink).await
    });
    let stored = f.get(&json!(response.id)).unwrap();
    assert_eq!(stored["status"], "incomplete");
    assert_eq!(stored["incomplete_details"]["reason"], "interrupted");
}

#[test]
fn max_tool_calls_counts_across_the_answer() {
    let f = fixture(&[]);
    let call = |i: usize, name: &str| {
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": format!("call_{i}"),
               "type": "function", "function": {"name": name, "arguments": "{}"}}]}}]})
    };
    let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    f.backend.push(Ok(events(&[
        call(0, "a"),
        call(1, "b"),
        call(2, "a"),
        finish,
    ])));
    let tools = json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]);
    let response = f
        .create(json!({"model": "m", "input": "go", "tools": tools, "max_tool_calls": 2}))
        .unwrap();
    let calls: Vec<&str> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["call_0", "call_1"]);
}
