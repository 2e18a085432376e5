//! Prometheus metrics of one server: what it answered, how fast, what its
//! instances asked of backends and of the key-value store, and how full its
//! instance pool is. Every name starts with `edge_responses_`.
//!
//! Each [`Server`](crate::Server) has its own registry, so servers side by
//! side in one process (as in tests) keep their counts apart. Labelled
//! metrics are resolved to handles up front where the label values are
//! known (per route, per key-value call); recording is then an atomic add.
//! Only `requests_total` and `backend_requests_total`, whose status label is
//! known late, look their handle up per observation (a hash lookup under a
//! read lock).
//!
//! Tokens are counted by model (`tokens_total{model, direction}`) as the
//! component reports them. Model names come from clients, so at most
//! [`MAX_MODELS`] distinct ones get a series of their own; tokens of any
//! other model count under `model="other"`.
//!
//! A server without a metrics listener records nothing: its [`Metrics`] is
//! [`Metrics::disabled`], whose record methods return at once (the instance
//! gauges, shared with the instance pool as plain atomics, still move).
//!
//! [`serve`] answers `GET /metrics` on a listener of its own, in the text
//! exposition format written by the crate's `TextEncoder`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::keyvalue::KvOp;
use crate::route::Route;

/// Bounds of the request, time-to-first-byte and backend histograms, in
/// seconds: from a cached 404 to a long stream of generated text.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Bounds of the key-value histogram, in seconds: a SQLite call on a warm
/// connection takes tens of microseconds, a Redis round trip a few hundred.
const KEYVALUE_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Most models counted apart in `tokens_total`.
pub(crate) const MAX_MODELS: usize = 64;

/// One server's metrics.
pub(crate) struct Metrics {
    /// Whether observations are recorded; when not, every record method
    /// returns before touching a metric.
    enabled: bool,
    registry: Registry,
    requests: IntCounterVec,
    request_duration: [Histogram; Route::ALL.len()],
    first_byte: [Histogram; Route::ALL.len()],
    first_token: [Histogram; Route::ALL.len()],
    tokens: IntCounterVec,
    /// The models `tokens` has a series for.
    models: Mutex<HashSet<String>>,
    backend_requests: IntCounterVec,
    backend_duration: Histogram,
    keyvalue: [KeyValueOp; KvOp::ALL.len()],
    pub(crate) instances_in_use: IntGauge,
    pub(crate) requests_waiting: IntGauge,
    pub(crate) instance_limit: IntGauge,
}

/// The handles of one kind of key-value call.
struct KeyValueOp {
    calls: IntCounter,
    errors: IntCounter,
    duration: Histogram,
}

impl Metrics {
    /// A fresh set of metrics in a registry of its own, recording.
    pub(crate) fn new() -> Metrics {
        Self::build().expect("metric names and labels are fixed and unique")
    }

    /// A set of metrics that records nothing: for a server whose metrics no
    /// one can read, so requests do not pay for them.
    pub(crate) fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Self::new()
        }
    }

    fn build() -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(Some("edge_responses".to_owned()), None)?;
        let register =
            |collector: Box<dyn prometheus::core::Collector>| registry.register(collector);

        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests answered, by route template, method and status (499: the client went away before the response head)",
            ),
            &["route", "method", "status"],
        )?;
        register(Box::new(requests.clone()))?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's arrival to the end of its response body",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        register(Box::new(request_duration.clone()))?;
        let first_byte = HistogramVec::new(
            HistogramOpts::new(
                "time_to_first_byte_seconds",
                "Time from a request's arrival to the first byte of its response body",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        register(Box::new(first_byte.clone()))?;

        let backend_requests = IntCounterVec::new(
            Opts::new(
                "backend_requests_total",
                "Outbound HTTP requests of the component, by response status, or by failure (timeout, refused, cancelled, other)",
            ),
            &["status"],
        )?;
        register(Box::new(backend_requests.clone()))?;
        let backend_duration = Histogram::with_opts(
            HistogramOpts::new(
                "backend_request_duration_seconds",
                "Time from sending an outbound request to the end of its response body, or to its failure",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
        )?;
        register(Box::new(backend_duration.clone()))?;

        let keyvalue_calls = IntCounterVec::new(
            Opts::new(
                "keyvalue_operations_total",
                "wasi:keyvalue calls made by the component, by operation",
            ),
            &["op"],
        )?;
        register(Box::new(keyvalue_calls.clone()))?;
        let keyvalue_errors = IntCounterVec::new(
            Opts::new(
                "keyvalue_errors_total",
                "wasi:keyvalue calls the store failed, by operation",
            ),
            &["op"],
        )?;
        register(Box::new(keyvalue_errors.clone()))?;
        let keyvalue_duration = HistogramVec::new(
            HistogramOpts::new(
                "keyvalue_operation_duration_seconds",
                "Time the key-value store took for a call, by operation",
            )
            .buckets(KEYVALUE_BUCKETS.to_vec()),
            &["op"],
        )?;
        register(Box::new(keyvalue_duration.clone()))?;

        let instances_in_use = IntGauge::new(
            "instances_in_use",
            "Component instances alive now (serving a request or finishing background work)",
        )?;
        register(Box::new(instances_in_use.clone()))?;
        let requests_waiting =
            IntGauge::new("requests_waiting", "Requests waiting for a free instance")?;
        register(Box::new(requests_waiting.clone()))?;
        let instance_limit = IntGauge::new(
            "instance_limit",
            "How many component instances may be alive at once",
        )?;
        register(Box::new(instance_limit.clone()))?;

        let first_token = HistogramVec::new(
            HistogramOpts::new(
                "time_to_first_token_seconds",
                "Time from a request's arrival to its first delta event (text, reasoning or tool call arguments), streams and WebSocket turns only",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        register(Box::new(first_token.clone()))?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "tokens_total",
                "Tokens of created responses, by model and direction (input, output)",
            ),
            &["model", "direction"],
        )?;
        register(Box::new(tokens.clone()))?;

        let by_route =
            |vec: &HistogramVec| Route::ALL.map(|r| vec.with_label_values(&[r.as_str()]));
        let keyvalue = KvOp::ALL.map(|op| KeyValueOp {
            calls: keyvalue_calls.with_label_values(&[op.name()]),
            errors: keyvalue_errors.with_label_values(&[op.name()]),
            duration: keyvalue_duration.with_label_values(&[op.name()]),
        });
        Ok(Metrics {
            enabled: true,
            request_duration: by_route(&request_duration),
            first_byte: by_route(&first_byte),
            first_token: by_route(&first_token),
            tokens,
            models: Mutex::new(HashSet::new()),
            registry,
            requests,
            backend_requests,
            backend_duration,
            keyvalue,
            instances_in_use,
            requests_waiting,
            instance_limit,
        })
    }

    /// Records an answered request: its status, and the time to the end of
    /// its body and to its first byte.
    pub(crate) fn request(
        &self,
        route: Route,
        method: &'static str,
        status: u16,
        duration: Duration,
        first_byte: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let mut digits = [0u8; 5];
        self.requests
            .with_label_values(&[route.as_str(), method, status_label(status, &mut digits)])
            .inc();
        self.request_duration[route as usize].observe(duration.as_secs_f64());
        self.first_byte[route as usize].observe(first_byte.as_secs_f64());
    }

    /// Records a stream's time to its first token.
    pub(crate) fn first_token(&self, route: Route, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        self.first_token[route as usize].observe(elapsed.as_secs_f64());
    }

    /// Counts the tokens of a created response of `model`.
    pub(crate) fn tokens(&self, model: &str, input: u64, output: u64) {
        if !self.enabled {
            return;
        }
        let model = {
            let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
            if models.contains(model) || models.len() < MAX_MODELS {
                models.insert(model.to_owned());
                model
            } else {
                "other"
            }
        };
        for (direction, count) in [("input", input), ("output", output)] {
            self.tokens
                .with_label_values(&[model, direction])
                .inc_by(count);
        }
    }

    /// Counts an outbound request by its response status or failure kind.
    pub(crate) fn backend_request(&self, status: &str) {
        if !self.enabled {
            return;
        }
        self.backend_requests.with_label_values(&[status]).inc();
    }

    /// Records how long an outbound request took, to the end of its body.
    pub(crate) fn backend_duration(&self, duration: Duration) {
        if !self.enabled {
            return;
        }
        self.backend_duration.observe(duration.as_secs_f64());
    }

    /// Counts a key-value call.
    pub(crate) fn keyvalue_call(&self, op: KvOp) {
        if !self.enabled {
            return;
        }
        self.keyvalue[op as usize].calls.inc();
    }

    /// Records a key-value call's time in the store, and whether it failed.
    pub(crate) fn keyvalue_done(&self, op: KvOp, duration: Duration, failed: bool) {
        if !self.enabled {
            return;
        }
        let handles = &self.keyvalue[op as usize];
        handles.duration.observe(duration.as_secs_f64());
        if failed {
            handles.errors.inc();
        }
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics failed: {err}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `status` in decimal, written into `digits`: no allocation per request.
fn status_label(status: u16, digits: &mut [u8; 5]) -> &str {
    let mut rest = status;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    std::str::from_utf8(&digits[start..]).unwrap_or("0")
}

/// Serves `GET /metrics` from `listener` until `stop` fires (or its sender
/// is dropped). Anything else is a 404.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: oneshot::Receiver<()>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let metrics = metrics.clone();
                    let service = service_fn(move |request| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(%peer, "metrics connection closed with an error: {err}");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!("accepting a metrics connection failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, prometheus::TEXT_FORMAT, metrics.text())
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Not found: metrics are at GET /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted_by_model_up_to_a_bound() {
        let metrics = Metrics::new();
        metrics.tokens("m", 3, 5);
        metrics.tokens("m", 1, 1);
        for i in 0..MAX_MODELS + 10 {
            metrics.tokens(&format!("model-{i}"), 1, 2);
        }
        let text = metrics.text();
        assert!(
            text.contains(r#"edge_responses_tokens_total{direction="input",model="m"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edge_responses_tokens_total{direction="output",model="m"} 6"#),
            "{text}"
        );
        // `m` and 63 others have series; the 11 after them count as one.
        assert!(
            text.contains(r#"edge_responses_tokens_total{direction="output",model="other"} 22"#),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("edge_responses_tokens_total{"))
            .count();
        assert_eq!(series, 2 * (MAX_MODELS + 1));
        Metrics::disabled().tokens("m", 1, 1);
    }

    #[test]
    fn status_labels_are_decimal() {
        let mut digits = [0u8; 5];
        assert_eq!(status_label(200, &mut digits), "200");
        assert_eq!(status_label(0, &mut digits), "0");
        assert_eq!(status_label(65535, &mut digits), "65535");
    }

    #[test]
    fn recorded_values_show_in_the_text() {
        let metrics = Metrics::new();
        metrics.request(
            Route::Response,
            "GET",
            404,
            Duration::from_millis(3),
            Duration::from_millis(2),
        );
        metrics.backend_request("timeout");
        metrics.backend_duration(Duration::from_secs(1));
        metrics.keyvalue_call(KvOp::GetMany);
        metrics.keyvalue_done(KvOp::GetMany, Duration::from_micros(40), true);
        metrics.instances_in_use.inc();
        let text = metrics.text();
        for expected in [
            r#"edge_responses_requests_total{method="GET",route="/v1/responses/{id}",status="404"} 1"#,
            r#"edge_responses_request_duration_seconds_count{route="/v1/responses/{id}"} 1"#,
            r#"edge_responses_time_to_first_byte_seconds_count{route="/v1/responses/{id}"} 1"#,
            r#"edge_responses_request_duration_seconds_count{route="/v1/responses"} 0"#,
            r#"edge_responses_backend_requests_total{status="timeout"} 1"#,
            "edge_responses_backend_request_duration_seconds_count 1",
            r#"edge_responses_keyvalue_operations_total{op="get_many"} 1"#,
            r#"edge_responses_keyvalue_errors_total{op="get_many"} 1"#,
            r#"edge_responses_keyvalue_operation_duration_seconds_count{op="get_many"} 1"#,
            r#"edge_responses_keyvalue_operations_total{op="get"} 0"#,
            "edge_responses_instances_in_use 1",
            "edge_responses_requests_waiting 0",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "{expected}\n{text}"
            );
        }
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let metrics = Metrics::disabled();
        assert!(!metrics.enabled && Metrics::new().enabled);
        metrics.request(
            Route::Models,
            "GET",
            200,
            Duration::from_millis(3),
            Duration::from_millis(2),
        );
        metrics.backend_request("200");
        metrics.backend_duration(Duration::from_secs(1));
        metrics.keyvalue_call(KvOp::Get);
        metrics.keyvalue_done(KvOp::Get, Duration::from_micros(40), true);
        let text = metrics.text();
        assert!(!text.contains(r#"status="200""#), "{text}");
        for unchanged in [
            r#"edge_responses_request_duration_seconds_count{route="/v1/models"} 0"#,
            "edge_responses_backend_request_duration_seconds_count 0",
            r#"edge_responses_keyvalue_operations_total{op="get"} 0"#,
            r#"edge_responses_keyvalue_errors_total{op="get"} 0"#,
        ] {
            assert!(
                text.lines().any(|line| line == unchanged),
                "{unchanged}\n{text}"
            );
        }
    }

    #[test]
    fn registries_are_per_server() {
        let (first, second) = (Metrics::new(), Metrics::new());
        first.backend_request("200");
        assert!(first
            .text()
            .contains(r#"backend_requests_total{status="200"} 1"#));
        assert!(!second.text().contains(r#"status="200""#));
    }
}
