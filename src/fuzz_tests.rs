//! Property tests over what the server reads from outside: request bodies,
//! items, the backend's event streams and the records it stored earlier.
//! Whatever the bytes, reading them ends in a value or an error, never a
//! panic (a trap, in the component).
//!
//! Each property runs a bounded number of cases ([`CASES`]) so the whole
//! file stays within seconds under `cargo test`; `PROPTEST_CASES=N` runs
//! more.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use crate::api::items::Item;
use crate::api::limits;
use crate::api::request::{CreateRequest, Input};
use crate::api::response::Response;
use crate::chat::{Rendered, ToolMap};
use crate::store::{KeptChat, MemoryKv, ResponseStore, Turn};
use crate::stream::sse::{SseData, SseReader};

/// Cases per property, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 256;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // Failures are printed with their input; nothing is written to the
        // source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Any JSON value, a few levels deep, with the strings and numbers that
/// request fields compare against.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats exact in decimal: serde_json reads long ones to within a
        // unit in the last place, which is not what is tested here.
        (-4096i32..4096).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        word().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Strings the wire format gives meaning to.
fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "message",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
        "item_reference",
        "web_search_call",
        "user",
        "assistant",
        "system",
        "developer",
        "input_text",
        "output_text",
        "input_image",
        "input_file",
        "refusal",
        "summary_text",
        "completed",
        "function",
        "custom",
        "namespace",
        "auto",
        "a/b",
        "",
        "resp_1",
        "\u{0}",
    ])
    .prop_map(str::to_owned)
}

/// Keys of items, parts, tools and requests.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "type", "role", "content", "id", "call_id", "name", "arguments", "output",
            "status", "text", "summary", "input", "namespace", "image_url", "file_data",
            "tools", "parameters", "format", "phase", "encrypted_content", "annotations",
            "logprobs", "detail", "strict", "schema",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

/// An item-shaped object: a known `type` (or none) and fields of any shape.
fn item_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(word()),
        prop::collection::vec((field_name(), json_value()), 0..6),
    )
        .prop_map(|(kind, fields)| {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(kind) = kind {
                object.insert("type".into(), Value::from(kind));
            }
            Value::Object(object)
        })
}

/// A request body with the right top-level names and values of any shape.
fn request_like() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("model"),
        Just("input"),
        Just("instructions"),
        Just("previous_response_id"),
        Just("tools"),
        Just("tool_choice"),
        Just("text"),
        Just("reasoning"),
        Just("metadata"),
        Just("temperature"),
        Just("max_output_tokens"),
        Just("top_logprobs"),
        Just("include"),
        Just("store"),
        Just("stream"),
    ];
    (
        prop::collection::vec((field, json_value()), 0..5),
        prop::collection::vec(item_like(), 0..5),
    )
        .prop_map(|(fields, items)| {
            let mut body = json!({"model": "m", "input": items});
            for (name, value) in fields {
                body[name] = value;
            }
            body
        })
}

/// What a parsed request promises the rest of the server.
fn check_parsed(request: &CreateRequest) {
    assert!(request.model.as_deref().is_some_and(|m| !m.is_empty()));
    assert!(request
        .tools
        .as_ref()
        .is_none_or(|t| t.len() <= limits::MAX_TOOLS));
    if let Some(Input::Items(items)) = &request.input {
        assert!(items.len() <= limits::MAX_INPUT_ITEMS);
        for item in items {
            if let Some(id) = item.id() {
                assert!(limits::key_id("id", id).is_ok(), "{id:?}");
            }
            assert!(item
                .call_id()
                .is_none_or(|c| c.len() <= limits::MAX_CALL_ID_BYTES));
        }
    }
    if let Some(id) = &request.previous_response_id {
        assert!(limits::key_id("previous_response_id", id).is_ok());
    }
}

/// A parsed request through what follows parsing without a store or a
/// backend: tool translation, rendering, the Response it starts.
fn exercise(request: &CreateRequest) {
    let tools = request.tools.clone().unwrap_or_default();
    let _ = ToolMap::new(&tools, request.tool_choice.as_ref());
    let items = request
        .input
        .clone()
        .map(Input::into_items)
        .unwrap_or_default();
    for reasoning in [false, true] {
        let _ = Rendered::new(&items, reasoning);
    }
    let response = Response::start("resp_1".into(), 1, request);
    serde_json::to_vec(&response).expect("a Response always serializes");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_parsing_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = CreateRequest::parse(&body) {
            check_parsed(&request);
        }
    }

    #[test]
    fn request_parsing_takes_any_text(body in "[ -~\n{}\\[\\]\":,]{0,300}") {
        if let Ok(request) = CreateRequest::parse(body.as_bytes()) {
            check_parsed(&request);
        }
    }

    #[test]
    fn request_parsing_takes_wrong_shapes(body in request_like()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        match CreateRequest::parse(&bytes) {
            Ok(request) => {
                check_parsed(&request);
                exercise(&request);
            }
            Err(error) => {
                prop_assert_eq!(error.status, 400);
                prop_assert_eq!(error.kind.as_str(), "invalid_request_error");
            }
        }
    }

    #[test]
    fn items_decode_or_fail_cleanly(value in item_like()) {
        let text = serde_json::to_string(&value).unwrap();
        // From text (the request path) and from a tree (stored records
        // and buffered items): the same answer.
        let from_text = serde_json::from_str::<Item>(&text);
        let from_value = serde_json::from_value::<Item>(value);
        prop_assert_eq!(from_text.is_ok(), from_value.is_ok());
        if let (Ok(item), Ok(same)) = (from_text, from_value) {
            prop_assert_eq!(&item, &same);
            // What the server writes of an item, it reads back as the same item.
            let written = serde_json::to_string(&item).unwrap();
            let read = serde_json::from_str::<Item>(&written);
            prop_assert_eq!(read.as_ref().ok(), Some(&item), "{}", written);
        }
    }

    #[test]
    fn items_take_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<Item>(&body);
        let _ = serde_json::from_slice::<Vec<Item>>(&body);
    }

    #[test]
    fn sse_takes_any_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = sse_whole(&body);
        prop_assert_eq!(sse_in_pieces(&body, &cuts), whole);
    }

    #[test]
    fn sse_payloads_do_not_depend_on_splits(
        tokens in prop::collection::vec(sse_token(), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let body = tokens.concat().into_bytes();
        let whole = sse_whole(&body);
        prop_assert_eq!(sse_in_pieces(&body, &cuts), whole.clone());
        // One byte at a time, the worst split of all.
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        for byte in &body {
            out.extend(reader.push(std::slice::from_ref(byte)));
        }
        out.extend(reader.finish());
        prop_assert_eq!(out, whole);
    }

    #[test]
    fn stored_records_take_any_bytes(record in prop::collection::vec(any::<u8>(), 0..400)) {
        read_back(&stored(record));
    }

    #[test]
    fn stored_records_take_damage(
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        kept in any::<bool>(),
    ) {
        let (kv, key) = saved_turn(kept);
        let mut record = kv.values.borrow()[&key].clone();
        for (at, byte) in damage {
            let at = at.index(record.len());
            record[at] = byte;
        }
        if let Some(cut) = cut {
            record.truncate(cut.index(record.len()));
        }
        kv.values.borrow_mut().insert(key, record);
        read_back(&kv);
    }
}

/// Pieces the SSE reader reacts to.
fn sse_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("data:".to_owned()),
        Just("data: ".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("\n\n".to_owned()),
        Just(": comment".to_owned()),
        Just("event: x".to_owned()),
        Just("[DONE]".to_owned()),
        Just("é".to_owned()),
        Just("\u{1F600}".to_owned()),
        "[a-z{}\":,]{1,6}",
    ]
}

fn sse_whole(body: &[u8]) -> Vec<SseData> {
    let mut reader = SseReader::default();
    let mut out = reader.push(body);
    out.extend(reader.finish());
    out
}

/// `body` pushed in pieces cut at `cuts`.
fn sse_in_pieces(body: &[u8], cuts: &[prop::sample::Index]) -> Vec<SseData> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    cuts.push(0);
    cuts.push(body.len());
    cuts.sort_unstable();
    let mut reader = SseReader::default();
    let mut out = Vec::new();
    for pair in cuts.windows(2) {
        out.extend(reader.push(&body[pair[0]..pair[1]]));
    }
    out.extend(reader.finish());
    out
}

const TENANT: &str = "t";

/// A store whose response `resp_1` points at one slot holding `record`.
fn stored(record: Vec<u8>) -> MemoryKv {
    let kv = MemoryKv::default();
    let pointer = json!({"segments": [{"thread": "resp_1", "start": 0, "end": 1}],
                         "turn": {"thread": "resp_1", "start": 0, "end": 1}});
    let mut values = kv.values.borrow_mut();
    values.insert(
        format!("{TENANT}/resp/resp_1"),
        pointer.to_string().into_bytes(),
    );
    values.insert(format!("{TENANT}/log/resp_1/0"), record);
    drop(values);
    kv
}

/// A real turn saved as `resp_1`, with or without kept chat messages, and
/// the key of its one slot.
fn saved_turn(kept: bool) -> (MemoryKv, String) {
    let kv = MemoryKv::default();
    let body = json!({"model": "m", "input": [
        {"role": "user", "content": "hi", "id": "msg_in"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
    ]});
    let request = CreateRequest::parse(body.to_string().as_bytes()).unwrap();
    let mut response = Response::start("resp_1".into(), 1, &request);
    response.output.push(Item::user_text("echo"));
    let turn = Turn {
        response,
        input: request.input.unwrap().into_items(),
    };
    let chat = KeptChat {
        reasoning: false,
        messages: br#"[{"role":"user","content":"hi"}]"#.to_vec(),
    };
    let store = ResponseStore::new(&kv, TENANT);
    store
        .save(&turn, kept.then_some(&chat), None, None)
        .unwrap();
    drop(store);
    let key = format!("{TENANT}/log/resp_1/0");
    assert!(kv.values.borrow().contains_key(&key));
    (kv, key)
}

/// Every read of a stored response: errors are fine, panics are not.
fn read_back(kv: &MemoryKv) {
    let store = ResponseStore::new(kv, TENANT);
    let _ = store.turn("resp_1", 0);
    let _ = store.item("msg_in", 0);
    if let Ok(Some(conversation)) = store.conversation("resp_1", 0) {
        let _ = conversation.turns();
        let _ = conversation.items();
        let _ = conversation.kept_chat(false);
        let _ = conversation.kept_chat(true);
    }
    let _ = store.delete("resp_1", 0);
}
