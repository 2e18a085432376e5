//! Access control over the built component: `api_keys`, per-tenant data,
//! key rotation, `tenant_secret`, and which key the backend gets.

mod common;

use common::Harness;
use serde_json::{json, Value};

const KEY_A: &str = "sk-alice-0123456789";
const KEY_B: &str = "sk-bob-9876543210";

async fn keyed() -> Harness {
    Harness::with_variables(&[("api_keys", &format!("{KEY_A},{KEY_B}"))]).await
}

/// `POST /v1/responses` with `body` as `key`.
async fn post_as(h: &Harness, key: Option<&str>, body: Value) -> (u16, Value) {
    call(h, key, "POST", "/v1/responses", Some(body)).await
}

/// Sends `method path` with `body` as `key`.
async fn call(
    h: &Harness,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = h.url(path);
    let mut request = match method {
        "POST" => h.client.post(url),
        "DELETE" => h.client.delete(url),
        _ => h.client.get(url),
    };
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    h.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_key_is_401_everywhere() {
    let h = keyed().await;
    let (status, created) = post_as(&h, Some(KEY_A), json!({"model": "m", "input": "hi"})).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    let routes = [
        (
            "POST",
            "/v1/responses".to_owned(),
            Some(json!({"model": "m", "input": "hi"})),
        ),
        ("GET", format!("/v1/responses/{id}"), None),
        ("GET", format!("/v1/responses/{id}/input_items"), None),
        ("DELETE", format!("/v1/responses/{id}"), None),
        ("GET", "/v1/models".to_owned(), None),
    ];
    let chat_before = h.backend.chat_requests().len();
    for (method, path, body) in &routes {
        for key in [None, Some("sk-wrong"), Some("")] {
            let (status, error) = call(&h, key, method, path, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {error}");
            assert_eq!(error["error"]["code"], "invalid_api_key");
            assert!(error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert!(error["error"].get("param").is_some());
        }
    }
    assert_eq!(
        h.backend.chat_requests().len(),
        chat_before,
        "nothing reached the backend"
    );
    // A non-bearer scheme is not a key either.
    let (status, _) = h
        .send(
            h.client
                .get(h.url(&format!("/v1/responses/{id}")))
                .basic_auth(KEY_A, None::<&str>),
        )
        .await;
    assert_eq!(status, 401);
    // And the response is still there for its owner.
    let (status, _) = call(&h, Some(KEY_A), "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_scoped_per_key() {
    let h = keyed().await;
    let (status, created) = post_as(
        &h,
        Some(KEY_A),
        json!({"model": "m", "input": "alice's secret"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap();
    let item_id = {
        let (_, items) = call(
            &h,
            Some(KEY_A),
            "GET",
            &format!("/v1/responses/{id}/input_items"),
            None,
        )
        .await;
        items["data"][0]["id"].as_str().unwrap().to_owned()
    };

    // Bob sees nothing of it: not found, exactly like an unknown id.
    let (status, body) = call(&h, Some(KEY_B), "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(
        &h,
        Some(KEY_B),
        "GET",
        &format!("/v1/responses/{id}/input_items"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &h,
        Some(KEY_B),
        "DELETE",
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = post_as(
        &h,
        Some(KEY_B),
        json!({"model": "m", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id");
    let (status, body) = post_as(
        &h,
        Some(KEY_B),
        json!({"model": "m", "input": [{"type": "item_reference", "id": item_id}]}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Bob's failed delete left it alone; Alice still reads, continues and deletes it.
    let (status, fetched) =
        call(&h, Some(KEY_A), "GET", &format!("/v1/responses/{id}"), None).await;
    assert_eq!((status, &fetched), (200, &created));
    let (status, body) = post_as(
        &h,
        Some(KEY_A),
        json!({"model": "m", "input": "more", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.backend.last_request().unwrap().messages()[0]["content"],
        "alice's secret"
    );
    let (status, _) = call(
        &h,
        Some(KEY_A),
        "DELETE",
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The typed export applies the same scoping.
    let responses = h.server.responses();
    let created = responses
        .create(Some(KEY_B), r#"{"model":"m","input":"bob's"}"#)
        .await
        .expect("no trap")
        .expect("created");
    let bob_id = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(responses.get(Some(KEY_B), &bob_id).await.unwrap().is_ok());
    assert_eq!(
        responses
            .get(Some(KEY_A), &bob_id)
            .await
            .unwrap()
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        responses
            .get(None, &bob_id)
            .await
            .unwrap()
            .unwrap_err()
            .status,
        401
    );

    // No stored key or value contains a client key.
    let store = rusqlite::Connection::open(h.server.store_path()).expect("the store opens");
    let mut rows = store
        .prepare("SELECT key, value FROM spin_key_value")
        .expect("Spin's table");
    let entries: Vec<(String, Vec<u8>)> = rows
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .map(|row| row.expect("a row"))
        .collect();
    assert!(!entries.is_empty());
    for (key, value) in entries {
        let value = String::from_utf8_lossy(&value);
        for client_key in [KEY_A, KEY_B] {
            assert!(!key.contains(client_key), "{key}");
            assert!(!value.contains(client_key), "{key}: {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_the_backend_key_never_the_clients() {
    let body = json!({"model": "m", "input": "hi"});

    // backend_api_key is what the backend sees.
    let h =
        Harness::with_variables(&[("api_keys", KEY_A), ("backend_api_key", "sk-backend")]).await;
    let (status, _) = post_as(&h, Some(KEY_A), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        Some("Bearer sk-backend")
    );
    let (status, _) = call(&h, Some(KEY_A), "GET", "/v1/models", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        Some("Bearer sk-backend")
    );

    // No backend key: the backend gets no key at all.
    let h = Harness::with_variables(&[("api_keys", KEY_A)]).await;
    post_as(&h, Some(KEY_A), body.clone()).await;
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        None
    );

    // An open service does not pass on whatever key a client sends.
    let h = Harness::start().await;
    let (status, _) = post_as(&h, Some("sk-client"), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        None
    );

    // Unless forward_client_key says so.
    let h = Harness::with_variables(&[("forward_client_key", "true")]).await;
    post_as(&h, Some("sk-client"), body.clone()).await;
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        Some("Bearer sk-client")
    );

    // A configured backend key still wins over forwarding.
    let h = Harness::with_variables(&[
        ("forward_client_key", "true"),
        ("backend_api_key", "sk-backend"),
    ])
    .await;
    post_as(&h, Some("sk-client"), body).await;
    assert_eq!(
        h.backend.last_request().unwrap().header("authorization"),
        Some("Bearer sk-backend")
    );
}

const TEAM_A_OLD: &str = "sk-team-a-old-0123456789";
const TEAM_A_NEW: &str = "sk-team-a-new-9876543210";
const TEAM_B: &str = "sk-team-b-5555555555";

/// Every stored key, as text.
fn stored_keys(h: &Harness) -> Vec<String> {
    common::stored_values(h.server.store_path())
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_a_tenants_data() {
    let h = Harness::with_variables(&[
        ("api_keys", &format!("team-a:{TEAM_A_OLD},team-b:{TEAM_B}")),
        ("tenant_secret", "s3cret"),
    ])
    .await;
    let (status, created) = post_as(
        &h,
        Some(TEAM_A_OLD),
        json!({"model": "m", "input": "team a's first words"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/responses/{id}");
    // Neither the team's name nor a key is in the store.
    for key in stored_keys(&h) {
        for secret in ["team-a", TEAM_A_OLD] {
            assert!(!key.contains(secret), "{key}");
        }
    }

    // Rotation, step 1: the new key joins the team; both keys work.
    let h = h
        .restart_with(&[(
            "api_keys",
            &format!("team-a:{TEAM_A_OLD},team-a:{TEAM_A_NEW},team-b:{TEAM_B}"),
        )])
        .await;
    for key in [TEAM_A_OLD, TEAM_A_NEW] {
        let (status, fetched) = call(&h, Some(key), "GET", &path, None).await;
        assert_eq!((status, &fetched), (200, &created), "{key}");
    }

    // Step 2: the old key is removed.
    let h = h
        .restart_with(&[("api_keys", &format!("team-a:{TEAM_A_NEW},team-b:{TEAM_B}"))])
        .await;
    let (status, fetched) = call(&h, Some(TEAM_A_NEW), "GET", &path, None).await;
    assert_eq!((status, &fetched), (200, &created));
    let (status, continued) = post_as(
        &h,
        Some(TEAM_A_NEW),
        json!({"model": "m", "input": "and more", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{continued}");
    // The continuation carried the history written under the old key.
    let messages = h.backend.last_request().unwrap().messages().to_vec();
    let contents: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        [
            "team a's first words",
            common::output_text(&created).as_str(),
            "and more"
        ],
        "{messages:?}"
    );
    assert_eq!(messages[1]["role"], "assistant");

    // The old key is gone; the other team still sees nothing.
    let (status, error) = call(&h, Some(TEAM_A_OLD), "GET", &path, None).await;
    assert_eq!(status, 401, "{error}");
    let (status, error) = call(&h, Some(TEAM_B), "GET", &path, None).await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = post_as(
        &h,
        Some(TEAM_B),
        json!({"model": "m", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_secret_decides_what_is_reachable() {
    let h = Harness::with_variables(&[
        ("api_keys", &format!("team-a:{TEAM_A_OLD},{KEY_A}")),
        ("tenant_secret", "s3cret"),
    ])
    .await;
    let (status, created) =
        post_as(&h, Some(TEAM_A_OLD), json!({"model": "m", "input": "hi"})).await;
    assert_eq!(status, 200, "{created}");
    let path = format!("/v1/responses/{}", created["id"].as_str().unwrap());

    // Another secret derives other tenants: the data is out of reach...
    let h = h.restart_with(&[("tenant_secret", "another")]).await;
    let (status, error) = call(&h, Some(TEAM_A_OLD), "GET", &path, None).await;
    assert_eq!(status, 404, "{error}");
    // ...and so does no secret at all...
    let h = h.restart_with(&[("tenant_secret", "")]).await;
    let (status, error) = call(&h, Some(TEAM_A_OLD), "GET", &path, None).await;
    assert_eq!(status, 404, "{error}");
    // ...until the secret is back.
    let h = h.restart_with(&[("tenant_secret", "s3cret")]).await;
    let (status, fetched) = call(&h, Some(TEAM_A_OLD), "GET", &path, None).await;
    assert_eq!((status, &fetched), (200, &created));

    // A bare key without a secret keeps the tenant it had before named
    // keys; setting a secret moves it.
    let h = h.restart_with(&[("tenant_secret", "")]).await;
    let (status, created) = post_as(&h, Some(KEY_A), json!({"model": "m", "input": "hi"})).await;
    assert_eq!(status, 200, "{created}");
    let path = format!("/v1/responses/{}", created["id"].as_str().unwrap());
    let h = h.restart().await;
    let (status, _) = call(&h, Some(KEY_A), "GET", &path, None).await;
    assert_eq!(status, 200);
    let h = h.restart_with(&[("tenant_secret", "s3cret")]).await;
    let (status, error) = call(&h, Some(KEY_A), "GET", &path, None).await;
    assert_eq!(status, 404, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_api_keys_entry_is_a_configuration_error() {
    let h = Harness::with_variables(&[("api_keys", &format!("team/a:{TEAM_A_OLD}"))]).await;
    let (status, error) = post_as(&h, Some(TEAM_A_OLD), json!({"model": "m", "input": "hi"})).await;
    assert_eq!(status, 500, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("api_keys"), "{message}");
    assert!(!message.contains(TEAM_A_OLD), "{message}");
    assert!(h.backend.chat_requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_service_needs_no_key() {
    let h = Harness::start().await;
    let (status, created) = post_as(&h, None, json!({"model": "m", "input": "hi"})).await;
    assert_eq!(status, 200, "{created}");
    // Any key, or none, reaches the same open store.
    let id = created["id"].as_str().unwrap();
    let (status, _) = call(
        &h,
        Some("whatever"),
        "GET",
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}
