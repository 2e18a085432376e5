use serde_json::{json, Value};

use super::*;
use crate::api::request::CreateRequest;

fn stream(tools: Value) -> EventStream {
    let request = CreateRequest::parse(
        json!({"model": "m", "input": "hi", "tools": tools})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let map = ToolMap::new(request.tools.as_deref().unwrap_or_default(), None).unwrap();
    EventStream::new(
        Response::start("resp_1".into(), 1, &request),
        map,
        crate::ids::fixed::env(1).0,
    )
}

fn chunk(v: Value) -> ChatChunk {
    serde_json::from_value(v).unwrap()
}

fn delta(d: Value) -> ChatChunk {
    chunk(json!({"choices": [{"index": 0, "delta": d}]}))
}

fn finish(reason: &str) -> ChatChunk {
    chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}))
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn run(s: &mut EventStream, chunks: Vec<ChatChunk>) -> Vec<Event> {
    let mut events = s.start();
    for c in chunks {
        events.extend(s.feed(c));
    }
    events.extend(s.finish());
    events
}

#[test]
fn plain_text_sequence() {
    let mut s = stream(json!([]));
    let events = run(
        &mut s,
        vec![
            delta(json!({"role": "assistant"})),
            delta(json!({"content": "Hel"})),
            delta(json!({"content": "lo"})),
            finish("stop"),
            chunk(json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})),
        ],
    );
    assert_eq!(
        names(&events),
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
            "response.completed",
        ]
    );
    let seq: Vec<u64> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(seq, (0..events.len() as u64).collect::<Vec<_>>());
    let response = s.response();
    assert_eq!(response.status, ResponseStatus::Completed);
    assert_eq!(response.output_text(), "Hello");
    assert_eq!(response.usage.as_ref().unwrap().total_tokens, 7);
    // The ids in the events are the ids of the final object.
    let Item::Message(m) = &response.output[0] else {
        panic!()
    };
    let v = serde_json::to_value(&events[4]).unwrap();
    assert_eq!(v["item_id"].as_str(), m.id.as_deref());
    let sse = String::from_utf8(events[4].to_sse()).unwrap();
    assert!(sse.starts_with(
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\""
    ));
    assert!(sse.ends_with("\n\n"));
}

#[test]
fn reasoning_then_text() {
    let mut s = stream(json!([]));
    let events = run(
        &mut s,
        vec![
            delta(json!({"reasoning_content": "think"})),
            delta(json!({"reasoning_content": "ing"})),
            delta(json!({"content": "answer"})),
            finish("stop"),
        ],
    );
    assert_eq!(
        names(&events)[2..12],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
        ]
    );
    let out = &s.response().output;
    let Item::Reasoning(r) = &out[0] else {
        panic!()
    };
    assert_eq!(r.text(), "thinking");
    assert_eq!(s.response().output_text(), "answer");
}

#[test]
fn split_and_interleaved_tool_calls() {
    let mut s = stream(json!([
        {"type": "function", "name": "get_weather"},
        {"type": "namespace", "name": "mcp__fs__", "tools": [{"type": "function", "name": "read"}]}
    ]));
    let events = run(
        &mut s,
        vec![
            delta(json!({"content": "Checking."})),
            delta(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function"}]})),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": ""}}]}),
            ),
            delta(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "mcp__fs__read", "arguments": "{\"pa"}}]}),
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
            delta(json!({"tool_calls": [{"index": 1, "function": {"arguments": "th\":\"/\"}"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
            delta(json!({})),
            finish("tool_calls"),
        ],
    );
    assert_eq!(*names(&events).last().unwrap(), "response.completed");
    let out = &s.response().output;
    assert_eq!(out.len(), 3);
    assert!(matches!(&out[0], Item::Message(_)));
    let Item::FunctionCall(b) = &out[1] else {
        panic!()
    };
    let Item::FunctionCall(a) = &out[2] else {
        panic!()
    };
    assert_eq!(
        (b.name.as_str(), b.namespace.as_deref()),
        ("read", Some("mcp__fs__"))
    );
    assert_eq!(b.arguments, "{\"path\":\"/\"}");
    assert_eq!(
        (a.call_id.as_str(), a.arguments.as_str()),
        ("call_a", "{\"city\":\"Paris\"}")
    );
    // The message is closed before the first call is announced.
    let first_call = names(&events)
        .iter()
        .position(|n| *n == "response.function_call_arguments.delta")
        .unwrap();
    let message_done = names(&events)
        .iter()
        .position(|n| *n == "response.output_item.done")
        .unwrap();
    assert!(message_done < first_call);
    // Deltas of each call add up to its arguments.
    let args_for = |id: &str| -> String {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::FunctionCallArgumentsDelta { item_id, delta, .. } if item_id == id => {
                    Some(delta.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(args_for(a.id.as_deref().unwrap()), a.arguments);
    assert_eq!(args_for(b.id.as_deref().unwrap()), b.arguments);
}

#[test]
fn custom_tool_call() {
    let mut s = stream(json!([{"type": "custom", "name": "apply_patch"}]));
    let events = run(
        &mut s,
        vec![
            delta(
                json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "apply_patch", "arguments": "{\"input\":"}}]}),
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"*** Begin\"}"}}]}),
            ),
            finish("tool_calls"),
        ],
    );
    assert!(names(&events).contains(&"response.custom_tool_call_input.done"));
    assert!(!names(&events).contains(&"response.function_call_arguments.delta"));
    let Item::CustomToolCall(c) = &s.response().output[0] else {
        panic!()
    };
    assert_eq!(c.input, "*** Begin");
}

#[test]
fn length_limit_is_incomplete() {
    let mut s = stream(json!([]));
    let events = run(
        &mut s,
        vec![delta(json!({"content": "abc"})), finish("length")],
    );
    assert_eq!(*names(&events).last().unwrap(), "response.incomplete");
    let r = s.response();
    assert_eq!(r.status, ResponseStatus::Incomplete);
    assert_eq!(
        r.incomplete_details.as_ref().unwrap().reason,
        "max_output_tokens"
    );
}

#[test]
fn failure_has_error_and_failed() {
    let mut s = stream(json!([]));
    let mut events = s.start();
    events.extend(s.feed(delta(json!({"content": "par"}))));
    events.extend(s.fail(&ApiError::backend("backend closed the connection")));
    let n = names(&events);
    assert_eq!(n[n.len() - 2..], ["error", "response.failed"]);
    let r = s.response();
    assert_eq!(r.status, ResponseStatus::Failed);
    // The Response carries a code of OpenAI's set; the event the specific one.
    assert_eq!(r.error.as_ref().unwrap().code, "server_error");
    let error = serde_json::to_value(&events[n.len() - 2]).unwrap();
    assert_eq!(error["code"], "backend_error");
}

#[test]
fn failing_a_finished_stream_replaces_its_terminal_event() {
    let mut s = stream(json!([]));
    let mut events = s.start();
    events.extend(s.feed(delta(json!({"content": "done"}))));
    events.extend(s.feed(finish("stop")));
    events.extend(s.feed(chunk(
        json!({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}),
    )));
    let end = s.finish();
    let mut end = s.fail_instead(end, &ApiError::server("storing failed"));
    events.append(&mut end);
    let n = names(&events);
    assert_eq!(
        n[n.len() - 5..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "error",
            "response.failed",
        ]
    );
    assert!(!n.contains(&"response.completed"));
    let seq: Vec<u64> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(seq, (0..events.len() as u64).collect::<Vec<_>>());
    let r = s.response();
    assert_eq!(r.status, ResponseStatus::Failed);
    assert_eq!(r.usage.as_ref().unwrap().total_tokens, 3);
    assert_eq!(r.output_text(), "done");
}

#[test]
fn added_items_have_no_parts_yet() {
    let mut s = stream(json!([]));
    let events = run(
        &mut s,
        vec![
            delta(json!({"reasoning_content": "hm"})),
            delta(json!({"content": "ok"})),
            finish("stop"),
        ],
    );
    let added: Vec<Value> = events
        .iter()
        .filter(|e| e.kind.name() == "response.output_item.added")
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["item"]["content"], json!([]));
    assert_eq!(added[1]["item"]["content"], json!([]));
    assert_eq!(s.response().output_text(), "ok");
}

#[test]
fn tool_call_ids_and_names_split_or_repeated() {
    let mut s = stream(json!([
        {"type": "function", "name": "get_weather"},
        {"type": "function", "name": "get_time"}
    ]));
    run(
        &mut s,
        vec![
            // Call 0: id and name split across chunks.
            delta(
                json!({"tool_calls": [{"index": 0, "id": "call_", "function": {"name": "get_"}}]}),
            ),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "a1", "function": {"name": "weather", "arguments": "{}"}}]}),
            ),
            // Call 1: id and name repeated whole in every chunk.
            delta(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{\"tz\":"}}]}),
            ),
            delta(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "\"UTC\"}"}}]}),
            ),
            finish("tool_calls"),
        ],
    );
    let out = &s.response().output;
    let Item::FunctionCall(a) = &out[0] else {
        panic!()
    };
    let Item::FunctionCall(b) = &out[1] else {
        panic!()
    };
    assert_eq!(
        (a.call_id.as_str(), a.name.as_str(), a.arguments.as_str()),
        ("call_a1", "get_weather", "{}")
    );
    assert_eq!(
        (b.call_id.as_str(), b.name.as_str(), b.arguments.as_str()),
        ("call_b", "get_time", "{\"tz\":\"UTC\"}")
    );
}
