//! WebSocket mode: `GET /v1/responses` upgraded to a WebSocket, on the same
//! port and path as the HTTP API and with the same authentication (the
//! `Authorization: Bearer` key, checked by the component before the
//! upgrade is accepted).
//!
//! The client sends `response.create` messages (the body of
//! `POST /v1/responses` with `"type": "response.create"`, `stream` implied)
//! and receives the events an SSE stream would carry, one message each,
//! with the message's `stream_id` echoed on each when it gave one. Turns
//! run one at a time, in the order they arrive; each takes an instance of
//! the component, as an HTTP request does, through the typed export's
//! `create-stream`.
//!
//! The connection remembers its last response when it was not stored
//! (`store: false`): the component hands over what a continuation needs
//! after each turn, and the next turn passes it back, so chaining with
//! `previous_response_id` works without the store. A turn that fails, or
//! ends any other way than completed, leaves nothing remembered. What all
//! connections remember together is bounded ([`Memory`], a quarter of the
//! host's memory budget): past it a response is not remembered, and its
//! continuation is answered as after a reconnect. A
//! `previous_response_id` found neither there nor in the store is an
//! `error` event with code `previous_response_not_found`; resending the
//! full input recovers, as after a reconnect.
//!
//! Errors are `error` events, `{"type": "error", "status", "error": {type,
//! code, message, param}}`; the connection stays open. A connection lives
//! at most `max_age` (60 minutes by default, as OpenAI's): past it, once
//! the current turn is over, it gets a `websocket_connection_limit_reached`
//! error and is closed (1000). Shutting the server down closes connections
//! with 1001 after their current turn. While a turn is silent the server
//! pings every [`PING_EVERY`], so proxies keep the connection. A client
//! that goes away mid-turn stops it: the turn's resource is dropped before
//! its end, and the component keeps what was produced as `incomplete`, as
//! for a stream whose client went away. A subprotocol the client offers
//! (`Sec-WebSocket-Protocol`) is accepted: the first one.
//!
//! Each turn is a request of its own for the host's operations: a request
//! id (sent to the component, and so to the backend), an [`Exchange`] that
//! writes its log line and counts it in the metrics (method [`TURN_METHOD`],
//! route `/v1/responses`; status 200 once its events began, else its
//! error's), and, when traces are exported, a server span that is a child
//! of the upgrade request's `traceparent`, with the turn's backend and
//! key-value calls under it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use http::header::{AUTHORIZATION, UPGRADE};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wasmtime::component::ResourceAny;
use wasmtime::Store;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bindings::exports::edge::responses::responses::{Error as ApiError, Guest};
use crate::engine::Runtime;
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::request_id;
use crate::state::InstanceState;
use crate::trace::{self, Traces};

/// The path WebSocket mode is served on.
pub(crate) const PATH: &str = "/v1/responses";

/// How long a silent turn waits before the server pings the client.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(30);

/// The default for how long a connection may live.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// The method a WebSocket turn is logged and counted under.
pub(crate) const TURN_METHOD: &str = "WS";

/// What every connection shares: how long it may live, the signal that
/// the server is shutting down, where turns are recorded, and the memory
/// connections keep their last responses in.
#[derive(Clone)]
pub(crate) struct Sockets {
    pub(crate) max_age: Duration,
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) traces: Option<Arc<Traces>>,
    pub(crate) memory: Arc<Memory>,
}

/// The bytes all connections' remembered responses may take together.
#[derive(Debug)]
pub(crate) struct Memory {
    used: std::sync::atomic::AtomicU64,
    limit: u64,
}

impl Memory {
    pub(crate) fn new(limit: u64) -> Memory {
        Memory {
            used: std::sync::atomic::AtomicU64::new(0),
            limit,
        }
    }

    /// `remembered`, if its bytes fit beside everything else remembered.
    fn keep(self: &Arc<Self>, remembered: String) -> Option<Remembered> {
        use std::sync::atomic::Ordering;
        let bytes = remembered.len() as u64;
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if !fits {
            tracing::debug!(
                bytes,
                "a WebSocket connection's memory is full: not remembered"
            );
            return None;
        }
        Some(Remembered {
            json: remembered,
            memory: self.clone(),
        })
    }
}

/// A connection's last unstored response, as the component handed it
/// over, counted in [`Memory`] while it is kept.
struct Remembered {
    json: String,
    memory: Arc<Memory>,
}

impl Drop for Remembered {
    fn drop(&mut self) {
        let bytes = self.json.len() as u64;
        self.memory
            .used
            .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Whether `request` asks for WebSocket mode.
pub(crate) fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET
        && request.uri().path() == PATH
        && header(request.headers(), UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers an upgrade request: 101 and the connection served on a task of
/// its own, or the error the handshake or the key earned.
pub(crate) async fn accept(
    runtime: Arc<Runtime>,
    sockets: Sockets,
    mut request: Request<Incoming>,
) -> Response<HyperOutgoingBody> {
    let headers = request.headers();
    if header(headers, SEC_WEBSOCKET_VERSION) != Some("13") {
        let mut response = refusal(426, "A WebSocket upgrade must use version 13.");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = header(headers, SEC_WEBSOCKET_KEY) else {
        return refusal(400, "A WebSocket upgrade needs a Sec-WebSocket-Key header.");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let api_key = header(headers, AUTHORIZATION).and_then(bearer);
    let trace_context = trace_context(headers);
    let subprotocol = subprotocol(headers);
    match authenticate(&runtime, api_key.as_deref()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return api_error_response(&error),
        Err(err) => {
            tracing::error!("checking a WebSocket client's key failed: {err:#}");
            return refusal(
                500,
                "The server had an error while processing your request.",
            );
        }
    }
    let upgrading = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrading.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                Connection::new(runtime, sockets, api_key, trace_context)
                    .serve(ws)
                    .await;
            }
            Err(err) => tracing::debug!("WebSocket upgrade failed: {err}"),
        }
    });
    let mut response = Response::new(crate::http::full_body(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, http::HeaderValue::from_static("Upgrade"));
    if let Ok(value) = http::HeaderValue::from_str(&accept_key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(value) = subprotocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    response
}

/// The subprotocol to answer with: the first the client offers. The mode
/// has one protocol whatever it is called; some clients offer a name
/// (`responses_websockets=2026-02-06`) and fail the connection when the
/// server picks none.
fn subprotocol(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let offered = header(headers, SEC_WEBSOCKET_PROTOCOL)?;
    let first = offered.split(',').next()?.trim();
    (!first.is_empty())
        .then(|| http::HeaderValue::from_str(first).ok())
        .flatten()
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The W3C trace context of the upgrade request, which each turn's span
/// continues.
fn trace_context(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers.get(name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

/// The key of an `Authorization: Bearer` header.
fn bearer(value: &str) -> Option<String> {
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

/// The component's verdict on `api_key`, on an instance of its own.
async fn authenticate(
    runtime: &Runtime,
    api_key: Option<&str>,
) -> anyhow::Result<Result<(), ApiError>> {
    let Ok(_slot) = runtime.instance_slot().await else {
        return Ok(Err(crate::responses::overloaded()));
    };
    let (mut store, exports) = instantiate(runtime, None).await?;
    Ok(exports.call_authenticate(&mut store, api_key).await?)
}

/// A fresh instance, serving `exchange` if given, and its `responses`
/// export.
async fn instantiate(
    runtime: &Runtime,
    exchange: Option<Arc<Exchange>>,
) -> anyhow::Result<(Store<InstanceState>, Guest)> {
    let pre = runtime
        .responses()
        .context("the component does not export edge:responses/responses")?;
    let mut store = runtime.new_store(exchange);
    let instance = pre.instantiate_async(&mut store).await?;
    Ok((store, instance.edge_responses_responses().clone()))
}

/// An HTTP answer refusing the upgrade.
fn refusal(status: u16, message: &str) -> Response<HyperOutgoingBody> {
    api_error_response(&ApiError {
        status,
        message: message.to_owned(),
        type_: "invalid_request_error".to_owned(),
        param: None,
        code: None,
    })
}

fn api_error_response(error: &ApiError) -> Response<HyperOutgoingBody> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": error_fields(error)});
    crate::http::json_response(status, &body)
}

/// The fields of OpenAI's error object.
fn error_fields(error: &ApiError) -> Value {
    json!({
        "type": error.type_,
        "code": error.code,
        "message": error.message,
        "param": error.param,
    })
}

/// The `error` event for `error`. An unknown previous response is
/// `previous_response_not_found` (400), as OpenAI's WebSocket mode names it.
fn error_event(error: &ApiError, stream_id: Option<&str>) -> String {
    let missing_previous =
        error.status == 404 && error.param.as_deref() == Some("previous_response_id");
    let (status, fields) = match missing_previous {
        true => (
            400,
            json!({
                "type": "invalid_request_error",
                "code": "previous_response_not_found",
                "message": error.message,
                "param": "previous_response_id",
            }),
        ),
        false => (error.status, error_fields(error)),
    };
    let mut event = json!({"type": "error", "status": status, "error": fields});
    if let Some(id) = stream_id {
        event["stream_id"] = json!(id);
    }
    event.to_string()
}

fn invalid(message: impl Into<String>, param: Option<&str>, code: &str) -> ApiError {
    ApiError {
        status: 400,
        message: message.into(),
        type_: "invalid_request_error".to_owned(),
        param: param.map(str::to_owned),
        code: Some(code.to_owned()),
    }
}

fn server_error() -> ApiError {
    ApiError {
        status: 500,
        message: "The server had an error while processing your request.".to_owned(),
        type_: "server_error".to_owned(),
        param: None,
        code: None,
    }
}

/// A client message read as a `response.create`: its lane, if it named
/// one, and the create body, or why it is not one.
#[derive(Debug)]
struct CreateMessage {
    stream_id: Option<String>,
    body: Result<String, ApiError>,
}

impl CreateMessage {
    fn parse(text: &str) -> CreateMessage {
        let mut object: Map<String, Value> = match serde_json::from_str(text) {
            Ok(object) => object,
            Err(e) => {
                let message = format!("The message is not a JSON object: {e}.");
                return CreateMessage::refused(None, invalid(message, None, "invalid_json"));
            }
        };
        let stream_id = match object.remove("stream_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(_) => {
                let message = "'stream_id' must be a string.";
                let error = invalid(message, Some("stream_id"), "invalid_type");
                return CreateMessage::refused(None, error);
            }
        };
        let error = match object.remove("type") {
            Some(Value::String(kind)) if kind == "response.create" => None,
            Some(Value::String(kind)) => {
                let message = format!(
                    "Unsupported event type '{kind}': this server accepts 'response.create'."
                );
                Some(invalid(message, Some("type"), "invalid_value"))
            }
            _ => {
                let message = "Missing required parameter: 'type' ('response.create').";
                Some(invalid(message, Some("type"), "missing_required_parameter"))
            }
        };
        CreateMessage {
            stream_id,
            body: match error {
                Some(error) => Err(error),
                None => Ok(Value::Object(object).to_string()),
            },
        }
    }

    fn refused(stream_id: Option<String>, error: ApiError) -> CreateMessage {
        CreateMessage {
            stream_id,
            body: Err(error),
        }
    }
}

/// `event` with the message's lane added, when it named one.
fn in_lane(event: String, stream_id: Option<&str>) -> String {
    let Some(id) = stream_id else {
        return event;
    };
    match serde_json::from_str::<Map<String, Value>>(&event) {
        Ok(mut object) => {
            object.insert("stream_id".to_owned(), json!(id));
            Value::Object(object).to_string()
        }
        Err(_) => event,
    }
}

/// Why a connection stopped serving turns.
enum Closed {
    /// The client went away (or the socket failed).
    Gone,
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One client's connection and what it remembers.
struct Connection {
    runtime: Arc<Runtime>,
    sockets: Sockets,
    api_key: Option<String>,
    /// The upgrade request's `traceparent` and `tracestate`.
    trace_context: HeaderMap,
    /// The component's memory of the last response, when it was not stored.
    remembered: Option<Remembered>,
    closes_at: Instant,
}

impl Connection {
    fn new(
        runtime: Arc<Runtime>,
        sockets: Sockets,
        api_key: Option<String>,
        trace_context: HeaderMap,
    ) -> Self {
        let closes_at = Instant::now() + sockets.max_age;
        Connection {
            runtime,
            sockets,
            api_key,
            trace_context,
            remembered: None,
            closes_at,
        }
    }

    /// Serves turns until the client leaves, the connection's time is up,
    /// or the server shuts down.
    async fn serve(mut self, mut ws: Socket) {
        let mut stopping = self.sockets.stopping.clone();
        loop {
            let stop = async {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            let next = tokio::select! {
                message = ws.next() => Some(message),
                _ = tokio::time::sleep_until(self.closes_at) => None,
                _ = stop => {
                    let _ = close(&mut ws, CloseCode::Away, "The server is shutting down.").await;
                    return;
                }
            };
            let Some(message) = next else {
                let _ = self.time_up(&mut ws).await;
                return;
            };
            let served = match message {
                Some(Ok(Message::Text(text))) => self.turn(&mut ws, text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    let error = invalid(
                        "Binary messages are not supported: send JSON text.",
                        None,
                        "invalid_json",
                    );
                    send(&mut ws, error_event(&error, None)).await
                }
                Some(Ok(Message::Close(_))) => {
                    // Sends the close frame tungstenite queued in reply.
                    let _ = ws.flush().await;
                    return;
                }
                None | Some(Err(_)) => return,
                Some(Ok(_)) => Ok(()),
            };
            if served.is_err() {
                return;
            }
            if self.sockets.stopping.has_changed().is_err() || *self.sockets.stopping.borrow() {
                let _ = close(&mut ws, CloseCode::Away, "The server is shutting down.").await;
                return;
            }
            if Instant::now() >= self.closes_at {
                let _ = self.time_up(&mut ws).await;
                return;
            }
        }
    }

    /// The connection's time is up: say so, and close.
    async fn time_up(&self, ws: &mut Socket) -> Result<(), Closed> {
        let minutes = self.sockets.max_age.as_secs() / 60;
        let error = invalid(
            format!(
                "Responses WebSocket connection limit reached ({minutes} minutes). Create a new WebSocket connection to continue."
            ),
            None,
            "websocket_connection_limit_reached",
        );
        send(ws, error_event(&error, None)).await?;
        close(ws, CloseCode::Normal, "connection limit reached").await
    }

    /// One `response.create`: its events, or its error.
    async fn turn(&mut self, ws: &mut Socket, text: &str) -> Result<(), Closed> {
        let message = CreateMessage::parse(text);
        let lane = message.stream_id.as_deref();
        let body = match &message.body {
            Ok(body) => body,
            Err(error) => return send(ws, error_event(error, lane)).await,
        };
        let remembered = self.remembered.take();
        let exchange = Exchange::traced(
            self.sockets.metrics.clone(),
            request_id::generate(),
            http::Method::from_bytes(TURN_METHOD.as_bytes()).unwrap_or_default(),
            PATH,
            self.sockets.traces.as_deref(),
            &self.trace_context,
        );
        let trace = exchange.trace().cloned();
        let ran = trace::within(trace, self.run(ws, body, lane, remembered, &exchange)).await;
        match ran {
            Ok(Ok(remembered)) => {
                self.remembered = remembered.and_then(|json| self.sockets.memory.keep(json));
                Ok(())
            }
            Ok(Err(error)) => {
                exchange.respond(error.status);
                send(ws, error_event(&error, lane)).await
            }
            Err(Failure::Client(closed)) => Err(closed),
            Err(Failure::Host(err)) => {
                let request_id = exchange.request_id();
                tracing::error!(request_id, "a WebSocket turn failed: {err:#}");
                exchange.respond(500);
                send(ws, error_event(&server_error(), lane)).await
            }
        }
    }

    /// Runs a turn on a fresh instance, its events sent as they come: what
    /// the connection remembers after it, or the error it ended with
    /// before its first event.
    async fn run(
        &self,
        ws: &mut Socket,
        body: &str,
        lane: Option<&str>,
        remembered: Option<Remembered>,
        exchange: &Arc<Exchange>,
    ) -> Result<Result<Option<String>, ApiError>, Failure> {
        let Ok(_slot) = self.runtime.instance_slot().await else {
            return Ok(Err(crate::responses::overloaded()));
        };
        let (mut store, exports) = instantiate(&self.runtime, Some(exchange.clone())).await?;
        let created = exports
            .call_create_stream(
                &mut store,
                self.api_key.as_deref(),
                Some(exchange.request_id()),
                body,
                remembered.as_ref().map(|r| r.json.as_str()),
            )
            .await?;
        drop(remembered);
        let events = match created {
            Ok(events) => events,
            Err(error) => return Ok(Err(error)),
        };
        exchange.respond(200);
        let (mut first, mut token) = (true, true);
        while let Some(event) = next_event(ws, &mut store, &exports, events).await? {
            if std::mem::take(&mut first) {
                exchange.first_byte();
            }
            if token && crate::exchange::holds_delta(event.as_bytes()) {
                token = false;
                exchange.first_token();
            }
            if let Err(gone) = send(ws, in_lane(event, lane)).await {
                // The component keeps what the turn produced, as it does
                // for a stream whose client went away.
                events.resource_drop_async(&mut store).await?;
                return Err(gone.into());
            }
        }
        let stream = exports.event_stream();
        let remembered = stream.call_remembered(&mut store, events).await?;
        events.resource_drop_async(&mut store).await?;
        Ok(Ok(remembered))
    }
}

/// The turn's next event, pinging the client while the component is
/// silent.
async fn next_event(
    ws: &mut Socket,
    store: &mut Store<InstanceState>,
    exports: &Guest,
    events: ResourceAny,
) -> Result<Option<String>, Failure> {
    let stream = exports.event_stream();
    let next = stream.call_next(store, events);
    tokio::pin!(next);
    loop {
        tokio::select! {
            event = &mut next => return Ok(event?),
            _ = tokio::time::sleep(PING_EVERY) => {
                ws.send(Message::Ping(Default::default())).await.map_err(|_| Closed::Gone)?;
            }
        }
    }
}

/// Why a turn ended early.
enum Failure {
    /// The client went away.
    Client(Closed),
    /// The host or the component failed (a trap).
    Host(anyhow::Error),
}

impl From<Closed> for Failure {
    fn from(closed: Closed) -> Self {
        Failure::Client(closed)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Host(err)
    }
}

impl From<wasmtime::Error> for Failure {
    fn from(err: wasmtime::Error) -> Self {
        Failure::Host(err.into())
    }
}

async fn send(ws: &mut Socket, text: String) -> Result<(), Closed> {
    ws.send(Message::text(text)).await.map_err(|_| Closed::Gone)
}

async fn close(ws: &mut Socket, code: CloseCode, reason: &str) -> Result<(), Closed> {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    ws.close(Some(frame)).await.map_err(|_| Closed::Gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_message_loses_its_type_and_lane() {
        let message = CreateMessage::parse(
            r#"{"type":"response.create","stream_id":"a","model":"m","input":"hi"}"#,
        );
        assert_eq!(message.stream_id.as_deref(), Some("a"));
        let body: Value = serde_json::from_str(&message.body.expect("a create")).expect("json");
        assert_eq!(body, json!({"model": "m", "input": "hi"}));
    }

    #[test]
    fn other_messages_are_errors_naming_their_lane() {
        let message = CreateMessage::parse(r#"{"type":"response.cancel","stream_id":"b"}"#);
        assert_eq!(message.stream_id.as_deref(), Some("b"));
        let error = message.body.expect_err("not a create");
        assert_eq!(error.code.as_deref(), Some("invalid_value"));
        let error = CreateMessage::parse("[1]").body.expect_err("not an object");
        assert_eq!(error.code.as_deref(), Some("invalid_json"));
        let error = CreateMessage::parse(r#"{"model":"m"}"#)
            .body
            .expect_err("no type");
        assert_eq!(error.param.as_deref(), Some("type"));
    }

    #[test]
    fn an_unknown_previous_response_is_previous_response_not_found() {
        let error = ApiError {
            status: 404,
            message: "Previous response with id 'resp_x' not found.".to_owned(),
            type_: "invalid_request_error".to_owned(),
            param: Some("previous_response_id".to_owned()),
            code: Some("not_found".to_owned()),
        };
        let event: Value = serde_json::from_str(&error_event(&error, Some("s"))).expect("json");
        assert_eq!(event["type"], "error");
        assert_eq!(event["status"], 400);
        assert_eq!(event["error"]["code"], "previous_response_not_found");
        assert_eq!(event["error"]["param"], "previous_response_id");
        assert_eq!(event["stream_id"], "s");
    }

    #[test]
    fn what_connections_remember_is_bounded_together() {
        let memory = Arc::new(Memory::new(10));
        let first = memory.keep("12345".into()).expect("fits");
        assert!(memory.keep("123456".into()).is_none(), "11 bytes > 10");
        let second = memory.keep("12345".into()).expect("fits exactly");
        drop(first);
        let third = memory.keep("1234".into()).expect("room again");
        drop((second, third));
        assert_eq!(memory.used.load(std::sync::atomic::Ordering::Acquire), 0);
    }

    #[test]
    fn events_get_the_lane_of_their_message() {
        let event = in_lane(
            r#"{"type":"response.created","sequence_number":0}"#.into(),
            Some("x"),
        );
        let event: Value = serde_json::from_str(&event).expect("json");
        assert_eq!(event["stream_id"], "x");
        assert_eq!(event["sequence_number"], 0);
        assert_eq!(in_lane("{}".into(), None), "{}");
    }
}
