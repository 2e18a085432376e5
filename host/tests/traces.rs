//! OpenTelemetry traces, end to end against the built component: a server
//! exporting to an OTLP collector stand-in on loopback (a small HTTP server
//! here that decodes `POST /v1/traces`, protobuf or JSON), the scripted
//! backend behind it. Spans are read after `Server::shutdown`, which waits
//! for the requests' spans and exports them.
//!
//! Build the component first:
//! `cargo build -p edge-responses --target wasm32-wasip2 --profile component`.

mod common;

use common::component;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use edge_responses_host::{Config, OtlpProtocol, Server, TraceExport};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use scripted_backend::Backend;
use tokio::net::TcpListener;

/// Longest wait for an answer, or for a server to shut down.
const PATIENCE: Duration = Duration::from_secs(60);

/// The trace and span of the client in `traceparent`.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

const SERVICE: &str = "edge-responses-test";

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: Option<String>,
    span: Span,
}

/// The OTLP collector stand-in: `POST /v1/traces` in protobuf or JSON,
/// every span kept.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = service_fn(move |request| {
                    let kept = kept.clone();
                    async move { Ok::<_, Infallible>(collect(request, &kept).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Collector { addr, spans }
    }

    fn export(&self, protocol: OtlpProtocol) -> TraceExport {
        TraceExport {
            protocol,
            service_name: SERVICE.to_owned(),
            ..TraceExport::new(format!("http://{}/v1/traces", self.addr))
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Decodes one export into `kept`.
async fn collect(request: Request<Incoming>, kept: &Mutex<Vec<Received>>) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.method() != http::Method::POST || request.uri().path() != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND, "");
    }
    let json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let Ok(body) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST, "");
    };
    let body = body.to_bytes();
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|err| err.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|err| err.to_string())
    };
    let Ok(export) = decoded else {
        return answer(StatusCode::BAD_REQUEST, "");
    };
    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| text(&resource.attributes, "service.name"));
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let service = service.clone();
                kept.push(Received { service, span });
            }
        }
    }
    answer(StatusCode::OK, if json { "{}" } else { "" })
}

type Attributes = [opentelemetry_proto::tonic::common::v1::KeyValue];

fn value<'a>(attributes: &'a Attributes, name: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|attribute| attribute.key == name)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn text(attributes: &Attributes, name: &str) -> Option<String> {
    match value(attributes, name) {
        Some(Value::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

fn int(attributes: &Attributes, name: &str) -> Option<i64> {
    match value(attributes, name) {
        Some(Value::IntValue(int)) => Some(*int),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A server exporting traces to `collector` (or none), on a fresh state
/// directory, in front of `backend`.
async fn start(
    state: &tempfile::TempDir,
    backend: &Backend,
    traces: Option<TraceExport>,
) -> Server {
    let mut config = Config::new(component());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.path().to_owned();
    // Compiled once for every test run, as in `server.rs`.
    config.cache = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    config.variables.insert("backend_url".into(), backend.url());
    config.traces = traces;
    Server::start(config).await.expect("the server starts")
}

/// A create sent with `headers`: its status and body.
async fn create(server: &Server, headers: &[(&str, &str)]) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = r#"{"model":"m","input":"trace me"}"#;
    let mut request = Request::post(format!("{}/v1/responses", server.url()))
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a request");
    let exchange = async {
        let response = client.request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("a body");
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("an answer in time")
}

/// Shuts `server` down, which exports its spans.
async fn shut_down(server: Server) {
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("the server shuts down in time");
}

fn kind(span: &Span) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified)
}

/// The one server span of the request `request_id`.
fn server_span(spans: &[Received], request_id: &str) -> Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|received| &received.span)
        .filter(|span| kind(span) == SpanKind::Server)
        .filter(|span| text(&span.attributes, "request_id").as_deref() == Some(request_id))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one server span for {request_id}: {spans:#?}"
    );
    found[0].clone()
}

/// The spans whose parent is `parent`.
fn children<'a>(spans: &'a [Received], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|received| &received.span)
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect()
}

/// The backend call among `calls`: a `CLIENT` span for
/// `/v1/chat/completions`.
fn backend_call<'a>(calls: &[&'a Span], backend: &Backend) -> &'a Span {
    let found: Vec<&&Span> = calls
        .iter()
        .filter(|span| kind(span) == SpanKind::Client)
        .filter(|span| {
            text(&span.attributes, "url.path").as_deref() == Some("/v1/chat/completions")
        })
        .collect();
    assert_eq!(found.len(), 1, "one backend call: {calls:#?}");
    let call = *found[0];
    assert_eq!(call.name, "POST");
    let attributes = &call.attributes;
    assert_eq!(
        text(attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        text(attributes, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    let port = i64::from(backend.addr().port());
    assert_eq!(int(attributes, "server.port"), Some(port));
    assert_eq!(int(attributes, "http.response.status_code"), Some(200));
    call
}

/// The key-value spans among `calls`, each checked.
fn store_calls<'a>(calls: &[&'a Span]) -> Vec<&'a Span> {
    let found: Vec<&Span> = calls
        .iter()
        .copied()
        .filter(|span| span.name.starts_with("keyvalue "))
        .collect();
    for span in &found {
        let operation = text(&span.attributes, "db.operation.name").expect("an operation");
        assert_eq!(span.name, format!("keyvalue {operation}"));
        assert_eq!(
            text(&span.attributes, "db.system.name").as_deref(),
            Some("sqlite")
        );
        assert_eq!(kind(span), SpanKind::Internal);
        if operation.ends_with("_many") {
            let keys = int(&span.attributes, "db.operation.batch.size");
            assert!(keys.is_some_and(|keys| keys > 0), "{span:#?}");
        }
    }
    found
}

/// The `traceparent` the backend got with the request `request_id`.
fn traceparent_sent(backend: &Backend, request_id: &str) -> Option<String> {
    let requests = backend.chat_requests();
    let request = requests
        .iter()
        .find(|request| request.header("x-request-id") == Some(request_id))
        .unwrap_or_else(|| panic!("no backend request for {request_id}: {requests:#?}"));
    request.header("traceparent").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_continues_the_clients_trace() {
    let collector = Collector::start().await;
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let export = collector.export(OtlpProtocol::HttpProtobuf);
    let server = start(&state, &backend, Some(export)).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let sent = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", "vendor=abc"),
        ("x-request-id", "trace-1"),
    ];
    let (status, body) = create(&server, &sent).await;
    assert_eq!(status, 200, "{body}");
    shut_down(server).await;

    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .all(|received| received.service.as_deref() == Some(SERVICE)),
        "{spans:#?}"
    );
    // One request: every span is of the client's trace.
    assert!(
        spans
            .iter()
            .all(|received| hex(&received.span.trace_id) == CLIENT_TRACE),
        "{spans:#?}"
    );

    let server_span = server_span(&spans, "trace-1");
    assert_eq!(server_span.name, "POST /v1/responses");
    assert_eq!(hex(&server_span.parent_span_id), CLIENT_SPAN);
    assert_eq!(server_span.trace_state, "vendor=abc");
    let attributes = &server_span.attributes;
    assert_eq!(
        text(attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        text(attributes, "http.route").as_deref(),
        Some("/v1/responses")
    );
    assert_eq!(int(attributes, "http.response.status_code"), Some(200));
    // What the component reported.
    assert_eq!(
        text(attributes, "gen_ai.request.model").as_deref(),
        Some("m")
    );
    assert!(text(attributes, "tenant").is_some(), "{server_span:#?}");
    assert!(
        int(attributes, "gen_ai.usage.input_tokens").is_some(),
        "{server_span:#?}"
    );
    assert!(server_span.end_time_unix_nano >= server_span.start_time_unix_nano);

    let calls = children(&spans, &server_span);
    let call = backend_call(&calls, &backend);
    let stored = store_calls(&calls);
    assert!(!stored.is_empty(), "no key-value span: {calls:#?}");
    assert!(stored
        .iter()
        .any(|span| span.name == "keyvalue set_many" || span.name == "keyvalue set"));
    // Nothing else hangs from the server span, and nothing from its calls.
    assert_eq!(calls.len(), 1 + stored.len(), "{calls:#?}");
    assert_eq!(spans.len(), 2 + stored.len(), "{spans:#?}");

    let expected = format!("00-{CLIENT_TRACE}-{}-01", hex(&call.span_id));
    assert_eq!(traceparent_sent(&backend, "trace-1"), Some(expected));
    let forwarded = backend.chat_requests();
    assert_eq!(forwarded[0].header("tracestate"), Some("vendor=abc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_without_a_valid_traceparent_starts_a_trace() {
    let collector = Collector::start().await;
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let export = collector.export(OtlpProtocol::HttpJson);
    let server = start(&state, &backend, Some(export)).await;

    let (status, body) = create(&server, &[("x-request-id", "root-1")]).await;
    assert_eq!(status, 200, "{body}");
    let invalid = [
        ("traceparent", "00-not-a-trace-01"),
        ("x-request-id", "root-2"),
    ];
    let (status, body) = create(&server, &invalid).await;
    assert_eq!(status, 200, "{body}");
    shut_down(server).await;

    let spans = collector.spans();
    let mut traces = Vec::new();
    for request_id in ["root-1", "root-2"] {
        let root = server_span(&spans, request_id);
        assert!(root.parent_span_id.is_empty(), "{root:#?}");
        let trace = hex(&root.trace_id);
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(trace, CLIENT_TRACE);
        let calls = children(&spans, &root);
        assert!(calls.iter().all(|span| span.trace_id == root.trace_id));
        let call = backend_call(&calls, &backend);
        assert!(
            !store_calls(&calls).is_empty(),
            "no key-value span: {calls:#?}"
        );
        let expected = format!("00-{trace}-{}-01", hex(&call.span_id));
        assert_eq!(traceparent_sent(&backend, request_id), Some(expected));
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1], "each request is a trace of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_export_nothing_is_traced() {
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let server = start(&state, &backend, None).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let sent = [
        ("traceparent", traceparent.as_str()),
        ("x-request-id", "off-1"),
    ];
    let (status, body) = create(&server, &sent).await;
    assert_eq!(status, 200, "{body}");
    shut_down(server).await;

    // The component sends none of its own, and the host adds none.
    assert_eq!(traceparent_sent(&backend, "off-1"), None);
}

/// A WebSocket turn: its server span continues the upgrade request's
/// `traceparent`, and its backend and key-value calls are under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_turn_continues_the_upgrades_trace() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let collector = Collector::start().await;
    let backend = Backend::start().expect("backend starts");
    let state = tempfile::tempdir().expect("temp dir");
    let export = collector.export(OtlpProtocol::HttpProtobuf);
    let server = start(&state, &backend, Some(export)).await;

    let url = server.url().replacen("http://", "ws://", 1) + "/v1/responses";
    let mut request = url.into_client_request().expect("a request");
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    request
        .headers_mut()
        .insert("traceparent", traceparent.parse().expect("a header"));
    let turn = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the upgrade");
        let create = r#"{"type":"response.create","model":"m","input":"trace me"}"#;
        ws.send(Message::text(create)).await.expect("sent");
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message.expect("a message") {
                if text.contains("\"response.completed\"") {
                    break;
                }
            }
        }
        ws.close(None).await.expect("closed");
    };
    tokio::time::timeout(PATIENCE, turn).await.expect("in time");
    shut_down(server).await;

    let requests = backend.chat_requests();
    assert_eq!(requests.len(), 1);
    let request_id = requests[0]
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    let spans = collector.spans();
    let turn = server_span(&spans, &request_id);
    assert_eq!(hex(&turn.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&turn.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        text(&turn.attributes, "http.request.method").as_deref(),
        Some("WS")
    );
    assert_eq!(turn.name, "WS /v1/responses");
    let calls = children(&spans, &turn);
    let call = backend_call(&calls, &backend);
    assert!(!store_calls(&calls).is_empty(), "{calls:#?}");
    assert_eq!(
        traceparent_sent(&backend, &request_id),
        Some(format!("00-{CLIENT_TRACE}-{}-01", hex(&call.span_id)))
    );
}
