//! Request ids through the built component: a valid `x-request-id` from the
//! client is kept, an invalid or missing one is replaced by a fresh id; the
//! id comes back in the response headers (plain and streamed) and goes to
//! the backend with the chat request, and error bodies name it.

mod common;

use common::Harness;
use serde_json::json;

async fn create(h: &Harness, request_id: Option<&str>, stream: bool) -> String {
    let mut request = h
        .client
        .post(h.url("/v1/responses"))
        .json(&json!({"model": "m", "input": "hi", "stream": stream}));
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("the host answers");
    assert_eq!(response.status(), 200);
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-request-id header")
        .to_owned();
    response.text().await.expect("a body");
    let sent = h.backend.chat_requests().pop().expect("a chat request");
    assert_eq!(sent.header("x-request-id"), Some(id.as_str()));
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_kept_made_and_passed_on() {
    let h = Harness::start().await;
    for stream in [false, true] {
        assert_eq!(
            create(&h, Some("client-7.a:b_c"), stream).await,
            "client-7.a:b_c"
        );
        let made = create(&h, None, stream).await;
        assert!(made.starts_with("req_") && made.len() > 10, "{made}");
        let replaced = create(&h, Some("not valid!"), stream).await;
        assert!(replaced.starts_with("req_"), "{replaced}");
        assert_ne!(made, replaced);
    }
    // Errors carry it too.
    let response = h
        .client
        .get(h.url("/v1/responses/resp_missing"))
        .header("x-request-id", "lookup-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "lookup-1");
    // ...and their bodies, beside OpenAI's envelope.
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["request_id"], "lookup-1", "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = h.post("/v1/responses", &json!({"input": "no model"})).await;
    assert_eq!(status, 400);
    let id = body["request_id"].as_str().expect("a request id");
    assert!(id.starts_with("req_"), "{body}");
}
