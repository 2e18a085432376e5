//! Retention end to end: responses that expire are removed from the host's
//! SQLite file by the bounded sweep that runs after creates, while
//! conversations still in use keep their history.

mod common;

use std::time::Duration;

use common::Harness;
use scripted_backend::Reply;
use serde_json::{json, Value};

/// Rows of data (not the retention index) in the host's store.
fn data_rows(h: &Harness) -> Vec<String> {
    common::stored_values(h.server.store_path())
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| !key.starts_with("_retention/"))
        .collect()
}

async fn create(h: &Harness, body: Value) -> Value {
    h.backend.push(Reply::text("noted"));
    let (status, response) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_responses_leave_the_sqlite_file() {
    // Responses live 2 s and go 1 s after; every create sweeps.
    let h = Harness::with_variables(&[
        ("response_ttl_seconds", "2"),
        ("retention_grace_seconds", "1"),
        ("retention_sweep_every", "1"),
        ("admin_key", "adm1n"),
    ])
    .await;
    // A conversation of 20 turns (slots, a pack, item index entries), a
    // branch of it, and a streamed response.
    let mut previous: Option<String> = None;
    let mut ids = Vec::new();
    for turn in 0..20 {
        let body = json!({
            "model": "m",
            "input": format!("turn {turn}"),
            "previous_response_id": previous,
        });
        previous = Some(create(&h, body).await["id"].as_str().unwrap().to_owned());
        ids.extend(previous.clone());
    }
    let branch = json!({"model": "m", "input": "branch", "previous_response_id": ids[10]});
    create(&h, branch).await;
    h.backend.push(Reply::text("streamed"));
    let events = h
        .stream(&json!({"model": "m", "input": "s", "stream": true}))
        .await;
    let (_, completed) = events
        .iter()
        .find(|(name, _)| name == "response.completed")
        .expect("the stream completes");
    let streamed: Value = serde_json::from_str(completed).unwrap();
    let (status, _) = h
        .get(&format!(
            "/v1/responses/{}",
            streamed["response"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "the streamed response is stored");
    let stored = data_rows(&h).len();
    assert!(stored > 60, "{stored} rows");
    // The conversation, its branch and the streamed response.
    let status = retention_status(&h).await;
    assert_eq!(status["conversations"]["stored"], 3, "{status}");

    // Past expiry and grace, creates that store nothing run the sweep until
    // it has removed everything (at most 32 threads a step).
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    let mut left = stored;
    for _ in 0..10 {
        create(&h, json!({"model": "m", "input": "x", "store": false})).await;
        left = data_rows(&h).len();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "left: {:?}", data_rows(&h));
    let status = retention_status(&h).await;
    assert_eq!(status["conversations"]["stored"], 0, "{status}");
    assert_eq!(status["conversations"]["pending_removal"], 0, "{status}");
    let id = previous.unwrap();
    let (status, _) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    eprintln!("rows of data: {stored} before expiry, {left} after the sweep");
}

async fn retention_status(h: &Harness) -> Value {
    let request = h
        .client
        .get(h.url("/v1/admin/retention"))
        .bearer_auth("adm1n");
    let (status, body) = h.send(request).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_admin_key() {
    let h = Harness::start().await;
    let (status, body) = h.get("/v1/admin/retention").await;
    assert_eq!(status, 404, "off without admin_key: {body}");
    let h = h
        .restart_with(&[("admin_key", "adm1n"), ("api_keys", "k1")])
        .await;
    for key in [None, Some("k1"), Some("wrong")] {
        let mut request = h.client.post(h.url("/v1/admin/retention/sweep"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let (status, body) = h.send(request).await;
        assert_eq!(status, 401, "{key:?}: {body}");
    }
    let request = h
        .client
        .post(h.url("/v1/admin/retention/sweep"))
        .bearer_auth("adm1n");
    let (status, body) = h.send(request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "retention.sweep");
    assert_eq!(body["caught_up"], true);
    let (status, _) = h.get("/v1/admin/retention").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_in_use_keeps_its_history_past_its_first_turns() {
    let h = Harness::with_variables(&[
        ("response_ttl_seconds", "3"),
        ("retention_grace_seconds", "1"),
        ("retention_sweep_every", "1"),
    ])
    .await;
    let first = create(&h, json!({"model": "m", "input": "remember 42"})).await;
    let first = first["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let second = create(
        &h,
        json!({"model": "m", "input": "and 43", "previous_response_id": first}),
    )
    .await;
    let second = second["id"].as_str().unwrap().to_owned();
    // The first response expires, and is past its grace, while the second
    // lives: its turn stays as the second's history.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    create(&h, json!({"model": "m", "input": "x", "store": false})).await;
    let (status, _) = h.get(&format!("/v1/responses/{first}")).await;
    assert_eq!(status, 404, "the first response has expired");
    create(
        &h,
        json!({"model": "m", "input": "what did I say?", "previous_response_id": second}),
    )
    .await;
    let sent = h.backend.last_request().expect("the backend was called");
    let history = serde_json::to_string(sent.messages()).unwrap();
    assert!(history.contains("remember 42"), "{history}");
    assert!(history.contains("and 43"), "{history}");
}
