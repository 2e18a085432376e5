//! Streaming (`"stream": true`) end to end: the built component, served by
//! the host, against the scripted backend. Every stream is checked on the
//! wire (frame shape, sequence numbers, one terminal event, `[DONE]`), for
//! item consistency (ids, deltas adding up to the done events and to the
//! final object), and against what `GET /v1/responses/{id}` returns.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{output_text, parse_sse, Harness};
use scripted_backend::Reply;
use serde_json::{json, Value};

const TERMINAL: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// A finished stream: the raw body and its events (without `[DONE]`).
struct Streamed {
    events: Vec<Value>,
}

impl Streamed {
    fn names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default())
            .collect()
    }

    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The Response carried by the terminal event.
    fn terminal(&self) -> &Value {
        &self.events.last().expect("events")["response"]
    }

    fn id(&self) -> String {
        self.events[0]["response"]["id"]
            .as_str()
            .expect("response id")
            .to_owned()
    }
}

fn request(input: &str) -> Value {
    json!({"model": "m", "input": input, "stream": true})
}

/// Streams `body`, checks the wire format and the consistency of the
/// events, and returns them.
async fn stream(h: &Harness, body: &Value) -> Streamed {
    let response = h
        .client
        .post(h.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .expect("request reaches the host");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let raw = response.text().await.expect("body");
    let events = check_wire(&raw);
    check_items(&events);
    Streamed { events }
}

/// Frame shape, `\n` line endings, `[DONE]`, sequence numbers, lifecycle
/// events and exactly one terminal event, last.
fn check_wire(raw: &str) -> Vec<Value> {
    assert!(!raw.contains('\r'), "only \\n line endings: {raw:?}");
    assert!(
        raw.ends_with("\n\ndata: [DONE]\n\n"),
        "ends with [DONE]: {raw}"
    );
    let blocks: Vec<&str> = raw.trim_end_matches("\n\n").split("\n\n").collect();
    let (done, blocks) = blocks.split_last().unwrap();
    assert_eq!(*done, "data: [DONE]");
    let mut events = Vec::new();
    for (n, block) in blocks.iter().enumerate() {
        let lines: Vec<&str> = block.split('\n').collect();
        assert_eq!(lines.len(), 2, "one event line and one data line: {block}");
        let name = lines[0].strip_prefix("event: ").expect("event line");
        let data = lines[1].strip_prefix("data: ").expect("data line");
        let event: Value = serde_json::from_str(data).expect("data is JSON");
        assert_eq!(event["type"], name, "{block}");
        assert_eq!(event["sequence_number"], n as u64, "{block}");
        events.push(event);
    }
    assert_eq!(parse_sse(raw).len(), blocks.len() + 1);
    let names: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    for lifecycle in &events[..2] {
        assert_eq!(lifecycle["response"]["status"], "in_progress");
        assert_eq!(lifecycle["response"]["output"], json!([]));
        assert_eq!(lifecycle["response"]["id"], events[0]["response"]["id"]);
    }
    let terminals = names.iter().filter(|n| TERMINAL.contains(n)).count();
    assert_eq!(terminals, 1, "exactly one terminal event: {names:?}");
    let last = *names.last().unwrap();
    assert!(
        TERMINAL.contains(&last),
        "the terminal event is last: {names:?}"
    );
    let terminal = &events.last().unwrap()["response"];
    assert_eq!(terminal["id"], events[0]["response"]["id"]);
    let status = last.strip_prefix("response.").unwrap();
    assert_eq!(terminal["status"], status);
    if last == "response.failed" {
        assert_eq!(names[names.len() - 2], "error", "{names:?}");
        let error = &events[events.len() - 2];
        assert!(
            error["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{error}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        // `response.error.code` is one of OpenAI's codes; the event may be
        // more specific.
        assert_eq!(terminal["error"]["code"], "server_error");
        assert_eq!(terminal["error"]["message"], error["message"]);
    } else {
        assert!(!names.contains(&"error"), "{names:?}");
        assert_eq!(terminal["error"], Value::Null);
    }
    events
}

/// Items open before their deltas and close after them, with the ids and
/// contents of the final object.
fn check_items(events: &[Value]) {
    let output = events.last().unwrap()["response"]["output"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // output_index → item id, for the items currently open.
    let mut open: BTreeMap<u64, String> = BTreeMap::new();
    let mut added = 0u64;
    let mut parts: BTreeMap<String, bool> = BTreeMap::new();
    let mut deltas: BTreeMap<(String, &str), String> = BTreeMap::new();
    let field = |e: &Value, key: &str| e[key].as_str().unwrap_or_default().to_owned();
    for event in events {
        let kind = event["type"].as_str().unwrap();
        let index = event["output_index"].as_u64();
        let item_id = || {
            let id = field(event, "item_id");
            let index = index.expect("output_index");
            assert_eq!(
                open.get(&index),
                Some(&id),
                "event of an open item: {event}"
            );
            id
        };
        match kind {
            "response.output_item.added" => {
                let index = index.unwrap();
                assert_eq!(index, added, "items are added in output order: {event}");
                added += 1;
                let id = field(&event["item"], "id");
                assert!(!id.is_empty(), "{event}");
                assert_eq!(event["item"]["status"], "in_progress", "{event}");
                open.insert(index, id);
            }
            "response.output_item.done" => {
                let index = index.unwrap();
                let id = open.remove(&index).expect("done of an open item");
                assert_eq!(event["item"]["id"], id.as_str());
                assert_ne!(event["item"]["status"], "in_progress", "{event}");
                assert_eq!(
                    output[index as usize], event["item"],
                    "done item = final item"
                );
                assert!(
                    !parts.get(&id).copied().unwrap_or(false),
                    "part closed: {event}"
                );
            }
            "response.content_part.added" => {
                let id = item_id();
                assert_eq!(event["content_index"], 0);
                assert!(parts.insert(id, true).is_none(), "one part: {event}");
            }
            "response.content_part.done" => {
                let id = item_id();
                assert_eq!(parts.insert(id.clone(), false), Some(true));
                let text = &output[index.unwrap() as usize]["content"][0];
                assert_eq!(&event["part"], text, "{event}");
            }
            "response.output_text.delta"
            | "response.reasoning_text.delta"
            | "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta" => {
                let id = item_id();
                if kind.contains("text") {
                    assert_eq!(parts.get(&id), Some(&true), "delta inside a part: {event}");
                }
                let family = kind.trim_end_matches(".delta");
                deltas
                    .entry((id, family_name(family)))
                    .or_default()
                    .push_str(event["delta"].as_str().expect("delta"));
            }
            "response.output_text.done"
            | "response.reasoning_text.done"
            | "response.function_call_arguments.done"
            | "response.custom_tool_call_input.done" => {
                let id = item_id();
                let family = family_name(kind.trim_end_matches(".done"));
                let key = match family {
                    "function_call_arguments" => "arguments",
                    "custom_tool_call_input" => "input",
                    _ => "text",
                };
                let so_far = deltas
                    .get(&(id.clone(), family))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(event[key].as_str(), Some(so_far.as_str()), "{event}");
                let item = &output[index.unwrap() as usize];
                let final_value = match key {
                    "text" => &item["content"][0]["text"],
                    other => &item[other],
                };
                assert_eq!(&event[key], final_value, "{event}");
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "every item is closed: {open:?}");
    assert_eq!(
        added as usize,
        output.len(),
        "every output item was announced"
    );
}

fn family_name(kind: &str) -> &'static str {
    match kind {
        "response.output_text" => "output_text",
        "response.reasoning_text" => "reasoning_text",
        "response.function_call_arguments" => "function_call_arguments",
        "response.custom_tool_call_input" => "custom_tool_call_input",
        other => panic!("unexpected event family {other}"),
    }
}

/// The terminal event's Response is what GET returns.
async fn assert_stored(h: &Harness, s: &Streamed) {
    let (status, fetched) = h.get(&format!("/v1/responses/{}", s.id())).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(&fetched, s.terminal());
}

fn repeat(kind: &'static str, n: usize) -> Vec<&'static str> {
    vec![kind; n]
}

/// `response.created`, `response.in_progress`, then `middle`, then `end`.
fn sequence(middle: Vec<Vec<&'static str>>, end: &'static str) -> Vec<&'static str> {
    let mut out = vec!["response.created", "response.in_progress"];
    out.extend(middle.into_iter().flatten());
    out.push(end);
    out
}

fn message_events(deltas: usize) -> Vec<Vec<&'static str>> {
    vec![
        vec!["response.output_item.added", "response.content_part.added"],
        repeat("response.output_text.delta", deltas),
        vec![
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ],
    ]
}

fn call_events(deltas: usize) -> Vec<Vec<&'static str>> {
    vec![
        vec!["response.output_item.added"],
        repeat("response.function_call_arguments.delta", deltas),
        vec![
            "response.function_call_arguments.done",
            "response.output_item.done",
        ],
    ]
}

/// How many fragments of `chars` characters `text` is streamed in.
fn fragments(text: &str, chars: usize) -> usize {
    text.chars().count().div_ceil(chars)
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object"}},
    ])
}

/// Reads an SSE body as it arrives, one complete frame at a time.
struct Incremental {
    response: reqwest::Response,
    buffer: String,
    frames: Vec<Value>,
    /// SSE comments seen so far.
    comments: usize,
}

impl Incremental {
    async fn start(h: &Harness, body: &Value) -> Incremental {
        let response = h
            .client
            .post(h.url("/v1/responses"))
            .json(body)
            .send()
            .await
            .expect("request reaches the host");
        assert_eq!(response.status(), 200);
        Incremental {
            response,
            buffer: String::new(),
            frames: Vec::new(),
            comments: 0,
        }
    }

    /// Reads until an event of type `kind` has arrived; `None` when the
    /// body ended first. A guard turns a stalled stream into a failure
    /// instead of a hang.
    async fn until(&mut self, kind: &str) -> Option<Value> {
        loop {
            if let Some(found) = self.frames.iter().find(|e| e["type"] == kind) {
                return Some(found.clone());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("stalled waiting for {kind}; got {:?}", self.names()))
                .expect("body reads");
            let chunk = chunk?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 chunk"));
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if frame.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("data line")
                    .to_owned();
                if data != "[DONE]" {
                    self.frames
                        .push(serde_json::from_str(&data).expect("JSON event"));
                }
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.frames
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_event_sequence() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("Hello streaming world").usage(9, 3));
    let s = stream(&h, &request("hi")).await;
    assert_eq!(s.names(), sequence(message_events(3), "response.completed"));
    let deltas: Vec<&str> = s
        .of_type("response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["Hello", " streaming", " world"]);
    let added = s.of_type("response.output_item.added")[0];
    assert_eq!(added["item"]["type"], "message");
    assert_eq!(added["item"]["role"], "assistant");
    assert_eq!(
        added["item"]["content"],
        json!([]),
        "parts come with content_part.added"
    );
    let part = &s.of_type("response.content_part.added")[0]["part"];
    assert_eq!(part["type"], "output_text");
    assert_eq!(part["text"], "");
    assert_eq!(part["annotations"], json!([]));

    let response = s.terminal();
    assert_eq!(response["status"], "completed");
    assert_eq!(output_text(response), "Hello streaming world");
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert!(response["output"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    assert_eq!(response["usage"]["input_tokens"], 9);
    assert_eq!(response["usage"]["output_tokens"], 3);
    assert_eq!(response["usage"]["total_tokens"], 12);
    assert!(response["completed_at"].is_i64());
    assert_stored(&h, &s).await;

    let sent = h.backend.last_request().expect("backend was called");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_then_text_event_sequence() {
    let h = Harness::start().await;
    for field in ["reasoning_content", "reasoning"] {
        h.backend.push(
            Reply::text("The answer.")
                .reasoning("Think it over")
                .reasoning_field(field),
        );
        let s = stream(&h, &request("why?")).await;
        let reasoning = vec![
            vec!["response.output_item.added", "response.content_part.added"],
            repeat("response.reasoning_text.delta", 3),
            vec![
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
            ],
        ];
        let mut middle = reasoning;
        middle.extend(message_events(2));
        assert_eq!(s.names(), sequence(middle, "response.completed"), "{field}");
        let response = s.terminal();
        let added = &s.of_type("response.output_item.added")[0]["item"];
        assert_eq!(added["type"], "reasoning");
        assert_eq!(added["content"], json!([]));
        let item = &response["output"][0];
        assert_eq!(item["type"], "reasoning");
        assert!(item["id"].as_str().unwrap().starts_with("rs_"));
        assert_eq!(item["content"][0]["type"], "reasoning_text");
        assert_eq!(item["content"][0]["text"], "Think it over");
        assert_eq!(response["output"][1]["type"], "message");
        assert_eq!(output_text(response), "The answer.");
        let done = s.of_type("response.reasoning_text.done")[0];
        assert_eq!(done["text"], "Think it over");
        assert_eq!(done["output_index"], 0);
        assert_eq!(
            s.of_type("response.output_text.delta")[0]["output_index"],
            1
        );
        assert_stored(&h, &s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tool_call_event_sequence() {
    let h = Harness::start().await;
    let arguments = r#"{"city":"Paris","unit":"celsius"}"#;
    h.backend.push(
        Reply::new()
            .tool_call("call_abc", "get_weather", arguments)
            .argument_fragment_chars(5),
    );
    let mut body = request("weather in Paris?");
    body["tools"] = weather_tools();
    let s = stream(&h, &body).await;
    let n = fragments(arguments, 5);
    assert_eq!(s.names(), sequence(call_events(n), "response.completed"));
    let added = &s.of_type("response.output_item.added")[0]["item"];
    assert_eq!(added["type"], "function_call");
    assert_eq!(added["name"], "get_weather");
    assert_eq!(added["call_id"], "call_abc");
    assert_eq!(added["arguments"], "");
    let done = s.of_type("response.function_call_arguments.done")[0];
    assert_eq!(done["arguments"], arguments);
    assert_eq!(done["name"], "get_weather");
    let call = &s.terminal()["output"][0];
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(call["call_id"], "call_abc");
    assert_eq!(call["arguments"], arguments);
    assert_eq!(call["status"], "completed");
    assert_eq!(s.terminal()["status"], "completed");
    assert_stored(&h, &s).await;
    let sent = h.backend.last_request().unwrap();
    assert_eq!(sent.body["tools"][0]["function"]["name"], "get_weather");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tool_calls_interleaved_by_index() {
    let h = Harness::start().await;
    let weather = r#"{"city":"Paris"}"#;
    let time = r#"{"tz":"Europe/Paris"}"#;
    h.backend.push(
        Reply::new()
            .tool_call("call_1", "get_weather", weather)
            .tool_call("call_2", "get_time", time)
            .interleave_tool_calls()
            .argument_fragment_chars(4),
    );
    let mut body = request("weather and time?");
    body["tools"] = weather_tools();
    let s = stream(&h, &body).await;
    let names = s.names();
    // Both items open before either closes; their deltas interleave.
    let added: Vec<usize> = positions(&names, "response.output_item.added");
    let done: Vec<usize> = positions(&names, "response.output_item.done");
    assert_eq!((added.len(), done.len()), (2, 2), "{names:?}");
    assert!(added[1] < done[0], "{names:?}");
    let deltas = s.of_type("response.function_call_arguments.delta");
    assert_eq!(deltas.len(), fragments(weather, 4) + fragments(time, 4));
    let indexes: Vec<u64> = deltas
        .iter()
        .map(|d| d["output_index"].as_u64().unwrap())
        .collect();
    assert!(
        indexes.windows(2).any(|w| w[0] != w[1]) && indexes[..3] != [0, 0, 0],
        "{indexes:?}"
    );
    assert_eq!(*names.last().unwrap(), "response.completed");
    let output = s.terminal()["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    let calls: Vec<(&str, &str, &str)> = output
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "function_call");
            (
                c["call_id"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
                c["arguments"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_1", "get_weather", weather),
            ("call_2", "get_time", time)
        ]
    );
    assert_ne!(output[0]["id"], output[1]["id"]);
    assert_stored(&h, &s).await;
}

fn positions(names: &[&str], kind: &str) -> Vec<usize> {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == kind)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_then_tool_call_keeps_both() {
    let h = Harness::start().await;
    let arguments = r#"{"city":"Oslo"}"#;
    h.backend.push(
        Reply::text("Let me check.")
            .tool_call("call_9", "get_weather", arguments)
            .argument_fragment_chars(100),
    );
    let mut body = request("weather in Oslo?");
    body["tools"] = weather_tools();
    let s = stream(&h, &body).await;
    let mut middle = message_events(3);
    middle.extend(call_events(1));
    assert_eq!(s.names(), sequence(middle, "response.completed"));
    let output = s.terminal()["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output_text(s.terminal()), "Let me check.");
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["arguments"], arguments);
    assert_eq!(
        s.of_type("response.function_call_arguments.delta")[0]["output_index"],
        1
    );
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_tool_call_streams_its_input() {
    let h = Harness::start().await;
    let patch = "*** Begin Patch\n*** End Patch";
    let arguments = json!({"input": patch}).to_string();
    h.backend
        .push(Reply::new().tool_call("call_p", "apply_patch", arguments));
    let mut body = request("patch it");
    body["tools"] = json!([{"type": "custom", "name": "apply_patch"}]);
    let s = stream(&h, &body).await;
    let names = s.names();
    assert!(
        !names.contains(&"response.function_call_arguments.delta"),
        "{names:?}"
    );
    assert!(
        names.contains(&"response.custom_tool_call_input.delta"),
        "{names:?}"
    );
    let done = s.of_type("response.custom_tool_call_input.done")[0];
    assert_eq!(done["input"], patch);
    let call = &s.terminal()["output"][0];
    assert_eq!(call["type"], "custom_tool_call");
    assert_eq!(call["call_id"], "call_p");
    assert_eq!(call["input"], patch);
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_tool_call_fragments_are_merged() {
    let h = Harness::start().await;
    // A raw stream: the id, the name and the arguments each arrive in
    // pieces, the two calls are interleaved, and empty deltas and a
    // usage-only chunk are mixed in.
    let chunks = [
        json!({"role": "assistant", "content": ""}),
        json!({"content": "Sure."}),
        json!({"tool_calls": [{"index": 0, "id": "call_", "type": "function", "function": {"name": "get_"}}]}),
        json!({"tool_calls": [{"index": 0, "id": "x1", "function": {"name": "weather"}}]}),
        json!({"tool_calls": [{"index": 1, "id": "call_y2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
        json!({}),
        json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        json!({"content": ""}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Rome\"}"}}]}),
    ];
    let mut sse = String::new();
    for delta in chunks {
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}});
    sse.push_str(&format!(
        "data: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
    ));
    h.backend.push(Reply::raw(200, "text/event-stream", sse));
    let mut body = request("weather in Rome and the time");
    body["tools"] = weather_tools();
    let s = stream(&h, &body).await;
    let output = s.terminal()["output"].as_array().unwrap();
    assert_eq!(output.len(), 3, "{output:?}");
    assert_eq!(output_text(s.terminal()), "Sure.");
    assert_eq!(output[1]["call_id"], "call_x1");
    assert_eq!(output[1]["name"], "get_weather");
    assert_eq!(output[1]["arguments"], r#"{"city":"Rome"}"#);
    assert_eq!(output[2]["call_id"], "call_y2");
    assert_eq!(output[2]["name"], "get_time");
    assert_eq!(output[2]["arguments"], "{}");
    assert_eq!(s.terminal()["usage"]["total_tokens"], 10);
    assert_eq!(s.terminal()["status"], "completed");
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_deltas_keepalives_and_usage_chunk() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("one two")
            .empty_deltas()
            .keepalive_comment()
            .finish_on_last_delta()
            .usage(2, 2),
    );
    let s = stream(&h, &request("count")).await;
    assert_eq!(s.names(), sequence(message_events(2), "response.completed"));
    assert_eq!(output_text(s.terminal()), "one two");
    assert_eq!(s.terminal()["usage"]["total_tokens"], 4);
    assert_stored(&h, &s).await;

    // A stream that ends after its finish reason without `[DONE]` is
    // complete too.
    h.backend.push(Reply::text("no done").without_done());
    let s = stream(&h, &request("again")).await;
    assert_eq!(s.terminal()["status"], "completed");
    assert_eq!(output_text(s.terminal()), "no done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_limit_is_incomplete() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("cut short").finish_reason("length"));
    let mut body = request("write a novel");
    body["max_output_tokens"] = json!(2);
    let s = stream(&h, &body).await;
    assert_eq!(
        s.names(),
        sequence(message_events(2), "response.incomplete")
    );
    let response = s.terminal();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_eq!(output_text(response), "cut short");
    assert_stored(&h, &s).await;
    assert_eq!(
        h.backend.last_request().unwrap().body["max_tokens"]
            .as_u64()
            .or(h.backend.last_request().unwrap().body["max_completion_tokens"].as_u64()),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_500_ends_in_response_failed() {
    let h = Harness::start().await;
    h.backend.push(Reply::error(500, "the model crashed"));
    let s = stream(&h, &request("hi")).await;
    assert_eq!(
        s.names(),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    let error = &s.terminal()["error"];
    assert_eq!(s.of_type("error")[0]["code"], "backend_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the model crashed"),
        "{error}"
    );
    assert_eq!(s.terminal()["output"], json!([]));
    assert_stored(&h, &s).await;

    // A stream has begun before the backend is called, so a client error
    // from the backend ends it too, with the backend's code and param.
    h.backend.push(
        Reply::error(400, "bad temperature")
            .param("temperature")
            .code("invalid_value"),
    );
    let s = stream(&h, &request("hi")).await;
    let error = s.of_type("error")[0];
    assert_eq!(error["code"], "invalid_value", "{error}");
    assert_eq!(error["param"], "temperature", "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("bad temperature"));
    assert_eq!(s.terminal()["status"], "failed");
    assert_stored(&h, &s).await;

    // A plain request still gets the backend's client error as its answer.
    h.backend
        .push(Reply::error(400, "bad temperature").param("temperature"));
    let mut plain = request("hi");
    plain["stream"] = json!(false);
    let (status, body) = h.post("/v1/responses", &plain).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "temperature", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_cut_mid_stream_fails_the_response() {
    let h = Harness::start().await;
    // Role chunk, "alpha", " beta", then the connection drops.
    h.backend
        .push(Reply::text("alpha beta gamma delta").cut_after(3));
    let s = stream(&h, &request("hi")).await;
    let mut middle = message_events(2);
    middle.push(vec!["error"]);
    assert_eq!(s.names(), sequence(middle, "response.failed"));
    let response = s.terminal();
    assert_eq!(s.of_type("error")[0]["code"], "backend_error");
    assert_eq!(output_text(response), "alpha beta");
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunk_fails_the_response() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("alpha beta gamma").malformed_after(2));
    let s = stream(&h, &request("hi")).await;
    let mut middle = message_events(1);
    middle.push(vec!["error"]);
    assert_eq!(s.names(), sequence(middle, "response.failed"));
    let error = &s.terminal()["error"];
    assert_eq!(s.of_type("error")[0]["code"], "backend_error");
    assert!(
        error["message"].as_str().unwrap().contains("malformed"),
        "{error}"
    );
    assert_eq!(output_text(s.terminal()), "alpha");
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stream_error_event_fails_the_response() {
    let h = Harness::start().await;
    // vLLM reports a generation failure as `data: {"error": ...}` followed
    // by `data: [DONE]`.
    h.backend
        .push(Reply::text("alpha beta gamma").error_after(2, "CUDA out of memory"));
    let s = stream(&h, &request("hi")).await;
    let mut middle = message_events(1);
    middle.push(vec!["error"]);
    assert_eq!(s.names(), sequence(middle, "response.failed"));
    let error = &s.terminal()["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("CUDA out of memory"),
        "{error}"
    );
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{error}"
    );
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_timeout_mid_stream_fails_the_response() {
    let h = Harness::with_variables(&[("backend_timeout_seconds", "1")]).await;
    let (reply, _gate) = Reply::text("alpha beta").pause_before(2);
    h.backend.push(reply);
    let s = stream(&h, &request("hi")).await;
    let names = s.names();
    assert_eq!(
        names[names.len() - 2..],
        ["error", "response.failed"],
        "{names:?}"
    );
    assert_eq!(s.of_type("error")[0]["code"], "backend_error");
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_go_out_before_the_backend_answers() {
    let h = Harness::start().await;
    // The backend holds its whole answer, head included.
    let (reply, gate) = Reply::text("late").json_despite_stream().pause_before(0);
    h.backend.push(reply);
    let mut reader = Incremental::start(&h, &request("go")).await;
    let in_progress = reader
        .until("response.in_progress")
        .await
        .expect("in_progress before the backend answers");
    assert_eq!(in_progress["response"]["status"], "in_progress");
    gate.reached().await;
    assert_eq!(reader.names(), ["response.created", "response.in_progress"]);
    gate.release();
    let completed = reader.until("response.completed").await.expect("completed");
    assert_eq!(output_text(&completed["response"]), "late");
}

/// A stream whose backend stays silent for 3.5 s, with keep-alives every
/// second: the comments arrive, and the rest is a well-formed stream.
async fn silent_stream(
    h: &Harness,
    reply: Reply,
    gate: scripted_backend::Gate,
) -> (usize, Streamed) {
    h.backend.push(reply);
    let release = tokio::spawn(async move {
        gate.reached().await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        gate.release();
    });
    let response = h
        .client
        .post(h.url("/v1/responses"))
        .json(&request("think first"))
        .send()
        .await
        .expect("request reaches the host");
    assert_eq!(response.status(), 200);
    let raw = response.text().await.expect("body");
    release.await.expect("released");
    let comments = raw.matches(": keep-alive\n\n").count();
    let events = check_wire(&raw.replace(": keep-alive\n\n", ""));
    check_items(&events);
    (comments, Streamed { events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_gets_keep_alive_comments() {
    let h = Harness::with_variables(&[("stream_keepalive_seconds", "1")]).await;
    // Silent before it answers at all (a model reading a long prompt)...
    let (reply, gate) = Reply::text("done thinking")
        .json_despite_stream()
        .pause_before(0);
    let (comments, s) = silent_stream(&h, reply, gate).await;
    assert!((2..=5).contains(&comments), "{comments} keep-alives");
    assert_eq!(output_text(s.terminal()), "done thinking");
    // ...and silent in the middle of a streamed answer.
    let (reply, gate) = Reply::text("alpha beta").pause_before(2);
    let (comments, s) = silent_stream(&h, reply, gate).await;
    assert!((2..=5).contains(&comments), "{comments} keep-alives");
    assert_eq!(output_text(s.terminal()), "alpha beta");
    assert_stored(&h, &s).await;

    // Off with 0: the same silence carries no comment.
    let h = h.restart_with(&[("stream_keepalive_seconds", "0")]).await;
    let (reply, gate) = Reply::text("quiet").pause_before(1);
    let (comments, _) = silent_stream(&h, reply, gate).await;
    assert_eq!(comments, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_the_client_before_the_backend_finishes() {
    let h = Harness::start().await;
    // Chunk 0 is the role, chunk 1 "first"; the backend holds before
    // " second" until released.
    let (reply, gate) = Reply::text("first second third").pause_before(2);
    h.backend.push(reply);
    let mut reader = Incremental::start(&h, &request("go")).await;
    let delta = reader
        .until("response.output_text.delta")
        .await
        .expect("a delta before the end");
    assert_eq!(delta["delta"], "first");
    // The gate is not released yet: the backend holds the rest of the
    // answer, whether or not it has marked the gate as reached.
    gate.reached().await;
    assert_eq!(
        reader
            .names()
            .iter()
            .filter(|n| n.ends_with(".delta"))
            .count(),
        1
    );
    gate.release();

    // The response is stored before its terminal event goes out.
    let completed = reader.until("response.completed").await.expect("completed");
    let id = completed["response"]["id"].as_str().unwrap();
    let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, completed["response"]);
    assert_eq!(output_text(&fetched), "first second third");
    assert!(reader.until("never").await.is_none(), "the body ends");
    let deltas = reader
        .names()
        .iter()
        .filter(|n| *n == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_keeps_an_incomplete_response() {
    let h = Harness::start().await;
    // Many chunks follow the gate, so the host sees the closed connection
    // while the component is still writing.
    let words: Vec<String> = (0..300).map(|n| format!("w{n}")).collect();
    let text = format!("one two {}", words.join(" "));
    let (reply, gate) = Reply::text(text).pause_before(3);
    h.backend.push(reply);
    let mut reader = Incremental::start(&h, &request("go")).await;
    let created = reader.until("response.created").await.expect("created");
    let id = created["response"]["id"].as_str().unwrap().to_owned();
    reader
        .until("response.output_text.delta")
        .await
        .expect("a delta");
    gate.reached().await;
    drop(reader);
    gate.release();

    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
        if status == 200 && fetched["status"] != "in_progress" {
            last = fetched;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "incomplete", "{last}");
    assert_eq!(last["id"], id.as_str());
    let text = output_text(&last);
    assert!(
        text.starts_with("one two"),
        "what was produced is kept: {last}"
    );
    assert_ne!(last["output"][0]["status"], "in_progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_false_streams_but_is_not_retrievable() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("ephemeral"));
    let mut body = request("hi");
    body["store"] = json!(false);
    let s = stream(&h, &body).await;
    assert_eq!(s.names(), sequence(message_events(1), "response.completed"));
    assert_eq!(s.terminal()["store"], false);
    let (status, _) = h.get(&format!("/v1/responses/{}", s.id())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_with_tool_round_trip() {
    let h = Harness::start().await;
    let arguments = r#"{"city":"Lima"}"#;
    h.backend
        .push(Reply::new().tool_call("call_l", "get_weather", arguments));
    let mut body = request("weather in Lima?");
    body["tools"] = weather_tools();
    let first = stream(&h, &body).await;
    assert_stored(&h, &first).await;
    assert_eq!(first.terminal()["output"][0]["type"], "function_call");

    h.backend.push(Reply::text("It is sunny in Lima."));
    let body = json!({
        "model": "m",
        "stream": true,
        "previous_response_id": first.id(),
        "tools": weather_tools(),
        "input": [{"type": "function_call_output", "call_id": "call_l", "output": "sunny"}],
    });
    let second = stream(&h, &body).await;
    assert_eq!(
        second.terminal()["previous_response_id"],
        first.id().as_str()
    );
    assert_eq!(output_text(second.terminal()), "It is sunny in Lima.");
    assert_stored(&h, &second).await;
    let messages = h.backend.last_request().unwrap().body["messages"].clone();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "weather in Lima?");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][0]["id"], "call_l");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        arguments
    );
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(messages[2]["tool_call_id"], "call_l");
    assert_eq!(messages[2]["content"], "sunny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_plain_responses_have_the_same_shape() {
    let h = Harness::start().await;
    let reply = || {
        Reply::text("Same either way.")
            .reasoning("Compare")
            .tool_call("call_s", "get_time", "{}")
            .usage(3, 5)
    };
    h.backend.push(reply());
    let mut body = request("compare");
    body["tools"] = weather_tools();
    let streamed = stream(&h, &body).await;
    h.backend.push(reply());
    body["stream"] = json!(false);
    let (status, plain) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{plain}");
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        for key in ["id", "created_at", "completed_at"] {
            v[key] = Value::Null;
        }
        for item in v["output"].as_array_mut().unwrap() {
            item["id"] = Value::Null;
        }
        v
    };
    assert_eq!(strip(streamed.terminal()), strip(&plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_completion_to_a_stream_request_gives_every_event() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::text("Let me check.")
            .reasoning("Weather, so call the tool")
            .tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#)
            .usage(9, 4)
            .json_despite_stream(),
    );
    let body = json!({"model": "m", "input": "weather?", "stream": true,
                      "tools": weather_tools()});
    let s = stream(&h, &body).await;
    let reasoning = vec![
        vec!["response.output_item.added", "response.content_part.added"],
        vec!["response.reasoning_text.delta"],
        vec![
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ],
    ];
    let mut middle = reasoning;
    middle.extend(message_events(1));
    middle.extend(call_events(1));
    assert_eq!(s.names(), sequence(middle, "response.completed"));
    let response = s.terminal();
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Weather, so call the tool"
    );
    assert_eq!(output_text(response), "Let me check.");
    assert_eq!(response["output"][2]["type"], "function_call");
    assert_eq!(response["output"][2]["call_id"], "call_1");
    assert_eq!(response["output"][2]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(response["usage"]["input_tokens"], 9);
    assert_eq!(response["usage"]["output_tokens"], 4);
    assert!(h.backend.last_request().unwrap().is_stream());
    assert_stored(&h, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_tags_stream_as_reasoning() {
    let h = Harness::with_variables(&[("backend_think_tags", "true")]).await;
    h.backend.push(Reply::chunks([
        "<thi",
        "nk>Two plus",
        " two</th",
        "ink>\n\n",
        "It is",
        " 4.",
    ]));
    let s = stream(&h, &request("2+2?")).await;
    let response = s.terminal();
    assert_eq!(response["output"][0]["type"], "reasoning");
    assert_eq!(response["output"][0]["content"][0]["text"], "Two plus two");
    assert_eq!(output_text(response), "It is 4.");
    let deltas: String = s
        .of_type("response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "It is 4.");
    assert_stored(&h, &s).await;

    // Without the setting, the tags are text like any other.
    let plain = Harness::start().await;
    plain
        .backend
        .push(Reply::chunks(["<think>hm</think>", "Hi"]));
    let s = stream(&plain, &request("hi")).await;
    assert_eq!(output_text(s.terminal()), "<think>hm</think>Hi");
}

/// A client that leaves while the backend has not answered yet: the
/// response is kept as `incomplete` (interrupted), whatever the backend
/// sends after, and nothing is written to the closed stream again.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_gone_before_the_backend_answers() {
    let h = Harness::start().await;
    let (reply, gate) = Reply::chunks(["one ", "two ", "three"]).pause_before(0);
    h.backend.push(reply);
    let mut stream = h
        .client
        .post(h.url("/v1/responses"))
        .json(&json!({"model": "m", "input": "x", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("response.in_progress") {
        let chunk = stream.chunk().await.unwrap().expect("more events");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let id = seen
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    gate.reached().await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.release();
    let mut last = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, response) = h.get(&format!("/v1/responses/{id}")).await;
        if status == 200 {
            last = response;
            break;
        }
    }
    assert_eq!(last["status"], "incomplete", "{last}");
    assert_eq!(last["incomplete_details"]["reason"], "interrupted");
}
