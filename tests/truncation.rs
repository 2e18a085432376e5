//! `truncation: "auto"` end to end: with a context window configured for
//! the model, the oldest turns of a long conversation are left out of the
//! chat request (a tool call never without its output), the request's own
//! input always goes, and `truncation: "disabled"` sends everything.

mod common;

use common::Harness;
use scripted_backend::Reply;
use serde_json::{json, Value};

async fn create(h: &Harness, body: Value) -> Value {
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    response
}

/// The chat messages of the backend's last request.
fn sent(h: &Harness) -> Vec<Value> {
    h.backend
        .last_request()
        .expect("a request")
        .messages()
        .to_vec()
}

fn user_texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_truncation_drops_the_oldest_turns_to_fit_the_window() {
    // 400 tokens: about 1,200 bytes of JSON at three bytes a token.
    let h = Harness::with_variables(&[("model_context_windows", "small-*=400, *=100000")]).await;
    let mut previous: Option<String> = None;
    for turn in 0..8 {
        let text = format!("turn {turn} {}", "words ".repeat(25));
        let body = json!({"model": "small-model", "input": text, "previous_response_id": previous});
        previous = Some(create(&h, body).await["id"].as_str().unwrap().to_owned());
    }
    let next = |truncation: &str, model: &str| {
        json!({"model": model, "input": "the latest question",
               "previous_response_id": previous, "truncation": truncation})
    };

    create(&h, next("auto", "small-model")).await;
    let users = user_texts(&sent(&h));
    assert_eq!(users.last().unwrap(), "the latest question");
    assert!(users.len() < 9, "some turns left out: {}", users.len());
    assert!(users.len() >= 2, "the newest turns stay: {users:?}");
    let request = h.backend.last_request().unwrap().raw_text();
    assert!(request.len() < 1_600, "{} bytes", request.len());
    // The turns kept are the newest, in order.
    let first_kept: usize = users[0]["turn ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(users.len() - 1, 8 - first_kept, "{users:?}");

    // Disabled, or a model with a larger window: everything goes.
    create(&h, next("disabled", "small-model")).await;
    assert_eq!(user_texts(&sent(&h)).len(), 9);
    create(&h, next("auto", "large-model")).await;
    assert_eq!(user_texts(&sent(&h)).len(), 9);

    // What is stored is the whole conversation: a later turn with room sees
    // it all.
    let (status, items) = h
        .get(&format!(
            "/v1/responses/{}/input_items",
            previous.as_deref().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{items}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_is_never_sent_without_its_output() {
    let h = Harness::with_variables(&[("model_context_windows", "m=300")]).await;
    h.backend
        .push(Reply::new().tool_call("call_1", "lookup", r#"{"q":"x"}"#));
    let first = create(
        &h,
        json!({"model": "m", "input": format!("start {}", "x".repeat(300)),
               "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}),
    )
    .await;
    let with_output = create(
        &h,
        json!({"model": "m", "previous_response_id": first["id"], "input": [
            {"type": "function_call_output", "call_id": "call_1", "output": "y".repeat(200)}
        ]}),
    )
    .await;
    create(
        &h,
        json!({"model": "m", "previous_response_id": with_output["id"],
               "input": "and then?", "truncation": "auto"}),
    )
    .await;
    let messages = sent(&h);
    let calls = messages
        .iter()
        .filter(|m| m.get("tool_calls").is_some())
        .count();
    let outputs = messages.iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(calls, outputs, "{messages:?}");
    assert_eq!(user_texts(&messages).last().unwrap(), "and then?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_object_is_truncated_too() {
    let h = Harness::with_variables(&[("model_context_windows", "m=300")]).await;
    let items: Vec<Value> = (0..10)
        .map(|i| json!({"role": "user", "content": format!("note {i} {}", "z".repeat(80))}))
        .collect();
    let (status, conversation) = h.post("/v1/conversations", &json!({"items": items})).await;
    assert_eq!(status, 200);
    create(
        &h,
        json!({"model": "m", "conversation": conversation["id"], "input": "sum up", "truncation": "auto"}),
    )
    .await;
    let users = user_texts(&sent(&h));
    assert!(users.len() < 11, "{}", users.len());
    assert_eq!(users.last().unwrap(), "sum up");
    assert!(users[users.len() - 2].starts_with("note 9"), "{users:?}");
}
