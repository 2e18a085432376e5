//! Inbound HTTP: the accept loop, handing each request to a fresh instance of
//! the component's `wasi:http/incoming-handler`, and graceful shutdown.
//!
//! The response body is the channel the guest writes its `outgoing-body`
//! into, passed to hyper as is, so bytes reach the client as soon as the
//! guest flushes them (server-sent events rely on this). A request that
//! finds no free instance within the queue timeout gets a 503 with
//! `Retry-After`; failures before the guest has produced a response become
//! a 500; both with an OpenAI-shaped error body. Failures after that can
//! only cut the body short, and are logged.
//!
//! Every request gets a request id (`x-request-id`, see `request_id`),
//! passed to the component and returned to the client, and an [`Exchange`]
//! that records its metrics and writes its log line. `/healthz` and
//! `/readyz` are answered here (see `health`), without an instance. The
//! listener accepts connections while the component is still loading:
//! health checks are answered, other requests wait for the component.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::admission::{Overloaded, Slot};
use crate::engine::Runtime;
use crate::exchange::{Exchange, ObservedBody};
use crate::metrics::Metrics;
use crate::request_id;
use crate::route::Route;
use crate::socket::{self, Sockets};
use crate::trace::{self, Traces};

/// How long in-flight requests may run on after shutdown begins.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the accept loop serves: the component, once loaded, and the
/// server's metrics.
#[derive(Clone)]
pub(crate) struct Service {
    metrics: Arc<Metrics>,
    runtime: watch::Receiver<Option<Arc<Runtime>>>,
    sockets: Sockets,
    /// Each request's server span starts here, when traces are exported.
    traces: Option<Arc<Traces>>,
}

impl Service {
    /// A service for the component `runtime` will hold once it is loaded
    /// (a sender dropped without a runtime: loading failed).
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        runtime: watch::Receiver<Option<Arc<Runtime>>>,
        sockets: Sockets,
        traces: Option<Arc<Traces>>,
    ) -> Self {
        Self {
            metrics,
            runtime,
            sockets,
            traces,
        }
    }

    /// The component, if it has loaded.
    fn loaded(&self) -> Option<Arc<Runtime>> {
        self.runtime.borrow().clone()
    }

    /// The component, once it has loaded; `None` if loading failed.
    async fn runtime(&self) -> Option<Arc<Runtime>> {
        if let Some(runtime) = self.loaded() {
            return Some(runtime);
        }
        let mut loading = self.runtime.clone();
        let loaded = loading.wait_for(Option::is_some).await.ok()?;
        loaded.clone()
    }
}

/// Serves connections from `listener` until `stop` fires (or its sender is
/// dropped), then tells WebSocket connections through `sockets_stop` and
/// waits up to [`SHUTDOWN_GRACE`] for open HTTP connections.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Service,
    stop: oneshot::Receiver<()>,
    sockets_stop: watch::Sender<bool>,
) {
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, as before; the `auto` builder because its connections
    // can be both upgraded (WebSocket mode) and shut down gracefully.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    let builder = Arc::new(builder);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Event streams are many small writes: without this,
                    // Nagle's algorithm holds each one back until the
                    // client's delayed ACK (~40 ms).
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY on {peer}: {err}");
                    }
                    let local = stream.local_addr().ok();
                    let service = service.clone();
                    let service = service_fn(move |request| {
                        let service = service.clone();
                        async move {
                            Ok::<_, Infallible>(handle(&service, request, peer, local).await)
                        }
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(err) = watcher.watch(connection).await {
                            tracing::debug!(%peer, "connection closed with an error: {err}");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!("accepting a connection failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    sockets_stop.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: gave up waiting for in-flight requests");
    }
}

/// The response to one request, with its `x-request-id`, its body observed
/// by the request's [`Exchange`]; never fails, errors become 500s.
async fn handle(
    service: &Service,
    request: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<HyperOutgoingBody> {
    let id = request_id::for_request(request.headers().get_all(request_id::HEADER).iter());
    let exchange = Exchange::traced(
        service.metrics.clone(),
        id,
        request.method().clone(),
        request.uri().path(),
        service.traces.as_deref(),
        request.headers(),
    );
    let mut response = match exchange.route() {
        route @ (Route::Healthz | Route::Readyz) => {
            let query = request.uri().query();
            crate::health::answer(route, request.method(), query, service.loaded()).await
        }
        _ if socket::wants_upgrade(&request) => match service.runtime().await {
            Some(runtime) => socket::accept(runtime, service.sockets.clone(), request).await,
            None => unloaded(),
        },
        _ => call_component(service, request, &exchange, peer, local).await,
    };
    if let Ok(value) = HeaderValue::from_str(exchange.request_id()) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    // An error the host answered itself names the request, as the
    // component's errors do.
    if let Some(HostError(mut body)) = response.extensions_mut().remove::<HostError>() {
        body["request_id"] = serde_json::Value::from(exchange.request_id());
        *response.body_mut() = full_body(body.to_string().into());
    }
    exchange.respond(response.status().as_u16());
    let event_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    response.map(|body| ObservedBody::new(body, exchange, event_stream).boxed_unsync())
}

/// The component's response to `request`, once an instance is free.
async fn call_component(
    service: &Service,
    mut request: Request<Incoming>,
    exchange: &Arc<Exchange>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<HyperOutgoingBody> {
    let request_id = exchange.request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(runtime) = service.runtime().await else {
        return unloaded();
    };
    let slot = match runtime.instance_slot().await {
        Ok(slot) => slot,
        Err(overloaded) => {
            tracing::warn!(request_id, %method, %path, "turned away: {overloaded}");
            return overloaded_response(overloaded);
        }
    };
    // The component reads the id the client gets back (an invalid one sent
    // by the client is replaced).
    if let Ok(value) = HeaderValue::from_str(request_id) {
        request.headers_mut().insert(request_id::HEADER, value);
    }
    add_routing_headers(&mut request, peer, local);
    match run_handler(&runtime, request, slot, exchange.clone()).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(request_id, %method, %path, "request failed: {err:#}");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
                None,
            )
        }
    }
}

/// Instantiates the component and calls its `incoming-handler` on a task of
/// its own, which keeps running (writing the body) after the response head
/// has been returned, and holds the instance `slot` until it ends.
async fn run_handler(
    runtime: &Runtime,
    request: Request<Incoming>,
    slot: Slot,
    exchange: Arc<Exchange>,
) -> anyhow::Result<Response<HyperOutgoingBody>> {
    // The guest's key-value calls find the request's trace in its task.
    let trace = exchange.trace().cloned();
    let mut store = runtime.new_store(Some(exchange));
    let (sender, receiver) = oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request.map(Drained::new))?;
    let outparam = store.data_mut().http().new_response_outparam(sender)?;
    let proxy = runtime.proxy().clone();
    let guest: JoinHandle<anyhow::Result<()>> = tokio::spawn(trace::within(trace, async move {
        let handled: anyhow::Result<()> = async {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, outparam)
                .await?;
            Ok(())
        }
        .await;
        // The instance goes (flushing its stderr into the request's log
        // record) before its slot is free for another.
        drop(store);
        drop(slot);
        handled
    }));
    match receiver.await {
        Ok(Ok(response)) => {
            tokio::spawn(log_guest_outcome(guest));
            Ok(response)
        }
        Ok(Err(code)) => {
            tokio::spawn(log_guest_outcome(guest));
            Err(anyhow!("the component answered with error code {code:?}"))
        }
        Err(_) => Err(guest_failure(guest).await),
    }
}

/// Most of an unread request body drained after the guest is done with it.
const DRAIN_BYTES: u64 = 256 << 20;
/// Longest a request body is drained after the guest is done with it.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request body as the guest reads it. Dropped before its end (the guest
/// answered without reading all of it: a 413, a 401), the rest is read and
/// thrown away on a task of its own, up to [`DRAIN_BYTES`] or for
/// [`DRAIN_TIME`]: closing a connection with unread bytes makes the kernel
/// reset it, and a client still sending would lose the answer (hyper gives
/// up draining at once). Nothing is kept, so memory stays flat; the
/// instance is free as soon as the guest is done.
struct Drained(Option<Incoming>);

impl Drained {
    fn new(body: Incoming) -> Self {
        Drained(Some(body))
    }
}

impl Body for Drained {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.0.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .as_ref()
            .map(|body| body.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take().filter(|body| !Body::is_end_stream(body)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |data| data.len() as u64);
                    if read > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

/// Why the guest finished without setting a response.
async fn guest_failure(guest: JoinHandle<anyhow::Result<()>>) -> anyhow::Error {
    match guest.await {
        Ok(Ok(())) => anyhow!("the component returned without setting a response"),
        Ok(Err(err)) => err.context("the component failed before responding"),
        Err(err) => anyhow::Error::new(err).context("the component's task failed"),
    }
}

/// Logs a guest that fails after its response head went out; its body has
/// been cut short.
async fn log_guest_outcome(guest: JoinHandle<anyhow::Result<()>>) {
    match guest.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!("the component failed while streaming a response: {err:#}"),
        Err(err) => tracing::error!("the component's task failed: {err}"),
    }
}

/// Fills in what the guest expects to find on every request: a `Host`, and
/// the `spin-*` routing headers `spin up` sets for a component on the
/// catch-all route `/...`.
fn add_routing_headers(
    request: &mut Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    if !request.headers().contains_key(HOST) && request.uri().authority().is_none() {
        if let Some(value) = local.and_then(|addr| HeaderValue::from_str(&addr.to_string()).ok()) {
            request.headers_mut().insert(HOST, value);
        }
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let path = request.uri().path().to_owned();
    let headers = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", path),
        ("spin-matched-route", "/...".to_owned()),
        ("spin-raw-component-route", "/...".to_owned()),
        ("spin-component-route", String::new()),
        ("spin-base-path", "/".to_owned()),
        ("spin-client-addr", peer.to_string()),
    ];
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
}

/// The answer to a request that found no free instance in time: 503, with
/// `Retry-After` in seconds and the error code `server_overloaded`.
pub(crate) fn overloaded_response(overloaded: Overloaded) -> Response<HyperOutgoingBody> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        OVERLOADED_MESSAGE,
        Some("server_overloaded"),
    );
    let seconds = overloaded.retry_after.as_secs().max(1);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// What a turned-away client is told.
pub(crate) const OVERLOADED_MESSAGE: &str =
    "The server is handling as many requests as it can. Please retry after the delay in the Retry-After header.";

/// The answer while the component could not be loaded.
fn unloaded() -> Response<HyperOutgoingBody> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server could not load its component.",
        None,
    )
}

/// A response with OpenAI's error envelope (`type` `server_error`).
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    code: Option<&str>,
) -> Response<HyperOutgoingBody> {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "server_error",
        "param": null,
        "code": code,
    }});
    json_response(status, &body)
}

/// An error envelope the host answered with, kept beside its body so that
/// [`handle`] can add the request's id.
#[derive(Clone)]
struct HostError(serde_json::Value);

/// A JSON error answer (OpenAI's envelope).
pub(crate) fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(full_body(body.to_string().into()));
    response.extensions_mut().insert(HostError(body.clone()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A body of `bytes`.
pub(crate) fn full_body(bytes: Bytes) -> HyperOutgoingBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Binds `addr`, with context naming the address on failure.
/// Connections the kernel queues for `accept`: a burst of thousands of
/// clients connecting at once (a load balancer's warm-up, a fleet of
/// agents) is queued rather than dropped into SYN retries, which the
/// default of 128 does past 128.
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .with_context(|| format!("binding {addr}"))?;
    socket
        .set_reuseaddr(true)
        .and_then(|()| socket.bind(addr))
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .with_context(|| format!("binding {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_body<B>(response: Response<B>) -> serde_json::Value
    where
        B: hyper::body::Body,
        B::Error: std::fmt::Debug,
    {
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&body).expect("JSON")
    }

    #[tokio::test]
    async fn error_body_is_an_openai_error_envelope() {
        let response = error_response(StatusCode::INTERNAL_SERVER_ERROR, "it \"broke\"", None);
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            json_body(response).await,
            serde_json::json!({"error": {
                "message": "it \"broke\"",
                "type": "server_error",
                "param": null,
                "code": null,
            }})
        );
    }

    #[tokio::test]
    async fn overloaded_is_a_503_to_retry_later() {
        let overloaded = Overloaded {
            retry_after: Duration::from_secs(10),
        };
        let response = overloaded_response(overloaded);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "10");
        let json = json_body(response).await;
        assert_eq!(json["error"]["code"], "server_overloaded");
        assert_eq!(json["error"]["type"], "server_error");
        assert_eq!(json["error"]["param"], serde_json::Value::Null);
    }
}
