//! The foundation end to end: the built component, served by the host,
//! called over HTTP and through the typed export, against the scripted
//! backend.

mod common;

use common::{output_text, Harness};
use scripted_backend::Reply;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_calls_backend_stores_and_get_returns_it() {
    let h = Harness::start().await;
    h.backend
        .push(Reply::text("Hello from the backend").usage(7, 4));
    let (status, created) = h
        .post("/v1/responses", &json!({"model": "m", "input": "hi"}))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["object"], "response");
    assert_eq!(created["status"], "completed");
    assert!(created["id"].as_str().unwrap().starts_with("resp_"));
    assert!(created["created_at"].is_i64());
    assert_eq!(output_text(&created), "Hello from the backend");
    assert_eq!(created["usage"]["input_tokens"], 7);
    assert_eq!(created["usage"]["output_tokens"], 4);
    assert_eq!(created["usage"]["total_tokens"], 11);
    let message = &created["output"][0];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["status"], "completed");
    assert_eq!(message["content"][0]["annotations"], json!([]));

    // What the component sent to the backend.
    let sent = h.backend.last_request().expect("backend was called");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "m");
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);

    let id = created["id"].as_str().unwrap();
    let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_input_with_instructions() {
    let h = Harness::start().await;
    let request = json!({
        "model": "m",
        "instructions": "Answer in French.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}],
    });
    let (status, created) = h.post("/v1/responses", &request).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(output_text(&created), "Hello! You said: hello");
    assert_eq!(created["instructions"], "Answer in French.");
    let sent = h.backend.last_request().unwrap();
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "system", "content": "Answer in French."},
               {"role": "user", "content": "hello"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_survive_a_host_restart() {
    let h = Harness::start().await;
    let (_, created) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "remember me"}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let h = h.restart().await;
    let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched, created);
    // The store is a real SQLite file in the state directory.
    assert!(h.server.store_path().starts_with(h.state.path()));
    assert!(h.server.store_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_openai_shape() {
    let h = Harness::start().await;
    let check = |status: u16, body: &Value, expected: u16| {
        assert_eq!(status, expected, "{body}");
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["type"].is_string(), "{body}");
        assert!(
            error.get("param").is_some() && error.get("code").is_some(),
            "{body}"
        );
    };
    let (status, body) = h.get("/v1/nothing-here").await;
    check(status, &body, 404);
    let (status, body) = h.post_raw("/v1/responses", "{not json").await;
    check(status, &body, 400);
    let (status, body) = h.get("/v1/responses/resp_does_not_exist").await;
    check(status, &body, 404);
    let (status, body) = h.post("/v1/responses", &json!({"input": "no model"})).await;
    check(status, &body, 400);
    assert_eq!(body["error"]["param"], "model");
    // Nothing reached the backend.
    assert_eq!(h.backend.chat_requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_export_shares_the_implementation() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("typed answer"));
    let responses = h.server.responses();
    let created = responses
        .create(None, r#"{"model":"m","input":"via the export"}"#)
        .await
        .expect("no trap")
        .expect("created");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(output_text(&created), "typed answer");
    assert_eq!(
        h.backend.last_request().unwrap().body["messages"][0]["content"],
        "via the export"
    );
    // Stored by the export, readable over HTTP, and the other way round.
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!((status, &fetched), (200, &created));
    let typed = responses.get(None, id).await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(&typed).unwrap(), created);

    let missing = responses.get(None, "resp_nope").await.unwrap().unwrap_err();
    assert_eq!(missing.status, 404);
    let bad = responses.create(None, "{oops").await.unwrap().unwrap_err();
    assert_eq!(
        (bad.status, bad.type_.as_str()),
        (400, "invalid_request_error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_timeout_and_refused_connection_are_502() {
    let h = Harness::with_variables(&[("backend_timeout_seconds", "1")]).await;
    h.backend
        .push(Reply::hang(std::time::Duration::from_secs(5)));
    let (status, body) = h
        .post("/v1/responses", &json!({"model": "m", "input": "hi"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "backend_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("backend"),
        "{body}"
    );

    // A port nothing listens on: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/v1");
    let h = Harness::with_variables(&[("backend_url", url.as_str())]).await;
    let (status, body) = h
        .post("/v1/responses", &json!({"model": "m", "input": "hi"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{body}"
    );
}
