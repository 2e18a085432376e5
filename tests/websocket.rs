//! WebSocket mode (`GET /v1/responses` upgraded), over the host and the
//! built component, with a WebSocket client: the behaviours the Open
//! Responses compliance suite checks (sequential responses, continuation,
//! `store: false` chains and their recovery after a reconnect, a missing
//! previous response, a failed continuation forgetting the connection's
//! memory, compaction starting a new chain), plus authentication, error
//! events, lanes (`stream_id`) and the connection's age limit.

mod common;

use std::time::Duration;

use common::Harness;
use futures::{SinkExt, StreamExt};
use scripted_backend::Reply;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for one message.
const WAIT: Duration = Duration::from_secs(30);

async fn connect(h: &Harness, key: Option<&str>) -> Socket {
    try_connect(h, key).await.expect("the upgrade is accepted")
}

async fn try_connect(
    h: &Harness,
    key: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = h.url("/v1/responses").replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().expect("request");
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().expect("header");
        request.headers_mut().insert("authorization", value);
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The next message as JSON (pongs and pings skipped).
async fn receive(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("a message");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Whether `event` is the last of a turn: a terminal response event, or a
/// protocol error (one with an HTTP `status`).
fn ends_turn(event: &Value) -> bool {
    let kind = event["type"].as_str().unwrap_or_default();
    matches!(
        kind,
        "response.completed" | "response.failed" | "response.incomplete"
    ) || (kind == "error" && event.get("status").is_some())
}

/// Sends a `response.create` with `body` and returns the turn's events.
async fn turn(ws: &mut Socket, body: Value) -> Vec<Value> {
    let mut message = body;
    message["type"] = json!("response.create");
    ws.send(Message::text(message.to_string()))
        .await
        .expect("sent");
    let mut events = Vec::new();
    loop {
        let event = receive(ws).await;
        let last = ends_turn(&event);
        events.push(event);
        if last {
            return events;
        }
    }
}

/// The response of a turn's terminal event.
fn response(events: &[Value]) -> &Value {
    let last = events.last().expect("events");
    assert!(last["response"].is_object(), "no response: {last}");
    &last["response"]
}

/// The id of a completed turn's response.
fn completed(events: &[Value]) -> String {
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.completed", "{events:#?}");
    last["response"]["id"].as_str().expect("id").to_owned()
}

/// A connection whose first turn (`first`, answered `One.`) was not
/// stored: the connection, and that response's id.
async fn unstored_first_turn(h: &Harness) -> (Socket, String) {
    h.backend.push(Reply::text("One."));
    let mut ws = connect(h, None).await;
    let body = json!({"model": "m", "input": "first", "store": false});
    let first = completed(&turn(&mut ws, body).await);
    (ws, first)
}

/// The `(role, text)` of each message the backend got last.
fn sent(h: &Harness) -> Vec<(String, String)> {
    let request = h.backend.last_request().expect("a backend request");
    request
        .messages()
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(text) => text.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap_or_default().to_owned(), text)
        })
        .collect()
}

fn user(text: &str) -> (String, String) {
    ("user".to_owned(), text.to_owned())
}

fn assistant(text: &str) -> (String, String) {
    ("assistant".to_owned(), text.to_owned())
}

#[tokio::test]
async fn turns_run_in_order_each_a_whole_event_stream() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("One."));
    h.backend.push(Reply::text("Two."));
    let mut ws = connect(&h, None).await;
    for (input, answer) in [("first", "One."), ("second", "Two.")] {
        let events = turn(&mut ws, json!({"model": "m", "input": input})).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds[..2], ["response.created", "response.in_progress"]);
        assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"response.completed"));
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().expect("numbered"))
            .collect();
        assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
        let done = response(&events);
        assert_eq!(common::output_text(done), answer);
        assert_eq!(sent(&h).last(), Some(&user(input)));
        // Stored as over HTTP.
        let id = completed(&events);
        let (status, got) = h.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(common::output_text(&got), answer);
    }
}

#[tokio::test]
async fn a_continuation_replays_the_stored_response() {
    let h = Harness::start().await;
    h.backend.push(Reply::text("One."));
    let mut ws = connect(&h, None).await;
    let first = completed(&turn(&mut ws, json!({"model": "m", "input": "first"})).await);
    drop(ws);
    // Stored responses continue from any connection.
    let mut ws = connect(&h, None).await;
    let events = turn(
        &mut ws,
        json!({"model": "m", "input": "second", "previous_response_id": first}),
    )
    .await;
    completed(&events);
    assert_eq!(response(&events)["previous_response_id"], json!(first));
    assert_eq!(sent(&h), [user("first"), assistant("One."), user("second")]);
}

#[tokio::test]
async fn unstored_responses_chain_in_the_connections_memory() {
    let h = Harness::start().await;
    let (mut ws, first) = unstored_first_turn(&h).await;
    h.backend.push(Reply::text("Two."));
    let body =
        json!({"model": "m", "input": "second", "store": false, "previous_response_id": first});
    let events = turn(&mut ws, body).await;
    let second = completed(&events);
    assert_eq!(response(&events)["previous_response_id"], json!(first));
    assert_eq!(response(&events)["store"], json!(false));
    assert_eq!(sent(&h), [user("first"), assistant("One."), user("second")]);
    let body =
        json!({"model": "m", "input": "third", "store": false, "previous_response_id": second});
    completed(&turn(&mut ws, body).await);
    assert_eq!(
        sent(&h),
        [
            user("first"),
            assistant("One."),
            user("second"),
            assistant("Two."),
            user("third")
        ]
    );
    // Nothing was stored.
    for id in [&first, &second] {
        let (status, _) = h.get(&format!("/v1/responses/{id}")).await;
        assert_eq!(status, 404);
    }
}

/// The error event of a continuation of `id` the server does not have.
fn assert_previous_not_found(event: &Value, id: &str) {
    assert_eq!(event["type"], "error", "{event}");
    assert_eq!(event["status"], 400, "{event}");
    assert_eq!(
        event["error"]["code"], "previous_response_not_found",
        "{event}"
    );
    assert_eq!(event["error"]["param"], "previous_response_id", "{event}");
    assert_eq!(event["error"]["type"], "invalid_request_error", "{event}");
    let message = event["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(id), "{event}");
}

#[tokio::test]
async fn after_a_reconnect_an_unstored_response_is_gone_and_the_full_input_recovers() {
    let h = Harness::start().await;
    let (mut ws, first) = unstored_first_turn(&h).await;
    h.backend.push(Reply::text("Two."));
    ws.close(None).await.expect("closed");

    let mut ws = connect(&h, None).await;
    let body =
        json!({"model": "m", "input": "second", "store": false, "previous_response_id": first});
    let events = turn(&mut ws, body).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_previous_not_found(&events[0], &first);
    let calls = h.backend.requests().len();
    assert_eq!(calls, 1, "the failed continuation called no model");

    // The client resends everything, on the same connection.
    let input = json!([
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "second"}
    ]);
    let events = turn(
        &mut ws,
        json!({"model": "m", "input": input, "store": false}),
    )
    .await;
    completed(&events);
    assert_eq!(common::output_text(response(&events)), "Two.");
    assert_eq!(sent(&h), [user("first"), assistant("One."), user("second")]);
}

#[tokio::test]
async fn a_missing_previous_response_is_an_error_event_and_the_connection_goes_on() {
    let h = Harness::start().await;
    let mut ws = connect(&h, None).await;
    let body = json!({"model": "m", "input": "x", "previous_response_id": "resp_missing", "stream_id": "a"});
    let events = turn(&mut ws, body).await;
    assert_previous_not_found(&events[0], "resp_missing");
    assert_eq!(events[0]["stream_id"], "a");
    assert!(h.backend.requests().is_empty());
    completed(&turn(&mut ws, json!({"model": "m", "input": "x"})).await);
}

#[tokio::test]
async fn a_failed_continuation_forgets_the_remembered_response() {
    let h = Harness::start().await;
    let (mut ws, first) = unstored_first_turn(&h).await;
    h.backend.push(Reply::error(500, "the model fell over"));
    let body =
        json!({"model": "m", "input": "second", "store": false, "previous_response_id": first});
    let events = turn(&mut ws, body).await;
    assert_eq!(
        events.last().unwrap()["type"],
        "response.failed",
        "{events:#?}"
    );
    let body =
        json!({"model": "m", "input": "again", "store": false, "previous_response_id": first});
    let events = turn(&mut ws, body).await;
    assert_previous_not_found(&events[0], &first);
    assert_eq!(h.backend.requests().len(), 2);
}

#[tokio::test]
async fn a_refused_continuation_forgets_the_remembered_response_too() {
    let h = Harness::start().await;
    let (mut ws, first) = unstored_first_turn(&h).await;
    let body = json!({"model": "m", "input": "x", "store": false, "previous_response_id": first, "temperature": "hot"});
    let events = turn(&mut ws, body).await;
    assert_eq!(events[0]["status"], 400, "{events:#?}");
    assert_eq!(events[0]["error"]["type"], "invalid_request_error");
    let body =
        json!({"model": "m", "input": "again", "store": false, "previous_response_id": first});
    assert_previous_not_found(&turn(&mut ws, body).await[0], &first);
}

#[tokio::test]
async fn compaction_starts_a_new_chain() {
    const SUMMARY: &str = "They said first; the model said One.";
    let h = Harness::start().await;
    let (mut ws, _) = unstored_first_turn(&h).await;

    // Unstored, so the client compacts what it holds.
    h.backend.push(Reply::text(SUMMARY));
    let input = json!([
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "One."}
    ]);
    let (status, compacted) = h
        .post(
            "/v1/responses/compact",
            &json!({"model": "m", "input": input}),
        )
        .await;
    assert_eq!(status, 200, "{compacted}");
    let mut input = compacted["output"].as_array().expect("output").clone();
    assert!(input.iter().any(|item| item["type"] == "compaction"));
    input.push(json!({"role": "user", "content": "second"}));

    h.backend.push(Reply::text("Two."));
    let body = json!({"model": "m", "input": input, "store": false});
    let events = turn(&mut ws, body).await;
    let second = completed(&events);
    assert_eq!(response(&events)["previous_response_id"], Value::Null);
    let messages = sent(&h);
    assert!(
        messages.iter().any(|(_, text)| text.ends_with(SUMMARY)),
        "{messages:?}"
    );
    assert_eq!(messages.last(), Some(&user("second")));

    // The new chain goes on from the connection's memory, summary and all.
    let body =
        json!({"model": "m", "input": "third", "store": false, "previous_response_id": second});
    completed(&turn(&mut ws, body).await);
    let messages = sent(&h);
    assert!(
        messages.iter().any(|(_, text)| text.ends_with(SUMMARY)),
        "{messages:?}"
    );
    assert_eq!(
        messages[messages.len() - 3..],
        [user("second"), assistant("Two."), user("third")]
    );
}

#[tokio::test]
async fn the_upgrade_needs_the_key_http_needs() {
    let h = Harness::with_variables(&[("api_keys", "sk-one")]).await;
    match try_connect(&h, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(matches!(
        try_connect(&h, Some("sk-two")).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401
    ));
    let mut ws = connect(&h, Some("sk-one")).await;
    completed(&turn(&mut ws, json!({"model": "m", "input": "hi"})).await);
}

#[tokio::test]
async fn messages_other_than_a_create_are_error_events() {
    let h = Harness::start().await;
    let mut ws = connect(&h, None).await;
    ws.send(Message::text("not json")).await.expect("sent");
    let event = receive(&mut ws).await;
    assert_eq!(event["type"], "error");
    assert_eq!(event["status"], 400);
    assert_eq!(event["error"]["code"], "invalid_json");

    ws.send(Message::text(
        json!({"type": "response.cancel", "stream_id": "l"}).to_string(),
    ))
    .await
    .expect("sent");
    let event = receive(&mut ws).await;
    assert_eq!(event["error"]["code"], "invalid_value");
    assert_eq!(event["error"]["param"], "type");
    assert_eq!(event["stream_id"], "l");

    ws.send(Message::binary(b"{}".to_vec()))
        .await
        .expect("sent");
    assert_eq!(receive(&mut ws).await["status"], 400);

    let events = turn(
        &mut ws,
        json!({"model": "m", "input": "x", "background": true}),
    )
    .await;
    assert_eq!(events[0]["error"]["param"], "background", "{events:#?}");
    let events = turn(&mut ws, json!({"input": "x"})).await;
    assert_eq!(events[0]["error"]["param"], "model", "{events:#?}");
    assert!(h.backend.requests().is_empty());

    // `stream: false` changes nothing: the transport streams.
    let events = turn(
        &mut ws,
        json!({"model": "m", "input": "x", "stream": false}),
    )
    .await;
    assert!(events.len() > 3, "{events:#?}");
    completed(&events);
}

#[tokio::test]
async fn every_event_carries_the_lane_of_its_message() {
    let h = Harness::start().await;
    let mut ws = connect(&h, None).await;
    let events = turn(
        &mut ws,
        json!({"model": "m", "input": "x", "stream_id": "lane-1"}),
    )
    .await;
    completed(&events);
    assert!(
        events.iter().all(|e| e["stream_id"] == "lane-1"),
        "{events:#?}"
    );
    let events = turn(&mut ws, json!({"model": "m", "input": "x"})).await;
    assert!(events.iter().all(|e| e.get("stream_id").is_none()));
}

#[tokio::test]
async fn a_connection_past_its_age_is_told_and_closed() {
    let h = Harness::configured(&[], |config| {
        config.websocket_max_age = Duration::from_secs(2);
    })
    .await;
    let mut ws = connect(&h, None).await;
    completed(&turn(&mut ws, json!({"model": "m", "input": "x"})).await);
    let event = receive(&mut ws).await;
    assert_eq!(event["type"], "error");
    assert_eq!(
        event["error"]["code"], "websocket_connection_limit_reached",
        "{event}"
    );
    let closing = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time");
    match closing {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_warm_up_calls_no_model_and_later_turns_chain_from_it() {
    let h = Harness::start().await;
    let mut ws = connect(&h, None).await;
    let body = json!({"model": "m", "input": "context", "store": false, "generate": false});
    let events = turn(&mut ws, body).await;
    let warm = completed(&events);
    assert_eq!(response(&events)["output"], json!([]), "{events:#?}");
    assert!(h.backend.requests().is_empty());
    let body =
        json!({"model": "m", "input": "question", "store": false, "previous_response_id": warm});
    completed(&turn(&mut ws, body).await);
    assert_eq!(sent(&h), [user("context"), user("question")]);
    assert_eq!(h.backend.requests().len(), 1);
}

#[tokio::test]
async fn each_turn_is_a_request_in_the_hosts_metrics_with_its_own_id() {
    let h = Harness::configured(&[], |config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let mut ws = connect(&h, None).await;
    completed(&turn(&mut ws, json!({"model": "m", "input": "one"})).await);
    completed(&turn(&mut ws, json!({"model": "m", "input": "two"})).await);
    turn(
        &mut ws,
        json!({"model": "m", "input": "x", "previous_response_id": "resp_gone"}),
    )
    .await;
    // Each turn's id reached the backend, a different one each time.
    let ids: Vec<String> = h
        .backend
        .chat_requests()
        .iter()
        .map(|r| r.header("x-request-id").expect("a request id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert!(ids.iter().all(|id| id.starts_with("req_")), "{ids:?}");
    // The server answers the close once its last turn is over (and
    // recorded).
    ws.close(None).await.expect("closed");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    let text = h.server.metrics_text();
    let count = |status: &str| {
        let series = format!(
            "edge_responses_requests_total{{method=\"WS\",route=\"/v1/responses\",status=\"{status}\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .map(|n| n.trim().to_owned())
    };
    assert_eq!(count("200").as_deref(), Some("2"), "{text}");
    assert_eq!(count("404").as_deref(), Some("1"), "{text}");
}

#[tokio::test]
async fn shutting_down_closes_connections_as_going_away() {
    let h = Harness::start().await;
    let mut ws = connect(&h, None).await;
    completed(&turn(&mut ws, json!({"model": "m", "input": "x"})).await);
    let Harness { server, .. } = h;
    let (closing, ()) = tokio::join!(tokio::time::timeout(WAIT, ws.next()), server.shutdown());
    match closing.expect("in time") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_turn_leaves_an_incomplete_response() {
    let h = Harness::start().await;
    h.backend.push(
        Reply::chunks(["one ", "two ", "three ", "four ", "five"])
            .delay_between_chunks(Duration::from_millis(300)),
    );
    let mut ws = connect(&h, None).await;
    let create = json!({"type": "response.create", "model": "m", "input": "count"});
    ws.send(Message::text(create.to_string()))
        .await
        .expect("sent");
    let created = receive(&mut ws).await;
    assert_eq!(created["type"], "response.created");
    let id = created["response"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    loop {
        if receive(&mut ws).await["type"] == "response.output_text.delta" {
            break;
        }
    }
    drop(ws);
    // Kept as a stream's would be: incomplete, with what it had.
    let mut status = Value::Null;
    for _ in 0..100 {
        let (code, got) = h.get(&format!("/v1/responses/{id}")).await;
        if code == 200 {
            status = got["status"].clone();
            assert_eq!(status, "incomplete", "{got}");
            assert!(common::output_text(&got).starts_with("one"), "{got}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "incomplete", "the response was never saved");
}

#[tokio::test]
async fn a_subprotocol_the_client_offers_is_taken() {
    let h = Harness::start().await;
    let url = h.url("/v1/responses").replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().expect("request");
    let offered = "responses_websockets=2026-02-06".parse().expect("header");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offered);
    // The client fails the handshake unless the server picks one.
    let (mut ws, answer) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade");
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "responses_websockets=2026-02-06"
    );
    completed(&turn(&mut ws, json!({"model": "m", "input": "x"})).await);
}
