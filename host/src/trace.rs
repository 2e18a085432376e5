//! OpenTelemetry traces, exported over OTLP/HTTP when an endpoint is
//! configured ([`TraceExport`]; the binary reads it from the standard
//! `OTEL_*` variables, see [`TraceExport::from_env`]).
//!
//! This module owns every span the host makes, and their export:
//!
//! - each request is a `SERVER` span (`POST /v1/responses`), continuing the
//!   client's W3C `traceparent` / `tracestate` when they are valid, else the
//!   root of a new trace; it ends when the request's log line is written
//!   (see `exchange`), with the response status and what the component
//!   reported (model, tenant, tokens);
//! - each outbound HTTP request of the component (backend, MCP servers,
//!   search providers; see `outbound`) is a `CLIENT` span under it, and the
//!   request carries a `traceparent` naming that span, in place of any the
//!   component set;
//! - each `wasi:keyvalue` call (see `keyvalue`) is a span under it too,
//!   `keyvalue get` and so on, found through the OpenTelemetry [`Context`]
//!   the guest's task runs in ([`within`]).
//!
//! Without an endpoint there is no [`Traces`]: requests carry no trace,
//! outbound requests get no header, and a key-value call only finds that
//! its task has no trace (one thread-local read).
//!
//! Spans go through the SDK's batch processor (on a thread of its own) to
//! the OTLP exporter, whose HTTP client is the host's outbound connection
//! pool, driven on the server's tokio runtime (no second HTTP or TLS
//! stack). [`Traces::shutdown`] lets the requests still running end their
//! spans (a few seconds at most), then exports what is left.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use tokio::sync::Notify;

use crate::exchange::ComponentReport;
use crate::route::{method_label, Route};

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "edge-responses";

/// How long one export may take, unless `OTEL_EXPORTER_OTLP_TIMEOUT` says
/// otherwise (the OTLP default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The W3C trace context headers.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest wait, at shutdown, for requests still running to end their
/// spans.
const SHUTDOWN_GRACE: Duration = crate::http::SHUTDOWN_GRACE;

/// Where and how to export traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The OTLP/HTTP traces URL, used as is (e.g.
    /// `http://127.0.0.1:4318/v1/traces`).
    pub endpoint: String,
    /// How spans are encoded.
    pub protocol: OtlpProtocol,
    /// The `service.name` of every span.
    pub service_name: String,
    /// How long one export may take.
    pub timeout: Duration,
}

/// The OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`, the default.
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

impl OtlpProtocol {
    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

impl TraceExport {
    /// Export to the traces URL `endpoint`, the rest by default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }

    /// The export the standard variables among `vars` ask for, `None`
    /// (traces off) unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
    /// is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) is set,
    /// or when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    /// Also read: `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`,
    /// `http/json`), `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`
    /// (milliseconds). A value this host cannot honour (`grpc`, say) is an
    /// error rather than traces silently lost.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Option<TraceExport>> {
        let vars: std::collections::HashMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| name.starts_with("OTEL_") && !value.trim().is_empty())
            .collect();
        let var = |name: &str| vars.get(name).map(|value| value.trim());
        let either = |signal: &str, general: &str| var(signal).or_else(|| var(general));
        if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER") {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => bail!("OTEL_TRACES_EXPORTER={other} is not supported: use otlp or none"),
        }
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces.to_owned(),
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        check_endpoint(&endpoint)?;
        let protocol = match either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("http/json") => OtlpProtocol::HttpJson,
            Some(other) => bail!(
                "OTLP protocol {other} is not supported: use http/protobuf or http/json \
                 (a collector's OTLP/HTTP port is usually 4318)"
            ),
        };
        let timeout = match either(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => DEFAULT_EXPORT_TIMEOUT,
            Some(millis) => millis
                .parse()
                .map(Duration::from_millis)
                .with_context(|| format!("OTLP timeout {millis:?}: not milliseconds"))?,
        };
        let service_name = var("OTEL_SERVICE_NAME").unwrap_or(DEFAULT_SERVICE_NAME);
        Ok(Some(TraceExport {
            endpoint,
            protocol,
            service_name: service_name.to_owned(),
            timeout,
        }))
    }
}

/// An `http` or `https` URL with a host.
fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    let uri: Uri = endpoint
        .parse()
        .with_context(|| format!("OTLP endpoint {endpoint:?}"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !matches!(scheme, "http" | "https") || uri.host().is_none() {
        bail!("OTLP endpoint {endpoint:?}: not an http:// or https:// URL");
    }
    Ok(())
}

/// One server's traces: the tracer every span starts from, and the
/// provider that batches and exports them.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    open: Arc<OpenRequests>,
}

impl Traces {
    /// Starts exporting as `export` says. Call on the tokio runtime the
    /// exports are to be sent from.
    pub(crate) fn start(export: &TraceExport) -> anyhow::Result<Traces> {
        let client = ExportClient {
            runtime: tokio::runtime::Handle::try_current()
                .context("traces are exported from a tokio runtime")?,
            timeout: export.timeout,
        };
        let protocol = match export.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(export.endpoint.as_str())
            .with_protocol(protocol)
            .with_timeout(export.timeout)
            .build()
            .context("the OTLP trace exporter")?;
        let resource = Resource::builder()
            .with_service_name(export.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self::with_provider(
            SdkTracerProvider::builder()
                .with_span_processor(BatchSpanProcessor::builder(exporter).build())
                .with_resource(resource)
                .build(),
        ))
    }

    fn with_provider(provider: SdkTracerProvider) -> Traces {
        let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Traces {
            tracer: provider.tracer_with_scope(scope),
            provider,
            open: Arc::default(),
        }
    }

    /// The server span of a request that arrived now with `headers`, and
    /// the trace its calls' spans hang from.
    pub(crate) fn request(
        &self,
        method: &Method,
        route: Route,
        path: &str,
        request_id: &str,
        headers: &HeaderMap,
    ) -> (ServerSpan, Arc<RequestTrace>) {
        let client = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let started = SystemTime::now();
        let (method, name) = method_and_name(method, route);
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("request_id", request_id.to_owned()),
        ];
        if route != Route::Other {
            attributes.push(KeyValue::new("http.route", route.as_str()));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &client);
        let trace = RequestTrace::new(self.tracer.clone(), span.span_context(), &self.open);
        (ServerSpan { span, started }, Arc::new(trace))
    }

    /// Waits (a few seconds at most) for the requests still running to end
    /// their spans, then exports every span not exported yet and stops.
    pub(crate) async fn shutdown(&self) {
        if tokio::time::timeout(SHUTDOWN_GRACE, self.open.none_left())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: exporting traces without the requests still running");
        }
        // The batch processor's thread exports on this runtime, and is
        // waited for: not from one of its worker threads.
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("shutdown: exporting traces failed: {err}"),
            Err(err) => tracing::warn!("shutdown: exporting traces failed: {err}"),
        }
    }
}

/// The `http.request.method` and the span name of a request: the route
/// after the method, or the method alone outside the API's routes
/// (semantic conventions: `_OTHER` and `HTTP` for methods not known).
fn method_and_name(method: &Method, route: Route) -> (&'static str, String) {
    let method = match method_label(method) {
        "other" => "_OTHER",
        known => known,
    };
    let shown = if method == "_OTHER" { "HTTP" } else { method };
    let name = match route {
        Route::Other => shown.to_owned(),
        route => format!("{shown} {}", route.as_str()),
    };
    (method, name)
}

/// A request's server span, open until the request is concluded.
pub(crate) struct ServerSpan {
    span: Span,
    started: SystemTime,
}

impl ServerSpan {
    /// Ends the span `took` after it started, the response's `status`
    /// (5xx is an error) and what the component reported on it recorded.
    pub(crate) fn end(mut self, status: Option<u16>, report: &ComponentReport, took: Duration) {
        let span = &mut self.span;
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
        }
        let text = [
            ("gen_ai.request.model", &report.model),
            ("gen_ai.response.id", &report.response_id),
            ("tenant", &report.tenant),
        ];
        for (name, value) in text {
            if let Some(value) = value {
                span.set_attribute(KeyValue::new(name, value.clone()));
            }
        }
        let counts = [
            ("gen_ai.usage.input_tokens", report.input_tokens),
            ("gen_ai.usage.output_tokens", report.output_tokens),
        ];
        for (name, count) in counts {
            if let Some(count) = count.and_then(|count| i64::try_from(count).ok()) {
                span.set_attribute(KeyValue::new(name, count));
            }
        }
        span.end_with_timestamp(self.started + took);
    }
}

/// What the spans of one request's calls hang from: the request's server
/// span, and the tracer to start them with. While it lives, the request
/// counts as running for [`Traces::shutdown`].
pub(crate) struct RequestTrace {
    tracer: SdkTracer,
    /// The server span, as the parent of the request's calls.
    parent: Context,
    sampled: bool,
    _open: OpenRequest,
}

impl RequestTrace {
    fn new(tracer: SdkTracer, server: &SpanContext, open: &Arc<OpenRequests>) -> RequestTrace {
        RequestTrace {
            tracer,
            parent: Context::new().with_remote_span_context(server.clone()),
            sampled: server.is_sampled(),
            _open: OpenRequest::new(open),
        }
    }

    /// The trace of the request whose guest is running on this thread now
    /// (see [`within`]), if it has one.
    fn current() -> Option<Arc<RequestTrace>> {
        Context::map_current(|context| context.get::<Arc<RequestTrace>>().cloned())
    }

    /// A `CLIENT` span for the outbound `request`, which is given a
    /// `traceparent` (and the client's `tracestate`) naming it, in place of
    /// whatever the guest set.
    pub(crate) fn outbound<B>(&self, request: &mut Request<B>) -> OutboundSpan {
        let uri = request.uri();
        let method = method_and_name(request.method(), Route::Other).0;
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("server.address", uri.host().unwrap_or_default().to_owned()),
            KeyValue::new("server.port", i64::from(port)),
            KeyValue::new("url.scheme", if https { "https" } else { "http" }),
            KeyValue::new("url.path", uri.path().to_owned()),
        ];
        let span = self
            .tracer
            .span_builder(if method == "_OTHER" { "HTTP" } else { method })
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.parent);
        propagate(span.span_context(), request.headers_mut());
        OutboundSpan(span)
    }
}

/// Sets `traceparent` (and `tracestate`, or removes it) to name `span`.
fn propagate(span: &SpanContext, headers: &mut HeaderMap) {
    let flags = span.trace_flags() & TraceFlags::SAMPLED;
    let parent = format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        flags.to_u8()
    );
    match HeaderValue::from_str(&parent) {
        Ok(value) => headers.insert(TRACEPARENT, value),
        Err(_) => headers.remove(TRACEPARENT),
    };
    let state = span.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => headers.insert(TRACESTATE, value),
        _ => headers.remove(TRACESTATE),
    };
}

/// `work` (a guest's task) run with `trace` as its OpenTelemetry context,
/// where its key-value calls find it; as it is without one.
pub(crate) async fn within<F: Future>(trace: Option<Arc<RequestTrace>>, work: F) -> F::Output {
    match trace {
        Some(trace) => {
            let context = trace.parent.with_value(trace.clone());
            opentelemetry::context::FutureExt::with_context(work, context).await
        }
        None => work.await,
    }
}

/// An outbound request's span; ends when dropped.
pub(crate) struct OutboundSpan(Span);

impl OutboundSpan {
    /// The response head came with `status` (4xx and 5xx are errors).
    pub(crate) fn status(&mut self, status: u16) {
        self.0.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 400 {
            self.failed(status.to_string());
        }
    }

    /// No response: `kind` (`timeout`, `refused`, ...) says why.
    pub(crate) fn failed(&mut self, kind: impl Into<opentelemetry::Value>) {
        self.0.set_attribute(KeyValue::new("error.type", kind));
        self.0.set_status(Status::error(""));
    }
}

/// A span for one key-value call of the request whose guest is running on
/// this thread, `keys` long for batch calls, on the store `store`
/// (`sqlite`, `redis`). `None` without a request, or when its trace is not
/// sampled.
pub(crate) fn keyvalue_span(
    name: &'static str,
    operation: &'static str,
    store: &'static str,
    keys: Option<usize>,
) -> Option<StoreSpan> {
    let trace = RequestTrace::current().filter(|trace| trace.sampled)?;
    let mut attributes = Vec::with_capacity(3);
    attributes.push(KeyValue::new("db.system.name", store));
    attributes.push(KeyValue::new("db.operation.name", operation));
    if let Some(keys) = keys {
        let keys = i64::try_from(keys).unwrap_or(i64::MAX);
        attributes.push(KeyValue::new("db.operation.batch.size", keys));
    }
    // SQLite runs in the host's own process; Redis is a server.
    let kind = match store {
        "redis" => SpanKind::Client,
        _ => SpanKind::Internal,
    };
    let span = trace
        .tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&trace.tracer, &trace.parent);
    Some(StoreSpan(span))
}

/// A key-value call's span.
pub(crate) struct StoreSpan(Span);

impl StoreSpan {
    /// The call is done; `error` says why it failed, if it did.
    pub(crate) fn end(mut self, error: Option<String>) {
        if let Some(error) = error {
            self.0.set_status(Status::error(error));
        }
        self.0.end();
    }
}

/// The requests with a trace still running.
#[derive(Default)]
struct OpenRequests {
    count: AtomicUsize,
    none_left: Notify,
}

impl OpenRequests {
    /// Resolves once no request is running.
    async fn none_left(&self) {
        loop {
            let mut ended = pin!(self.none_left.notified());
            ended.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// One running request, counted until dropped.
struct OpenRequest(Arc<OpenRequests>);

impl OpenRequest {
    fn new(open: &Arc<OpenRequests>) -> Self {
        open.count.fetch_add(1, Ordering::AcqRel);
        OpenRequest(open.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// The OTLP exporter's HTTP client: the host's outbound pool, on the
/// server's runtime (the batch processor's thread has none).
#[derive(Debug)]
struct ExportClient {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let sending = self
            .runtime
            .spawn(crate::outbound::send_whole(request, self.timeout));
        Ok(sending.await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn export(pairs: &[(&str, &str)]) -> Option<TraceExport> {
        TraceExport::from_env(vars(pairs)).expect("valid variables")
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(export(&[]), None);
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "x")]), None);
        assert_eq!(export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(export(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]), None);
        assert_eq!(export(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), None);
    }

    #[test]
    fn the_endpoint_variables_give_the_traces_url() {
        let base = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        assert_eq!(base, Some(TraceExport::new("http://c:4318/v1/traces")));
        let both = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://t/otlp/traces",
            ),
        ]);
        assert_eq!(
            both.map(|e| e.endpoint).as_deref(),
            Some("https://t/otlp/traces")
        );
    }

    #[test]
    fn protocol_service_and_timeout_are_read() {
        let export = export(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "edge-eu"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .expect("an export");
        assert_eq!(export.protocol, OtlpProtocol::HttpJson);
        assert_eq!(export.service_name, "edge-eu");
        assert_eq!(export.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn what_cannot_be_honoured_is_an_error() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        for bad in [
            vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            vec![endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")],
            vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")],
            vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c/v1/traces")],
        ] {
            assert!(TraceExport::from_env(vars(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spans_are_named_by_method_and_route() {
        let name = |method: Method, path: &str| method_and_name(&method, Route::of(path));
        assert_eq!(
            name(Method::POST, "/v1/responses"),
            ("POST", "POST /v1/responses".to_owned())
        );
        assert_eq!(
            name(Method::GET, "/v1/responses/resp_1"),
            ("GET", "GET /v1/responses/{id}".to_owned())
        );
        assert_eq!(name(Method::GET, "/nowhere"), ("GET", "GET".to_owned()));
        let odd = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(
            name(odd, "/v1/models"),
            ("_OTHER", "HTTP /v1/models".to_owned())
        );
    }

    /// Traces with no exporter: spans are made and sampled, and go nowhere.
    fn traces() -> Traces {
        Traces::with_provider(SdkTracerProvider::builder().build())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                let value = HeaderValue::from_str(value).expect("a header value");
                (HeaderName::from_static(name), value)
            })
            .collect()
    }

    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CLIENT_SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn a_request_continues_the_clients_trace() {
        let traces = traces();
        let sent = headers(&[
            (
                "traceparent",
                &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
            ),
            ("tracestate", "vendor=abc"),
        ]);
        let (server, trace) =
            traces.request(&Method::POST, Route::Responses, "/v1/responses", "r", &sent);
        let context = server.span.span_context().clone();
        assert_eq!(context.trace_id().to_string(), CLIENT_TRACE);
        assert_ne!(context.span_id().to_string(), CLIENT_SPAN);
        assert!(trace.sampled);

        // An outbound request: the guest's own trace headers are replaced.
        let mut request = Request::post("https://api.example/v1/chat/completions")
            .header(
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .header("tracestate", "guest=1")
            .body(())
            .expect("a request");
        let call = trace.outbound(&mut request);
        let call = call.0.span_context().clone();
        assert_eq!(call.trace_id(), context.trace_id());
        assert_ne!(call.span_id(), context.span_id());
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let expected = format!("00-{CLIENT_TRACE}-{}-01", call.span_id());
        assert_eq!(header("traceparent"), Some(expected.as_str()));
        assert_eq!(header("tracestate"), Some("vendor=abc"));
        server.end(
            Some(200),
            &ComponentReport::default(),
            Duration::from_millis(1),
        );
    }

    #[test]
    fn a_request_without_a_valid_traceparent_starts_a_trace() {
        let traces = traces();
        for sent in [
            headers(&[]),
            headers(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]),
            headers(&[(
                "traceparent",
                &format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
            )]),
        ] {
            let (server, trace) =
                traces.request(&Method::GET, Route::Models, "/v1/models", "r", &sent);
            let context = server.span.span_context().clone();
            assert!(context.is_valid() && context.is_sampled());
            assert_ne!(context.trace_id().to_string(), CLIENT_TRACE);
            let mut request = Request::get("http://b/v1/models")
                .header("tracestate", "guest=1")
                .body(())
                .expect("a request");
            drop(trace.outbound(&mut request));
            assert!(request.headers().get("tracestate").is_none());
        }
    }

    #[tokio::test]
    async fn key_value_spans_belong_to_the_running_request() {
        assert!(keyvalue_span("keyvalue get", "get", "sqlite", None).is_none());
        let traces = traces();
        let (_server, trace) = traces.request(
            &Method::GET,
            Route::Models,
            "/v1/models",
            "r",
            &HeaderMap::new(),
        );
        let server = trace.parent.span().span_context().span_id();
        let found = within(Some(trace), async {
            keyvalue_span("keyvalue get", "get", "sqlite", None)
                .and_then(|span| span.0.exported_data())
                .map(|data| data.parent_span_id)
        })
        .await;
        assert_eq!(found, Some(server));
        // The guest's task is done: so is its request.
        assert_eq!(traces.open.count.load(Ordering::Acquire), 0);
        traces.shutdown().await;
    }

    #[test]
    fn an_unsampled_request_makes_no_key_value_spans() {
        let traces = traces();
        let sent = headers(&[(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),
        )]);
        let (_server, trace) =
            traces.request(&Method::GET, Route::Models, "/v1/models", "r", &sent);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let span = runtime.block_on(within(Some(trace), async {
            keyvalue_span("keyvalue get", "get", "sqlite", None).is_some()
        }));
        assert!(!span);
    }
}
