//! One HTTP request as the operator sees it: when it came, what was
//! answered, when the first and last bytes of the answer went out, what the
//! component's backend calls did, and what the component reported about it
//! (model, tenant, tokens). From these the server records its request
//! metrics and writes one request log line.
//!
//! An [`Exchange`] is shared (an `Arc`) by the code answering the request,
//! the response body on its way to the client ([`ObservedBody`]), and the
//! instance serving it: its outbound-request hooks and its stderr (see
//! `guest_log`). Metrics are recorded once, when the body ends (or is
//! dropped: the client went away). The log line waits for what the
//! component reports, which it writes at the very end of its work: it is
//! written when the body has ended and the component's report has come, or
//! else when the last holder lets go of the exchange, which is once the
//! instance is gone (its stderr is flushed by then). A background response
//! runs on after its body: its line comes when its work is done, with its
//! tokens.
//!
//! When the server exports traces, the exchange also holds the request's
//! server span, ended with the log line (timed to the end of the body), and
//! the trace its outbound requests hang from (see `trace`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method};
use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::Metrics;
use crate::route::{method_label, Route};
use crate::trace::{RequestTrace, ServerSpan, Traces};

/// The `tracing` target of request log lines.
pub const LOG_TARGET: &str = "edge_responses::request";

/// The status recorded for a request whose client went away before the
/// response head was ready (nginx's "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// Longest text kept from a component report field.
const MAX_FIELD_CHARS: usize = 256;

/// The record of one request.
pub(crate) struct Exchange {
    started: Instant,
    request_id: String,
    method: Method,
    route: Route,
    path: String,
    metrics: Arc<Metrics>,
    trace: Option<Arc<RequestTrace>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Open until the log line is written.
    server_span: Option<ServerSpan>,
    status: Option<u16>,
    first_byte: Option<Duration>,
    /// When the first delta event went out (streams and WebSocket turns).
    first_token: Option<Duration>,
    /// Set when the body ended (or was dropped); the metrics are recorded
    /// then.
    finished: Option<Duration>,
    backend: BackendTally,
    report: ComponentReport,
    reported: bool,
    logged: bool,
}

/// The component's backend calls during one request.
#[derive(Debug, Default, Clone, PartialEq)]
struct BackendTally {
    calls: u64,
    /// The outcome of the last call that has one.
    last_status: Option<BackendStatus>,
    time: Duration,
}

/// How an outbound request went: the status of its response, or the kind
/// of failure that kept it from having one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendStatus {
    Code(u16),
    Failed(&'static str),
}

impl std::fmt::Display for BackendStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendStatus::Code(code) => write!(f, "{code}"),
            BackendStatus::Failed(kind) => f.write_str(kind),
        }
    }
}

/// What the component reports about a request, on its stderr:
/// `edge-responses-request {"request_id": ..., "model": ..., ...}` (see
/// [`ComponentReport::parse`]). Every field may be missing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ComponentReport {
    pub(crate) request_id: Option<String>,
    pub(crate) response_id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) stored: Option<bool>,
}

/// What starts a component's report line.
pub(crate) const REPORT_PREFIX: &str = "edge-responses-request ";

impl ComponentReport {
    /// The report in `line` (its line ending trimmed): the prefix
    /// [`REPORT_PREFIX`], then a JSON object. Fields of the wrong type count
    /// as missing, other fields are ignored (the component's `status` is the
    /// response's, not the HTTP status), and text is cut to 256 characters.
    /// `None` when the line is not a report.
    pub(crate) fn parse(line: &str) -> Option<ComponentReport> {
        let json = line.strip_prefix(REPORT_PREFIX)?;
        let value: serde_json::Value = serde_json::from_str(json).ok()?;
        let object = value.as_object()?;
        let text = |name: &str| {
            object
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(|text| match text.char_indices().nth(MAX_FIELD_CHARS) {
                    Some((end, _)) => text[..end].to_owned(),
                    None => text.to_owned(),
                })
        };
        let count = |name: &str| object.get(name).and_then(serde_json::Value::as_u64);
        Some(ComponentReport {
            request_id: text("request_id"),
            response_id: text("response_id"),
            model: text("model"),
            tenant: text("tenant"),
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            stored: object.get("stored").and_then(serde_json::Value::as_bool),
        })
    }

    /// Takes every field `later` has.
    fn merge(&mut self, later: ComponentReport) {
        fn take<T>(field: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *field = later;
            }
        }
        take(&mut self.request_id, later.request_id);
        take(&mut self.response_id, later.response_id);
        take(&mut self.model, later.model);
        take(&mut self.tenant, later.tenant);
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.stored, later.stored);
    }
}

impl Exchange {
    /// The record of an untraced request that arrived now.
    #[cfg(test)]
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        request_id: String,
        method: Method,
        path: &str,
    ) -> Arc<Exchange> {
        Self::traced(metrics, request_id, method, path, None, &HeaderMap::new())
    }

    /// The record of a request that arrived now with `headers`, its server
    /// span started when `traces` are exported.
    pub(crate) fn traced(
        metrics: Arc<Metrics>,
        request_id: String,
        method: Method,
        path: &str,
        traces: Option<&Traces>,
        headers: &HeaderMap,
    ) -> Arc<Exchange> {
        let route = Route::of(path);
        let (server_span, trace) = traces
            .map(|traces| traces.request(&method, route, path, &request_id, headers))
            .unzip();
        Arc::new(Exchange {
            started: Instant::now(),
            request_id,
            method,
            route,
            path: path.to_owned(),
            metrics,
            trace,
            state: Mutex::new(State {
                server_span,
                ..State::default()
            }),
        })
    }

    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The request's trace, when traces are exported.
    pub(crate) fn trace(&self) -> Option<&Arc<RequestTrace>> {
        self.trace.as_ref()
    }

    pub(crate) fn route(&self) -> Route {
        self.route
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole, so a poisoned lock is valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The response head is ready, with `status`.
    pub(crate) fn respond(&self, status: u16) {
        self.state().status = Some(status);
    }

    /// The component reported on the request. When the body has ended,
    /// that is all the log line waits for.
    pub(crate) fn report(&self, report: ComponentReport) {
        let mut state = self.state();
        state.report.merge(report);
        state.reported = true;
        if state.finished.is_some() && !state.logged {
            self.conclude(&mut state);
        }
    }

    /// What the component has reported so far, if anything.
    #[cfg(test)]
    pub(crate) fn reported(&self) -> Option<ComponentReport> {
        let state = self.state();
        state.reported.then(|| state.report.clone())
    }

    /// The component sent an outbound request.
    pub(crate) fn backend_call(&self) {
        self.state().backend.calls += 1;
    }

    /// An outbound request got its response head, or failed.
    pub(crate) fn backend_status(&self, status: BackendStatus) {
        self.state().backend.last_status = Some(status);
    }

    /// An outbound request ended, `duration` after it was sent.
    pub(crate) fn backend_time(&self, duration: Duration) {
        self.state().backend.time += duration;
    }

    /// A byte of the body (or a WebSocket turn's first event) is on its
    /// way.
    pub(crate) fn first_byte(&self) {
        let elapsed = self.started.elapsed();
        self.state().first_byte.get_or_insert(elapsed);
    }

    /// The first delta event (a token of text, reasoning or tool call
    /// arguments) is on its way.
    pub(crate) fn first_token(&self) {
        let elapsed = self.started.elapsed();
        self.state().first_token.get_or_insert(elapsed);
    }

    /// The body has ended, or will not be sent: records the request's
    /// metrics (once), and writes its log line if the component has
    /// reported.
    fn finish(&self) {
        let mut state = self.state();
        if state.finished.is_some() {
            return;
        }
        let finished = self.started.elapsed();
        state.finished = Some(finished);
        let status = *state.status.get_or_insert(CLIENT_CLOSED);
        // A body without bytes: its head was its first byte.
        let first_byte = *state.first_byte.get_or_insert(finished);
        self.metrics.request(
            self.route,
            method_label(&self.method),
            status,
            finished,
            first_byte,
        );
        if let Some(first_token) = state.first_token {
            self.metrics.first_token(self.route, first_token);
        }
        if state.reported && !state.logged {
            self.conclude(&mut state);
        }
    }

    /// Ends the server span, then writes the request log line: once.
    fn conclude(&self, state: &mut State) {
        state.logged = true;
        let report = &state.report;
        if let (Some(model), Some(input), Some(output)) =
            (&report.model, report.input_tokens, report.output_tokens)
        {
            self.metrics.tokens(model, input, output);
        }
        if let Some(span) = state.server_span.take() {
            let took = state.finished.unwrap_or_else(|| self.started.elapsed());
            span.end(state.status, &state.report, took);
        }
        self.log(state);
    }

    /// Writes the request log line.
    fn log(&self, state: &State) {
        let report = &state.report;
        let backend = &state.backend;
        let called = backend.calls > 0;
        tracing::info!(
            target: LOG_TARGET,
            request_id = self.request_id.as_str(),
            method = self.method.as_str(),
            route = self.route.as_str(),
            path = self.path.as_str(),
            status = state.status,
            duration_ms = state.finished.map(millis),
            ttfb_ms = state.first_byte.map(millis),
            ttft_ms = state.first_token.map(millis),
            backend_calls = backend.calls,
            backend_status = backend.last_status.map(tracing::field::display),
            backend_ms = called.then(|| millis(backend.time)),
            response_id = report.response_id.as_deref(),
            model = report.model.as_deref(),
            tenant = report.tenant.as_deref(),
            input_tokens = report.input_tokens,
            output_tokens = report.output_tokens,
            stored = report.stored,
            "request"
        );
    }
}

impl Drop for Exchange {
    /// The body and the instance are gone: whatever has not been recorded
    /// or logged yet is now.
    fn drop(&mut self) {
        self.finish();
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !state.logged {
            let mut state = std::mem::take(state);
            self.conclude(&mut state);
        }
    }
}

/// `duration` in milliseconds, to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A response body on its way to the client, telling its exchange when the
/// first byte goes out and when the body ends (or is dropped unfinished).
pub(crate) struct ObservedBody<B> {
    inner: B,
    exchange: Arc<Exchange>,
    sent_data: bool,
    /// Whether a delta event has gone out (or cannot: not an event
    /// stream).
    sent_token: bool,
}

impl<B> ObservedBody<B> {
    /// `inner`, told to `exchange`; an event stream's frames are also
    /// watched for its first token (other bodies have none).
    pub(crate) fn new(inner: B, exchange: Arc<Exchange>, event_stream: bool) -> Self {
        Self {
            inner,
            exchange,
            sent_data: false,
            sent_token: !event_stream,
        }
    }
}

/// Whether a piece of an event stream holds a delta event: its data has
/// `"type":"response.….delta"`. Text inside events is JSON-escaped, so a
/// `.delta"` in a model's words reads `.delta\"` and does not match.
pub(crate) fn holds_delta(bytes: &[u8]) -> bool {
    const DELTA: &[u8] = b".delta\"";
    bytes.windows(DELTA.len()).any(|window| window == DELTA)
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let has_bytes = frame.data_ref().is_some_and(|data| !data.is_empty());
                if has_bytes && !self.sent_data {
                    self.sent_data = true;
                    self.exchange.first_byte();
                }
                let token = !self.sent_token && frame.data_ref().is_some_and(|d| holds_delta(d));
                if token {
                    self.sent_token = true;
                    self.exchange.first_token();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.exchange.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.exchange.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_events_are_told_from_text_that_names_them() {
        assert!(holds_delta(
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n"
        ));
        assert!(holds_delta(
            b"{\"type\":\"response.function_call_arguments.delta\""
        ));
        assert!(!holds_delta(b"data: {\"type\":\"response.created\"}\n\n"));
        // A model that writes `.delta"`: escaped inside its event.
        assert!(!holds_delta(
            b"data: {\"type\":\"response.output_text.done\",\"text\":\"x.delta\\\" y\"}"
        ));
    }

    #[test]
    fn a_report_line_parses_into_its_fields() {
        let line = r#"edge-responses-request {"request_id":"req_1","response_id":"resp_2","model":"m","tenant":"t","status":"completed","input_tokens":12,"output_tokens":30,"stored":true}"#;
        let report = ComponentReport::parse(line).expect("a report");
        assert_eq!(
            report,
            ComponentReport {
                request_id: Some("req_1".into()),
                response_id: Some("resp_2".into()),
                model: Some("m".into()),
                tenant: Some("t".into()),
                input_tokens: Some(12),
                output_tokens: Some(30),
                stored: Some(true),
            }
        );
    }

    #[test]
    fn missing_or_mistyped_fields_are_absent() {
        let report = ComponentReport::parse(
            r#"edge-responses-request {"model":7,"input_tokens":null,"output_tokens":-1,"stored":"yes","extra":[1]}"#,
        )
        .expect("a report");
        assert_eq!(report, ComponentReport::default());
        let empty = ComponentReport::parse("edge-responses-request {}").expect("a report");
        assert_eq!(empty, ComponentReport::default());
    }

    #[test]
    fn other_lines_are_not_reports() {
        for line in [
            "",
            "panicked at src/lib.rs:1",
            "edge-responses-request",
            "edge-responses-request ",
            "edge-responses-request not json",
            "edge-responses-request [1,2]",
            r#"edge-responses-request {"model":"m"} trailing"#,
            r#" edge-responses-request {"model":"m"}"#,
            r#"edge-responses-request{"model":"m"}"#,
        ] {
            assert_eq!(ComponentReport::parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn long_text_is_cut() {
        let model = "é".repeat(300);
        let line = format!(r#"edge-responses-request {{"model":"{model}"}}"#);
        let report = ComponentReport::parse(&line).expect("a report");
        assert_eq!(report.model.expect("model").chars().count(), 256);
    }

    #[test]
    fn later_reports_add_to_earlier_ones() {
        let mut report = ComponentReport::parse(
            r#"edge-responses-request {"model":"a","tenant":"t","input_tokens":1}"#,
        )
        .expect("a report");
        report.merge(
            ComponentReport::parse(r#"edge-responses-request {"model":"b","output_tokens":2}"#)
                .expect("a report"),
        );
        assert_eq!(report.model.as_deref(), Some("b"));
        assert_eq!(report.tenant.as_deref(), Some("t"));
        assert_eq!(
            (report.input_tokens, report.output_tokens),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn milliseconds_keep_microseconds() {
        assert_eq!(millis(Duration::from_micros(1_234_567)), 1234.567);
        assert_eq!(millis(Duration::from_nanos(1_499)), 0.001);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }

    #[test]
    fn metrics_are_recorded_once_when_the_body_ends() {
        let metrics = Arc::new(Metrics::new());
        let exchange = Exchange::new(metrics.clone(), "r".into(), Method::GET, "/v1/models");
        exchange.respond(200);
        exchange.finish();
        exchange.finish();
        drop(exchange);
        let counted =
            r#"edge_responses_requests_total{method="GET",route="/v1/models",status="200"} 1"#;
        assert!(metrics.text().lines().any(|line| line == counted));

        let abandoned = Exchange::new(metrics.clone(), "r".into(), Method::POST, "/v1/responses");
        drop(abandoned);
        let counted =
            r#"edge_responses_requests_total{method="POST",route="/v1/responses",status="499"} 1"#;
        assert!(metrics.text().lines().any(|line| line == counted));
    }
}
