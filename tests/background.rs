//! Background responses through the built component: a create answered at
//! once while the backend is still held, `GET` following it from `queued`
//! or `in_progress` to `completed`, a stream resumed after a cut with
//! `starting_after`, cancellation mid-stream and while the backend is
//! silent, a delete while it runs, expiry, keep-alives of a resumed
//! stream. A worker whose host is killed is in `host/tests/operations.rs`.

mod common;

use std::time::Duration;

use common::{output_text, parse_sse, Harness};
use scripted_backend::{Gate, Reply};
use serde_json::{json, Value};

/// Polls `GET` until the response is no longer running (at most 30 s).
async fn settled(h: &Harness, id: &str) -> Value {
    for _ in 0..300 {
        let (status, response) = h.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(status, 200, "{response}");
        if !matches!(response["status"].as_str(), Some("queued" | "in_progress")) {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} did not finish");
}

/// Creates a background response of `input`; its id.
async fn create(h: &Harness, input: &str) -> String {
    let body = json!({"model": "m", "input": input, "background": true});
    let (status, queued) = h.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{queued}");
    queued["id"].as_str().unwrap().to_owned()
}

/// A background response whose backend call is held at its gate.
async fn held(h: &Harness) -> (String, Gate) {
    let (reply, gate) = Reply::text("held back").pause_before(0);
    h.backend.push(reply);
    let id = create(h, "wait").await;
    gate.reached().await;
    (id, gate)
}

/// `POST /v1/responses/{id}/cancel`.
async fn cancel(h: &Harness, id: &str) -> (u16, Value) {
    h.post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await
}

/// The body of a `GET` as text: a resumed stream.
async fn read_text(h: &Harness, path: &str) -> String {
    let response = h.client.get(h.url(path)).send().await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_background_create_answers_at_once_and_finishes_later() {
    let h = Harness::start().await;
    let (reply, gate) = Reply::text("Done at last.").pause_before(0);
    h.backend.push(reply);
    let (status, queued) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "take your time", "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["background"], true);
    assert!(queued["output"].as_array().unwrap().is_empty());
    let id = queued["id"].as_str().unwrap().to_owned();

    // The backend is still held: the response runs.
    gate.reached().await;
    let (_, running) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(running["status"], "in_progress", "{running}");
    let (status, items) = h.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"][0]["text"], "take your time");
    let item_id = items["data"][0]["id"].clone();
    // It cannot be continued before it has finished.
    let next = json!({"model": "m", "input": "and?", "previous_response_id": id});
    let (status, error) = h.post("/v1/responses", &next).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("in progress"));
    gate.release();
    let done = settled(&h, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(output_text(&done), "Done at last.");
    assert_eq!(done["background"], true);
    let (_, items) = h.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(items["data"][0]["id"], item_id, "the same items once saved");

    // Cancelling a finished response answers it as it is.
    let (status, cancelled) = h
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "completed");

    // It continues like any stored response.
    h.backend.push(Reply::text("Next."));
    let (status, next) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "and?", "previous_response_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    let sent = h.backend.chat_requests().pop().unwrap();
    assert_eq!(sent.messages()[1]["content"], "Done at last.");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals() {
    let h = Harness::start().await;
    let (status, error) = h
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "background": true, "store": false}),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "background");

    let (_, plain) = h
        .post("/v1/responses", &json!({"model": "m", "input": "x"}))
        .await;
    let id = plain["id"].as_str().unwrap();
    let (status, error) = h
        .post(&format!("/v1/responses/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("background"));
    let (status, _) = h.post("/v1/responses/resp_nope/cancel", &json!({})).await;
    assert_eq!(status, 404);
    let (status, error) = h.get(&format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(
        status, 400,
        "a foreground response has no stored events: {error}"
    );
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let (status, _) = h.get("/v1/responses/resp_nope?stream=true").await;
    assert_eq!(status, 404);
}

/// The events of a whole stream: (type, data); comments skipped.
fn events(text: &str) -> Vec<(String, Value)> {
    parse_sse(text)
        .into_iter()
        .filter(|(_, data)| !data.is_empty() && data != "[DONE]")
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_resumes_where_it_left_off() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::chunks(["one ", "two ", "three ", "four ", "five"])
            .delay_between_chunks(Duration::from_millis(100)),
    );
    let body = json!({"model": "m", "input": "count", "background": true, "stream": true});
    let whole = h
        .client
        .post(h.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let whole = events(&whole);
    assert_eq!(whole.last().unwrap().0, "response.completed");
    // Queued first, as the create of a background response is answered.
    let names: Vec<&str> = whole.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "response.created",
            "response.queued",
            "response.in_progress"
        ]
    );
    assert_eq!(whole[0].1["response"]["status"], "queued");
    assert_eq!(whole[1].1["response"]["status"], "queued");
    assert_eq!(whole[2].1["response"]["status"], "in_progress");
    for (n, (_, data)) in whole.iter().enumerate() {
        assert_eq!(data["sequence_number"], n as u64);
    }
    let id = whole[0].1["response"]["id"].as_str().unwrap().to_owned();

    // Every cut point gives the same rest.
    for cut in [0usize, 3, 7, whole.len() - 2] {
        let n = whole[cut].1["sequence_number"].as_u64().unwrap();
        let text = read_text(
            &h,
            &format!("/v1/responses/{id}?stream=true&starting_after={n}"),
        )
        .await;
        assert_eq!(events(&text), whole[cut + 1..].to_vec(), "after {n}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    // Without starting_after: all of it.
    let text = read_text(&h, &format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(events(&text), whole);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumed_while_running_follows_it_live() {
    let h = Harness::start().await;
    let (reply, gate) = Reply::chunks(["early ", "late"]).pause_before(2);
    h.backend.push(reply);
    // The client reads the first events, then goes away.
    let mut first = h
        .client
        .post(h.url("/v1/responses"))
        .json(&json!({"model": "m", "input": "go", "background": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("response.output_text.delta") {
        let chunk = first.chunk().await.unwrap().expect("more events");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(first);
    gate.reached().await;
    let before = events(&seen);
    let id = before[0].1["response"]["id"].as_str().unwrap().to_owned();
    let last = before.last().unwrap().1["sequence_number"]
        .as_u64()
        .unwrap();

    // Resumed while the backend is still held; released while it follows.
    let resumed = h
        .client
        .get(h.url(&format!(
            "/v1/responses/{id}?stream=true&starting_after={last}"
        )))
        .send();
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        gate.release();
    };
    let (resumed, ()) = tokio::join!(resumed, release);
    let rest = events(&resumed.unwrap().text().await.unwrap());
    assert_eq!(rest[0].1["sequence_number"].as_u64().unwrap(), last + 1);
    assert_eq!(rest.last().unwrap().0, "response.completed");
    let done = &rest.last().unwrap().1["response"];
    assert_eq!(output_text(done), "early late");
    assert_eq!(settled(&h, &id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_it_at_its_next_event() {
    let h = Harness::start().await;
    let pieces: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    h.backend
        .push(Reply::chunks(pieces).delay_between_chunks(Duration::from_millis(100)));
    let id = create(&h, "talk").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, cancelled) = cancel(&h, &id).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The answer is the response as its worker saved it.
    let done = settled(&h, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(cancelled, done);
    let text = output_text(&done);
    assert!(text.starts_with("w0 w1 "), "{text}");
    assert!(!text.contains("w39"), "it stopped early: {text}");
    // Its stored stream ends too.
    let resumed = events(&read_text(&h, &format!("/v1/responses/{id}?stream=true")).await);
    assert_eq!(resumed.last().unwrap().1["response"]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_while_the_backend_is_silent() {
    let h = Harness::start().await;
    let (id, gate) = held(&h).await;
    let (status, cancelled) = cancel(&h, &id).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let (_, read) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(read, cancelled, "saved before the cancel answered");
    // Cancelling again answers the same.
    let (_, again) = cancel(&h, &id).await;
    assert_eq!(again, cancelled);
    gate.release();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(settled(&h, &id).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_a_listening_clients_stream() {
    let h = Harness::start().await;
    let pieces: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    h.backend
        .push(Reply::chunks(pieces).delay_between_chunks(Duration::from_millis(100)));
    let mut stream = h
        .client
        .post(h.url("/v1/responses"))
        .json(&json!({"model": "m", "input": "talk", "background": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("response.output_text.delta") {
        let chunk = stream.chunk().await.unwrap().expect("more events");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let id = events(&seen)[0].1["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, cancelled) = cancel(&h, &id).await;
    assert_eq!(status, 200, "{cancelled}");
    while let Some(chunk) = stream.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.ends_with("data: [DONE]\n\n"));
    let all = events(&seen);
    let (name, last) = all.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["status"], "cancelled");
    assert_eq!(last["response"], cancelled);
    assert!(!output_text(&cancelled).contains("w39"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_deleted_while_it_runs_stays_deleted() {
    let h = Harness::start().await;
    let (id, gate) = held(&h).await;
    // A client following its stream is told.
    let following = h
        .client
        .get(h.url(&format!("/v1/responses/{id}?stream=true")));
    let following = tokio::spawn(async move { following.send().await?.text().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, deleted) = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    let (status, _) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    let followed = following.await.unwrap().unwrap();
    assert!(followed.ends_with("data: [DONE]\n\n"), "{followed}");
    let (name, error) = events(&followed).pop().unwrap();
    assert_eq!(name, "error");
    assert_eq!(error["code"], "not_found", "{error}");
    gate.release();
    // Its worker stops and removes what it wrote: it never comes back.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for path in [
            format!("/v1/responses/{id}"),
            format!("/v1/responses/{id}/input_items"),
            format!("/v1/responses/{id}?stream=true"),
        ] {
            let (status, body) = h.get(&path).await;
            assert_eq!(status, 404, "{path}: {body}");
        }
    }
    let (status, _) = h.delete(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_background_response_is_gone() {
    let h = Harness::with_variables(&[("response_ttl_seconds", "1")]).await;
    h.backend.push(Reply::text("soon gone"));
    let id = create(&h, "x").await;
    assert_eq!(settled(&h, &id).await["status"], "completed");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, _) = h.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = h.get(&format!("/v1/responses/{id}?stream=true")).await;
    assert_eq!(status, 404);
    assert_eq!(cancel(&h, &id).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_stream_is_kept_alive_while_the_backend_is_silent() {
    let h = Harness::with_variables(&[("stream_keepalive_seconds", "1")]).await;
    let (id, gate) = held(&h).await;
    let path = format!("/v1/responses/{id}?stream=true");
    let release = async {
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        gate.release();
    };
    let (text, ()) = tokio::join!(read_text(&h, &path), release);
    let comments = text.matches(": keep-alive\n\n").count();
    assert!(
        (2..=5).contains(&comments),
        "{comments} keep-alives: {text}"
    );
    let all = events(&text);
    assert_eq!(all.last().unwrap().0, "response.completed");
    assert_eq!(output_text(&all.last().unwrap().1["response"]), "held back");
}
