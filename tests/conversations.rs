//! The Conversations API end to end: conversation objects and their items
//! through the host, responses created in a conversation (plain and
//! streamed), racing responses, tenant isolation, and the key-value cost of
//! a response in a long conversation.

mod common;

use common::Harness;
use serde_json::{json, Value};

async fn post(h: &Harness, path: &str, body: Value) -> Value {
    let (status, answer) = h.post(path, &body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn get(h: &Harness, path: &str) -> Value {
    let (status, answer) = h.get(path).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": text})
}

/// The texts of a list of message items.
fn texts(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| {
            item["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The contents of the chat messages of the backend's last request.
fn sent(h: &Harness) -> Vec<String> {
    h.backend
        .last_request()
        .expect("the backend was called")
        .messages()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_and_their_items() {
    let h = Harness::start().await;
    let created = post(
        &h,
        "/v1/conversations",
        json!({"items": [user("one"), user("two")], "metadata": {"topic": "tests"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conv_"), "{created}");
    assert_eq!(created["object"], "conversation");
    assert!(created["created_at"].is_i64());
    assert_eq!(created["metadata"], json!({"topic": "tests"}));
    assert_eq!(get(&h, &format!("/v1/conversations/{id}")).await, created);

    // Metadata is replaced; null clears it.
    let updated = post(
        &h,
        &format!("/v1/conversations/{id}"),
        json!({"metadata": {"topic": "more"}}),
    )
    .await;
    assert_eq!(updated["metadata"], json!({"topic": "more"}));
    let (status, error) = h.post(&format!("/v1/conversations/{id}"), &json!({})).await;
    assert_eq!(
        (status, error["error"]["param"].clone()),
        (400, json!("metadata"))
    );

    // Items: added in order, listed newest first by default, paginated.
    let items = format!("/v1/conversations/{id}/items");
    let added = post(&h, &items, json!({"items": [user("three"), user("four")]})).await;
    assert_eq!(added["object"], "list");
    assert_eq!(texts(&added), ["three", "four"]);
    assert!(added["data"][0]["id"].as_str().unwrap().starts_with("msg_"));
    let list = get(&h, &items).await;
    assert_eq!(texts(&list), ["four", "three", "two", "one"]);
    assert_eq!(list["has_more"], false);
    let page = get(&h, &format!("{items}?order=asc&limit=3")).await;
    assert_eq!(texts(&page), ["one", "two", "three"]);
    assert_eq!(page["has_more"], true);
    let last = page["last_id"].as_str().unwrap();
    let rest = get(&h, &format!("{items}?order=asc&after={last}")).await;
    assert_eq!(texts(&rest), ["four"]);

    // One item, then deleted: the conversation comes back.
    let two = list["data"][2]["id"].as_str().unwrap().to_owned();
    let item = get(&h, &format!("{items}/{two}")).await;
    assert_eq!(item["content"][0]["text"], "two");
    assert_eq!(item["type"], "message");
    assert_eq!(item["status"], "completed");
    let (status, after_delete) = h.delete(&format!("{items}/{two}")).await;
    assert_eq!(status, 200, "{after_delete}");
    assert_eq!(after_delete["id"], id);
    assert_eq!(after_delete["object"], "conversation");
    assert_eq!(texts(&get(&h, &items).await), ["four", "three", "one"]);
    let (status, _) = h.get(&format!("{items}/{two}")).await;
    assert_eq!(status, 404);

    // Too many items at once, or none, or a malformed one: 400 naming it.
    let many: Vec<Value> = (0..21).map(|i| user(&i.to_string())).collect();
    for (body, param) in [
        (json!({"items": many}), "items"),
        (json!({"items": []}), "items"),
        (json!({}), "items"),
        (
            json!({"items": [{"role": "user", "content": 5}]}),
            "items[0]",
        ),
    ] {
        let (status, error) = h.post(&items, &body).await;
        assert_eq!(status, 400, "{error}");
        let named = error["error"]["param"].as_str().unwrap_or_default();
        assert!(named.starts_with(param), "{named} for {body}");
    }

    // Deleted: every route 404s.
    let (status, deleted) = h.delete(&format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        json!({"id": id, "object": "conversation.deleted", "deleted": true})
    );
    for path in [format!("/v1/conversations/{id}"), items.clone()] {
        let (status, error) = h.get(&path).await;
        assert_eq!(status, 404, "{path}: {error}");
    }
    let (status, _) = h.post(&items, &json!({"items": [user("x")]})).await;
    assert_eq!(status, 404);
    let (status, _) = h.delete(&format!("/v1/conversations/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = h.get("/v1/conversations/conv_unknown").await;
    assert_eq!(status, 404);
    let (status, _) = h
        .get(&format!("/v1/conversations/{}", "x".repeat(600)))
        .await;
    assert_eq!(status, 404);
    let (status, _) = h
        .client
        .put(h.url("/v1/conversations"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_in_a_conversation_see_and_extend_it() {
    let h = Harness::start().await;
    let conversation = post(
        &h,
        "/v1/conversations",
        json!({"items": [{"type": "message", "role": "developer", "content": "Be brief."}]}),
    )
    .await;
    let id = conversation["id"].as_str().unwrap().to_owned();

    let first = post(
        &h,
        "/v1/responses",
        json!({"model": "m", "input": "first question", "conversation": id}),
    )
    .await;
    assert_eq!(first["conversation"], json!({"id": id}));
    assert_eq!(sent(&h), ["Be brief.", "first question"]);
    // Its input and output were added.
    let items = get(&h, &format!("/v1/conversations/{id}/items?order=asc")).await;
    let roles: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["developer", "user", "assistant"]);
    assert_eq!(items["data"][2]["id"], first["output"][0]["id"]);

    // The object form, streamed: the items are there before it completes.
    let events = h
        .stream(
            &json!({"model": "m", "input": "second", "conversation": {"id": id}, "stream": true}),
        )
        .await;
    assert!(events.iter().any(|(name, _)| name == "response.completed"));
    assert_eq!(
        sent(&h),
        [
            "Be brief.",
            "first question",
            "Hello! You said: first question",
            "second"
        ]
    );
    let count = get(&h, &format!("/v1/conversations/{id}/items?limit=100")).await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 5);

    // A failed response adds nothing.
    h.backend
        .push(scripted_backend::Reply::error(500, "the model crashed"));
    let (status, _) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "lost", "conversation": id}),
        )
        .await;
    assert_eq!(status, 502);
    let count = get(&h, &format!("/v1/conversations/{id}/items?limit=100")).await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 5);

    // Errors: with previous_response_id, or an unknown conversation.
    let (status, error) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "conversation": id,
                    "previous_response_id": first["id"]}),
        )
        .await;
    assert_eq!(
        (status, error["error"]["param"].clone()),
        (400, json!("conversation"))
    );
    let (status, error) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "conversation": "conv_nope"}),
        )
        .await;
    assert_eq!(
        (status, error["error"]["param"].clone()),
        (404, json!("conversation"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_responses_all_land() {
    let h = Harness::start().await;
    let conversation = post(&h, "/v1/conversations", json!({})).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let requests = (0..10).map(|i| {
        let body = json!({"model": "m", "input": format!("racer {i}"), "conversation": id});
        let request = h.client.post(h.url("/v1/responses")).json(&body);
        async move { common::send(request).await }
    });
    for (status, answer) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{answer}");
    }
    let items = get(
        &h,
        &format!("/v1/conversations/{id}/items?limit=100&order=asc"),
    )
    .await;
    let items = items["data"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    // Each response's input is followed by its own output.
    for pair in items.chunks(2) {
        let question = pair[0]["content"][0]["text"].as_str().unwrap();
        let answer = pair[1]["content"][0]["text"].as_str().unwrap();
        assert_eq!(answer, format!("Hello! You said: {question}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_belong_to_their_tenant() {
    let h = Harness::with_variables(&[("api_keys", "a:key-a,b:key-b")]).await;
    let create = h
        .client
        .post(h.url("/v1/conversations"))
        .bearer_auth("key-a")
        .json(&json!({"items": [user("secret")]}));
    let (status, conversation) = h.send(create).await;
    assert_eq!(status, 200);
    let id = conversation["id"].as_str().unwrap();
    let (status, _) = h
        .send(
            h.client
                .get(h.url(&format!("/v1/conversations/{id}/items")))
                .bearer_auth("key-a"),
        )
        .await;
    assert_eq!(status, 200);
    for path in [
        format!("/v1/conversations/{id}"),
        format!("/v1/conversations/{id}/items"),
    ] {
        let (status, _) = h
            .send(h.client.get(h.url(&path)).bearer_auth("key-b"))
            .await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = h
        .send(h.client.get(h.url(&format!("/v1/conversations/{id}"))))
        .await;
    assert_eq!(status, 401);
    let response = h
        .client
        .post(h.url("/v1/responses"))
        .bearer_auth("key-b")
        .json(&json!({"model": "m", "input": "x", "conversation": id}));
    let (status, _) = h.send(response).await;
    assert_eq!(status, 404);
}

/// Key-value calls of one response in a conversation of `items` items.
async fn cost_in_conversation(items: usize) -> edge_responses_host::KvStats {
    let h = Harness::start().await;
    let conversation = post(&h, "/v1/conversations", json!({})).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    for batch in 0..items / 10 {
        let batch: Vec<Value> = (0..10).map(|i| user(&format!("{batch}.{i}"))).collect();
        post(
            &h,
            &format!("/v1/conversations/{id}/items"),
            json!({"items": batch}),
        )
        .await;
    }
    let before = h.server.kv_stats();
    post(
        &h,
        "/v1/responses",
        json!({"model": "m", "input": "and now?", "conversation": id}),
    )
    .await;
    assert_eq!(sent(&h).len(), items + 1);
    h.server.kv_stats().since(&before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_costs_the_same_in_a_short_and_a_long_conversation() {
    let short = cost_in_conversation(10).await;
    let long = cost_in_conversation(100).await;
    // Reading the conversation: its record and counters, then its log (a
    // single value is read with a `get`). Storing the response: two
    // increments (its thread, and the expiry index), its batch and its
    // pointer. Adding its items: one increment and one batch.
    for cost in [&short, &long] {
        assert_eq!(cost.get + cost.get_many, 2, "{cost}");
        assert_eq!(cost.increment, 3, "{cost}");
        assert_eq!(cost.set_many, 3, "{cost}");
        assert_eq!(cost.total(), 8, "{cost}");
    }
}
