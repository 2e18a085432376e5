//! Conversation state over the built component: `previous_response_id`
//! replays, and the properties of the storage layout (constant round trips,
//! linear growth, bounded values, immediate visibility, `store: false`,
//! retention).

mod common;

use common::{output_text, stored_values, Harness};
use edge_responses_host::KvStats;
use scripted_backend::Reply;
use serde_json::{json, Value};

async fn create(h: &Harness, body: Value) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    response
}

/// A create request continuing `previous`, if any.
fn chain_request(input: impl Into<Value>, previous: Option<&str>) -> Value {
    let mut request = json!({"model": "m", "input": input.into()});
    if let Some(previous) = previous {
        request["previous_response_id"] = json!(previous);
    }
    request
}

/// The response can be neither read, listed nor continued.
async fn assert_gone(h: &Harness, id: &str) {
    let (status, body) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = h.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 404);
    let (status, body) = h.post("/v1/responses", &chain_request("x", Some(id))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id");
}

fn id(response: &Value) -> String {
    response["id"].as_str().expect("an id").to_owned()
}

fn messages(h: &Harness) -> Vec<Value> {
    h.backend
        .last_request()
        .expect("the backend was called")
        .messages()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_replays_input_output_and_tool_calls() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    h.backend.push(
        Reply::text("Let me check.")
            .tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#)
            .tool_call("call_2", "get_weather", r#"{"city":"Lyon"}"#),
    );
    let first = create(
        &h,
        json!({"model": "m", "instructions": "Use tools.",
                                  "input": "Weather in Paris and Lyon?", "tools": tools}),
    )
    .await;
    let kinds: Vec<&str> = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "function_call", "function_call"]);

    // The tool results, continuing the first response without instructions.
    h.backend
        .push(Reply::text("Sunny in Paris, rainy in Lyon."));
    let second = create(&h, json!({"model": "m", "previous_response_id": id(&first), "tools": tools,
                                   "input": [
                                       {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                                       {"type": "function_call_output", "call_id": "call_2",
                                        "output": [{"type": "input_text", "text": "rainy"}]}]}))
    .await;
    assert_eq!(second["previous_response_id"], id(&first));
    assert_eq!(
        second["instructions"],
        Value::Null,
        "instructions are not inherited"
    );
    let replay = json!([
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
    ]);
    assert_eq!(Value::Array(messages(&h)), replay);

    // A third turn with its own instructions sees all of it, plus the answer.
    let third = create(
        &h,
        json!({"model": "m", "previous_response_id": id(&second),
                                  "instructions": "Be brief.", "input": "Thanks!"}),
    )
    .await;
    let mut expected = vec![json!({"role": "system", "content": "Be brief."})];
    expected.extend(replay.as_array().unwrap().iter().cloned());
    expected.push(json!({"role": "assistant", "content": "Sunny in Paris, rainy in Lyon."}));
    expected.push(json!({"role": "user", "content": "Thanks!"}));
    assert_eq!(messages(&h), expected);
    assert_eq!(output_text(&third), "Hello! You said: Thanks!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_and_namespace_calls_replay_with_backend_names() {
    let h = Harness::start().await;
    let tools = json!([
        {"type": "custom", "name": "apply_patch"},
        {"type": "namespace", "name": "mcp__fs__", "tools": [{"type": "function", "name": "read"}]},
    ]);
    h.backend.push(
        Reply::new()
            .tool_call("call_p", "apply_patch", r#"{"input":"*** Begin Patch"}"#)
            .tool_call("call_r", "mcp__fs__read", r#"{"path":"x"}"#),
    );
    let first = create(&h, json!({"model": "m", "input": "edit", "tools": tools})).await;
    assert_eq!(first["output"][0]["type"], "custom_tool_call");
    assert_eq!(first["output"][1]["namespace"], "mcp__fs__");
    create(
        &h,
        json!({"model": "m", "previous_response_id": id(&first), "tools": tools, "input": [
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "applied"},
        {"type": "function_call_output", "call_id": "call_r", "output": "contents"}]}),
    )
    .await;
    let sent = messages(&h);
    assert_eq!(
        sent[1]["tool_calls"],
        json!([
            {"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}},
            {"id": "call_r", "type": "function", "function": {"name": "mcp__fs__read", "arguments": "{\"path\":\"x\"}"}},
        ])
    );
    assert_eq!(
        sent[2],
        json!({"role": "tool", "tool_call_id": "call_p", "content": "applied"})
    );
    assert_eq!(
        sent[3],
        json!({"role": "tool", "tool_call_id": "call_r", "content": "contents"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_of_any_depth_replay_every_turn() {
    let h = Harness::start().await;
    let mut previous: Option<String> = None;
    for turn in 0..15 {
        let request = chain_request(format!("turn {turn}"), previous.as_deref());
        let response = create(&h, request).await;
        let sent = messages(&h);
        assert_eq!(sent.len(), 2 * turn + 1, "turn {turn}");
        for earlier in 0..turn {
            assert_eq!(
                sent[2 * earlier],
                json!({"role": "user", "content": format!("turn {earlier}")})
            );
            assert_eq!(
                sent[2 * earlier + 1],
                json!({"role": "assistant", "content": format!("Hello! You said: turn {earlier}")})
            );
        }
        previous = Some(id(&response));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_see_only_their_own_history() {
    let h = Harness::start().await;
    let root = create(&h, chain_request("root", None)).await;
    let a = create(&h, chain_request("a", Some(&id(&root)))).await;
    let before = h.server.kv_stats();
    let b = create(&h, chain_request("b", Some(&id(&root)))).await;
    // The replay saw that `root` no longer ends its thread: the branch takes
    // a thread of its own without taking a slot from that one (its two
    // increments: the new thread's length, and its entry in the expiry
    // index).
    let branch = h.server.kv_stats().since(&before);
    assert_eq!((branch.increment, branch.total()), (2, 6), "{branch:?}");
    create(&h, chain_request("a2", Some(&id(&a)))).await;
    let users = |sent: Vec<Value>| -> Vec<String> {
        sent.iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(users(messages(&h)), ["root", "a", "a2"]);
    create(&h, chain_request("b2", Some(&id(&b)))).await;
    assert_eq!(users(messages(&h)), ["root", "b", "b2"]);
}

/// Key-value calls of one continuation of a chain of `depth` responses.
async fn continuation_cost(depth: usize) -> KvStats {
    let h = Harness::start().await;
    let mut previous: Option<String> = None;
    for turn in 0..depth {
        let request = chain_request(format!("message number {turn}"), previous.as_deref());
        previous = Some(id(&create(&h, request).await));
    }
    let before = h.server.kv_stats();
    create(&h, chain_request("one more", previous.as_deref())).await;
    let cost = h.server.kv_stats().since(&before);
    assert_eq!(messages(&h).len(), 2 * depth + 1);
    cost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuing_a_chain_costs_constant_round_trips() {
    let shallow = continuation_cost(1).await;
    let medium = continuation_cost(10).await;
    let deep = continuation_cost(30).await;
    assert_eq!(shallow, medium, "depth 1 vs 10");
    assert_eq!(shallow, deep, "depth 1 vs 30");
    // One pointer read and one batch read to replay; one increment, one
    // batch write and the pointer (written last) to save.
    assert_eq!((shallow.get, shallow.get_many), (1, 1), "{shallow:?}");
    assert_eq!(
        (shallow.increment, shallow.set_many, shallow.set),
        (1, 2, 0),
        "{shallow:?}"
    );
    assert_eq!(shallow.total(), 5, "{shallow:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_grow_linearly() {
    let h = Harness::start().await;
    let total = |h: &Harness| -> usize {
        stored_values(h.server.store_path())
            .iter()
            .map(|(_, size)| size)
            .sum()
    };
    let mut previous: Option<String> = None;
    let mut sizes = Vec::new();
    for turn in 1..=64 {
        let request = chain_request(format!("message number {turn:03}"), previous.as_deref());
        previous = Some(id(&create(&h, request).await));
        if [16, 32, 64].contains(&turn) {
            sizes.push(total(&h));
        }
    }
    // Each turn adds about what the turns before it did (its record, and its
    // share of a pack); storing the history in every record would make turns
    // 33 to 64 cost about twice as much each as turns 17 to 32.
    let per_turn_early = (sizes[1] - sizes[0]) / 16;
    let per_turn_late = (sizes[2] - sizes[1]) / 32;
    assert!(
        per_turn_late < per_turn_early * 5 / 4,
        "bytes per turn went from {per_turn_early} to {per_turn_late} ({sizes:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_is_split_into_bounded_values() {
    let h = Harness::start().await;
    // 700 KiB of text in one message.
    let big: String = (0..70_000)
        .map(|i| format!("w{:08} ", i))
        .collect::<String>();
    assert!(big.len() > 600 * 1024);
    h.backend.push(Reply::text("Got it."));
    let first = create(&h, chain_request(big.as_str(), None)).await;
    let values = stored_values(h.server.store_path());
    let (largest_key, largest) = values.iter().max_by_key(|(_, size)| *size).unwrap();
    assert!(
        *largest <= 256 * 1024,
        "{largest_key} holds {largest} bytes"
    );
    let stored: usize = values.iter().map(|(_, size)| size).sum();
    assert!(
        stored > big.len(),
        "the whole input is stored ({stored} bytes)"
    );

    // It reads back whole and continues.
    let id = id(&first);
    let (status, items) = h.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 200);
    assert_eq!(
        items["data"][0]["content"][0]["text"].as_str().unwrap(),
        big
    );
    create(&h, chain_request("summarize", Some(&id))).await;
    let sent = messages(&h);
    assert_eq!(sent[0]["content"].as_str().unwrap(), big);
    assert_eq!(sent[1]["content"], "Got it.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_and_continuable_as_soon_as_the_request_returns() {
    let h = Harness::start().await;
    let mut previous: Option<String> = None;
    for turn in 0..5 {
        let request = chain_request(format!("t{turn}"), previous.as_deref());
        let created = create(&h, request).await;
        let id = id(&created);
        // No waiting: the very next requests see it.
        let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
        assert_eq!((status, &fetched), (200, &created));
        let (status, _) = h.get(&format!("/v1/responses/{id}/input_items")).await;
        assert_eq!(status, 200);
        previous = Some(id);
    }
    // The same through the typed export.
    let responses = h.server.responses();
    let created = responses
        .create(
            None,
            &chain_request("typed", previous.as_deref()).to_string(),
        )
        .await
        .expect("no trap")
        .expect("created");
    let created: Value = serde_json::from_str(&created).unwrap();
    let (status, _) = h.get(&format!("/v1/responses/{}", id(&created))).await;
    assert_eq!(status, 200);
    assert_eq!(messages(&h).len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_false_writes_nothing_and_cannot_be_continued() {
    let h = Harness::start().await;
    let before = h.server.kv_stats();
    let response = create(&h, json!({"model": "m", "input": "secret", "store": false})).await;
    let delta = h.server.kv_stats().since(&before);
    assert_eq!(
        (
            delta.set,
            delta.set_many,
            delta.increment,
            delta.delete,
            delta.delete_many,
            delta.swap
        ),
        (0, 0, 0, 0, 0, 0),
        "{delta:?}"
    );
    assert_eq!(response["store"], false);
    assert_eq!(output_text(&response), "Hello! You said: secret");
    assert!(stored_values(h.server.store_path()).is_empty());

    let id = id(&response);
    assert_gone(&h, &id).await;

    // store:false may still continue a stored response, without saving itself.
    let stored = create(&h, chain_request("kept", None)).await;
    let before = h.server.kv_stats();
    create(
        &h,
        json!({"model": "m", "input": "ephemeral", "store": false,
                      "previous_response_id": stored["id"]}),
    )
    .await;
    let delta = h.server.kv_stats().since(&before);
    assert_eq!(delta.set + delta.set_many + delta.increment, 0, "{delta:?}");
    assert_eq!(messages(&h).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_previous_response_id_is_404() {
    let h = Harness::start().await;
    let (status, body) = h
        .post("/v1/responses", &chain_request("x", Some("resp_nope")))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(h.backend.chat_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_expire_after_their_ttl() {
    let h = Harness::with_variables(&[("response_ttl_seconds", "1")]).await;
    let response = create(&h, chain_request("short-lived", None)).await;
    let id = id(&response);
    let (status, _) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200);
    // Expiry counts whole seconds: a one-second TTL keeps a response for one
    // to two seconds, so two seconds later it is gone.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert_gone(&h, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_reasoning_reaches_a_backend_that_takes_it() {
    let h = Harness::with_variables(&[("backend_reasoning", "true")]).await;
    h.backend
        .push(Reply::text("Four.").reasoning("Two plus two."));
    let first = create(&h, chain_request("2+2?", None)).await;
    assert_eq!(first["output"][0]["type"], "reasoning");
    create(&h, chain_request("And 3+3?", Some(&id(&first)))).await;
    assert_eq!(
        messages(&h)[1],
        json!({"role": "assistant", "content": "Four.", "reasoning_content": "Two plus two."})
    );

    // Without backend_reasoning the reasoning stays out of the replay.
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("Four.").reasoning("Two plus two."));
    let first = create(&h, chain_request("2+2?", None)).await;
    create(&h, chain_request("And 3+3?", Some(&id(&first)))).await;
    assert_eq!(
        messages(&h)[1],
        json!({"role": "assistant", "content": "Four."})
    );
}

/// Turns keep their chat messages so a replay need not re-read their items;
/// where the kept messages would read differently from the items (a call
/// that joins the answer before it, another reasoning setting), the replay
/// renders the items instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_read_the_same_whether_kept_or_rendered() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("Let me look.").reasoning("Use the tool."));
    let first = create(&h, chain_request("Find it.", None)).await;
    // The client replays the call it made itself after the stored answer.
    let input = json!([
        {"type": "function_call", "call_id": "c1", "name": "find", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
    ]);
    let second = create(&h, chain_request(input, Some(&id(&first)))).await;
    let answer = json!({"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}"}}]});
    let tool = json!({"role": "tool", "content": "found", "tool_call_id": "c1"});
    assert_eq!(
        messages(&h),
        [
            json!({"role": "user", "content": "Find it."}),
            answer.clone(),
            tool.clone()
        ]
    );
    create(&h, chain_request("Thanks.", Some(&id(&second)))).await;
    let third = messages(&h);
    assert_eq!(third[1], answer);
    assert_eq!(third[2], tool);

    // Another reasoning setting: the earlier turns are rendered again.
    let h = h.restart_with(&[("backend_reasoning", "true")]).await;
    create(&h, chain_request("Bye.", Some(&id(&second)))).await;
    let mut with_reasoning = answer.clone();
    with_reasoning["reasoning_content"] = json!("Use the tool.");
    assert_eq!(messages(&h)[1], with_reasoning);
    assert_eq!(messages(&h).len(), 5, "{:?}", messages(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_response_in_a_chain() {
    let h = Harness::start().await;
    let first = create(&h, chain_request("one", None)).await;
    let second = create(&h, chain_request("two", Some(&id(&first)))).await;
    let (status, _) = h.delete(&format!("/v1/responses/{}", id(&first))).await;
    assert_eq!(status, 200);
    // The later response is still readable on its own...
    let (status, fetched) = h.get(&format!("/v1/responses/{}", id(&second))).await;
    assert_eq!((status, &fetched), (200, &second));
    // ...but its conversation lost a turn: continuing it is a clear 404.
    let (status, body) = h
        .post("/v1/responses", &chain_request("three", Some(&id(&second))))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id");
    // And the deleted response's items cannot be referenced any more.
    let item = first["output"][0]["id"].as_str().unwrap();
    let (status, _) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": [{"type": "item_reference", "id": item}]}),
        )
        .await;
    assert_eq!(status, 404);
}
