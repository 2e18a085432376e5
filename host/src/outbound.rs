//! Outbound HTTP: the requests guests send through
//! `wasi:http/outgoing-handler` (the component's calls to its
//! chat-completions backend) go through one process-wide pool of keep-alive
//! HTTP/1.1 connections, instead of a fresh TCP connection and TLS session
//! per request as with wasmtime's `default_send_request`.
//!
//! This module owns that pool: the client and its connector (TCP, plus TLS
//! with rustls, the ring provider and the webpki roots for `https`), the
//! guest's request options (connect, first-byte and between-bytes timeouts),
//! and turning failures into the same `wasi:http` errors the default sender
//! gives, so guests see no difference but the saved connects.
//!
//! A connection goes back to the pool once its response body has been read
//! to the end; a guest that drops a body early, or gives up waiting, closes
//! that connection instead.
//!
//! Every request is counted in the server's metrics (by response status or
//! kind of failure) and timed to the end of its response body, and tallied
//! in the log record of the request the instance serves. When that request
//! is traced, the outbound request is a span of its own, named in the
//! `traceparent` header it is sent with (see `trace`).
//!
//! The host's own requests (trace exports, readiness probes) use the same
//! pool through [`send_whole`] and [`probe`], unrecorded.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::pki_types::{InvalidDnsNameError, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::admission::MAX_INSTANCES;
use crate::exchange::{BackendStatus, Exchange};
use crate::metrics::Metrics;
use crate::trace::OutboundSpan;

/// How long an unused connection stays in the pool: under the 5 s after
/// which common model servers (uvicorn, so vLLM; Node) close an idle
/// keep-alive connection, so a request never races a server-side close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Unused connections kept per backend (scheme, host and port): as many as
/// the largest instance pool has instances. No more requests than instances
/// can be in flight, so a burst that uses every instance leaves all its
/// connections for the next one; [`IDLE_TIMEOUT`] closes them after it.
const MAX_IDLE_PER_BACKEND: usize = MAX_INSTANCES as usize;

/// Each timeout the guest leaves unset, as in wasmtime's default sender.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Stands in for deadlines too far away to represent.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

type Pool = Client<Connector, WasiBody>;

/// The future wasmtime runs alongside a response. The default sender drives
/// its connection in it; pooled connections run on tasks of their own, so
/// here it has nothing to do.
type ConnectionTask = Box<dyn Future<Output = Result<(), Error>> + Send>;

type SendFuture =
    Box<dyn Future<Output = Result<(Response<WasiBody>, ConnectionTask), Error>> + Send>;

tokio::task_local! {
    /// The connect timeout of the request being sent.
    ///
    /// The pool, not the request, asks the connector for a connection, and
    /// it hands the connector only the destination, so the guest's connect
    /// timeout travels in this task-local instead. The connector reads it when
    /// the pool calls it, which happens while [`send`] polls the request,
    /// inside the scope; the connect future keeps the value, so a connect
    /// that outlives its request (an idle connection came free first) still
    /// ends on time and then joins the pool. A timeout around the whole
    /// request could not tell a slow connect (`connection-timeout`) from a
    /// slow answer (`connection-read-timeout`), and one pool per timeout
    /// value would split the connections between guests that set different
    /// values.
    static CONNECT_TIMEOUT: Duration;
}

/// `wasi:http` hooks that send outbound requests through the shared pool,
/// and record them; every other hook keeps its default.
pub(crate) struct Outbound {
    metrics: Arc<Metrics>,
    exchange: Option<Arc<Exchange>>,
}

impl Outbound {
    /// The hooks of an instance serving `exchange` (none: a typed call).
    pub(crate) fn new(metrics: Arc<Metrics>, exchange: Option<Arc<Exchange>>) -> Self {
        Self { metrics, exchange }
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        // `fut` tells how the guest's handling of the response ended; like
        // the default sender, this one has no use for it.
        drop(fut);
        let span = self
            .exchange
            .as_ref()
            .and_then(|exchange| exchange.trace())
            .map(|trace| trace.outbound(&mut request));
        let call = Call::start(self.metrics.clone(), self.exchange.clone(), span);
        Box::new(async move {
            let mut call = call;
            match send(request, Timeouts::new(options)).await {
                Ok(response) => {
                    call.status(BackendStatus::Code(response.status().as_u16()));
                    let response = response.map(|body| {
                        CallBody {
                            inner: body,
                            _call: call,
                        }
                        .boxed_unsync()
                    });
                    let task: ConnectionTask = Box::new(async { Ok(()) });
                    Ok((response, task))
                }
                Err(err) => {
                    call.status(BackendStatus::Failed(failure_kind(&err)));
                    Err(err)
                }
            }
        })
    }
}

/// One outbound request being recorded: counted by status once its head
/// (or failure) is known, and timed until it is dropped, which is when its
/// response body has been read or dropped, or at once for a failure. Its
/// span, if traced, ends then too.
struct Call {
    metrics: Arc<Metrics>,
    exchange: Option<Arc<Exchange>>,
    span: Option<OutboundSpan>,
    started: std::time::Instant,
    counted: bool,
}

impl Call {
    fn start(
        metrics: Arc<Metrics>,
        exchange: Option<Arc<Exchange>>,
        span: Option<OutboundSpan>,
    ) -> Self {
        if let Some(exchange) = &exchange {
            exchange.backend_call();
        }
        Call {
            metrics,
            exchange,
            span,
            started: std::time::Instant::now(),
            counted: false,
        }
    }

    fn status(&mut self, status: BackendStatus) {
        self.counted = true;
        match status {
            BackendStatus::Code(code) => self.metrics.backend_request(&code.to_string()),
            BackendStatus::Failed(kind) => self.metrics.backend_request(kind),
        }
        if let Some(span) = &mut self.span {
            match status {
                BackendStatus::Code(code) => span.status(code),
                BackendStatus::Failed(kind) => span.failed(kind),
            }
        }
        if let Some(exchange) = &self.exchange {
            exchange.backend_status(status);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.counted {
            // The guest stopped waiting for the response head.
            self.status(BackendStatus::Failed("cancelled"));
        }
        let took = self.started.elapsed();
        self.metrics.backend_duration(took);
        if let Some(exchange) = &self.exchange {
            exchange.backend_time(took);
        }
    }
}

/// A response body that ends its [`Call`] when it is dropped.
struct CallBody {
    inner: WasiBody,
    _call: Call,
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The metric label of a request that got no response: `timeout`,
/// `refused`, or `other`.
fn failure_kind(err: &Error) -> &'static str {
    match err {
        Error::ConnectionTimeout
        | Error::ConnectionReadTimeout
        | Error::ConnectionWriteTimeout
        | Error::HttpResponseTimeout
        | Error::DnsTimeout => "timeout",
        Error::ConnectionRefused => "refused",
        Error::Connect(io) if io.kind() == io::ErrorKind::ConnectionRefused => "refused",
        _ => "other",
    }
}

/// Longest wait for the backend in a readiness check.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The status `GET url` answers with, through the shared pool, within
/// [`PROBE_TIMEOUT`] (to the response head). Not recorded in any metric.
pub(crate) async fn probe(url: &str) -> Result<u16, String> {
    let request = Request::get(url)
        .body(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|err| format!("invalid URL: {err}"))?;
    let timeouts = Timeouts {
        connect: PROBE_TIMEOUT,
        first_byte: PROBE_TIMEOUT,
        between_bytes: PROBE_TIMEOUT,
    };
    match send(request, timeouts).await {
        // The body is dropped unread: that connection closes.
        Ok(response) => Ok(response.status().as_u16()),
        Err(Error::ConnectionReadTimeout | Error::ConnectionTimeout) => {
            Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// Most of a response body [`send_whole`] reads.
const MAX_WHOLE_BODY: usize = 4 << 20;

/// Sends `request` through the shared pool and reads its response whole
/// (up to 4 MiB), all within `timeout`: the host's own requests (trace
/// exports). Not recorded in any metric, nor traced.
pub(crate) async fn send_whole(
    request: Request<Bytes>,
    timeout: Duration,
) -> anyhow::Result<Response<Bytes>> {
    let request = request.map(|body| {
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync()
    });
    let timeouts = Timeouts {
        connect: timeout,
        first_byte: timeout,
        between_bytes: timeout,
    };
    let round_trip = async {
        let response = send(request, timeouts).await?;
        let (head, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_WHOLE_BODY)
            .collect()
            .await
            .map_err(|err| anyhow::anyhow!("reading the response: {err}"))?;
        Ok(Response::from_parts(head, body.to_bytes()))
    };
    match tokio::time::timeout(timeout, round_trip).await {
        Ok(result) => result,
        Err(_elapsed) => anyhow::bail!("no answer within {} ms", timeout.as_millis()),
    }
}

/// The guest's timeouts, defaults filled in.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn new(options: Option<RequestOptions>) -> Self {
        let options = options.unwrap_or_default();
        Self {
            connect: options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
            first_byte: options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT),
            between_bytes: options.between_bytes_timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

/// Sends `request` (its URI absolute, as the pool needs it) on a pooled
/// connection and waits for the response head.
///
/// The first-byte timeout runs from the moment the request is handed to the
/// pool: the pool does not say whether a request waits for a new connection.
/// On a pooled connection that is the moment the request goes out; when a
/// new connection is needed, its connect (bounded by the connect timeout)
/// counts against the first-byte time too.
async fn send(request: Request<WasiBody>, timeouts: Timeouts) -> Result<Response<WasiBody>, Error> {
    if request.uri().authority().is_none() {
        return Err(Error::HttpRequestUriInvalid);
    }
    let pending = CONNECT_TIMEOUT.scope(timeouts.connect, pool().request(request));
    let response = match tokio::time::timeout(timeouts.first_byte, pending).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Err(request_error(&err)),
        Err(_elapsed) => return Err(Error::ConnectionReadTimeout),
    };
    Ok(response.map(|body| TimedBody::new(body, timeouts.between_bytes).boxed_unsync()))
}

/// The process-wide pool, created on first use.
///
/// Connections are driven by tasks on the tokio runtime that opened them.
/// Should that runtime end (tests run one per test), its connections close
/// with it, and the pool drops closed connections instead of handing them
/// out.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_BACKEND)
            .pool_timer(TokioTimer::new())
            // A pooled connection can turn out to be closed (the backend
            // restarted, or timed out the idle connection) only once the
            // request is handed to it. When the request had not been written
            // yet, sending it again on another connection is safe, and the
            // guest never sees the failure. (This is the default; a request
            // already written when the connection died fails as before.)
            .retry_canceled_requests(true)
            .build(Connector)
    })
}

/// The `wasi:http` error for a request the pool could not send, or whose
/// response head never came: what wasmtime's default sender reports for the
/// same failure.
fn request_error(err: &hyper_util::client::legacy::Error) -> Error {
    let source = std::error::Error::source(err);
    if let Some(failure) = source.and_then(|source| source.downcast_ref::<ConnectFailure>()) {
        return failure.to_wasi();
    }
    let carried = source
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .and_then(std::error::Error::source)
        .and_then(|cause| cause.downcast_ref::<ErrorCode>());
    if let Some(code) = carried {
        return Error::from(code.clone());
    }
    tracing::warn!("outbound request failed: {err:?}");
    Error::HttpProtocolError
}

/// Opens the pool's connections: TCP with Nagle's algorithm off (on a reused
/// connection, a request whose head and body go out in separate writes
/// would otherwise wait for the server's delayed ACK), and TLS for `https`.
#[derive(Debug, Clone, Copy)]
struct Connector;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT
            .try_with(|timeout| *timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect(&destination)).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_elapsed) => Err(ConnectFailure::Timeout),
            }
        })
    }
}

/// A new connection to `destination` (scheme and authority only).
async fn connect(destination: &Uri) -> Result<Stream, ConnectFailure> {
    let use_tls = destination.scheme() == Some(&Scheme::HTTPS);
    let address = host_and_port(destination, use_tls).ok_or(ConnectFailure::Destination)?;
    let tcp = TcpStream::connect(address.as_str())
        .await
        .map_err(ConnectFailure::Tcp)?;
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY to {address}: {err}");
    }
    if !use_tls {
        return Ok(Stream(Box::new(tcp)));
    }
    let name = server_name(destination)?;
    let tls = tls_connector()
        .map_err(|err| ConnectFailure::Tls(io::Error::other(err)))?
        .connect(name, tcp)
        .await
        .map_err(ConnectFailure::Tls)?;
    Ok(Stream(Box::new(tls)))
}

/// `host:port`, the scheme's port filled in when the URI has none.
fn host_and_port(destination: &Uri, use_tls: bool) -> Option<String> {
    let authority = destination.authority()?;
    if authority.port().is_some() {
        return Some(authority.to_string());
    }
    let port = if use_tls { 443 } else { 80 };
    Some(format!("{authority}:{port}"))
}

/// The name the server's certificate must carry: an IP address or a DNS
/// name.
fn server_name(destination: &Uri) -> Result<ServerName<'static>, ConnectFailure> {
    let host = destination.host().ok_or(ConnectFailure::Destination)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| ConnectFailure::ServerName)
}

/// The TLS client configuration every `https` connection shares, built on
/// the first one: the webpki roots and rustls's ring provider, which is what
/// wasmtime-wasi-http itself enables (naming it keeps a second provider
/// elsewhere in the build from making the choice ambiguous).
fn tls_connector() -> Result<&'static TlsConnector, rustls::Error> {
    static TLS: OnceLock<Result<TlsConnector, rustls::Error>> = OnceLock::new();
    TLS.get_or_init(|| {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Why the connector could not open a connection.
#[derive(Debug)]
enum ConnectFailure {
    /// The URI has no host.
    Destination,
    /// Resolving or connecting failed.
    Tcp(io::Error),
    /// The connect timeout passed.
    Timeout,
    /// The host is not a valid TLS server name.
    ServerName,
    /// The TLS handshake failed.
    Tls(io::Error),
}

impl ConnectFailure {
    /// The error wasmtime's default sender gives for the same failure. Its
    /// I/O errors keep their kind and message, which decide the guest's
    /// error code (refused, DNS, ...).
    fn to_wasi(&self) -> Error {
        let copy = |err: &io::Error| io::Error::new(err.kind(), err.to_string());
        match self {
            ConnectFailure::Destination => Error::HttpRequestUriInvalid,
            ConnectFailure::Tcp(err) => Error::Connect(copy(err)),
            ConnectFailure::Timeout => Error::ConnectionTimeout,
            ConnectFailure::ServerName => Error::InvalidDnsNameError(InvalidDnsNameError),
            ConnectFailure::Tls(err) => Error::Tls(copy(err)),
        }
    }
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Destination => formatter.write_str("the URI names no host"),
            ConnectFailure::Tcp(err) => write!(formatter, "connecting failed: {err}"),
            ConnectFailure::Timeout => formatter.write_str("connecting timed out"),
            ConnectFailure::ServerName => formatter.write_str("not a valid TLS server name"),
            ConnectFailure::Tls(err) => write!(formatter, "TLS handshake failed: {err}"),
        }
    }
}

impl std::error::Error for ConnectFailure {}

/// A pooled connection's byte stream: plain TCP or TLS over TCP.
struct Stream(Box<dyn Io>);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A response body that fails with `connection-read-timeout` when the next
/// frame takes longer than the between-bytes timeout, as the default
/// sender's does.
struct TimedBody {
    incoming: Incoming,
    between_bytes: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(incoming: Incoming, between_bytes: Duration) -> Self {
        Self {
            incoming,
            between_bytes,
            deadline: Box::pin(tokio::time::sleep_until(after(between_bytes))),
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline.as_mut().reset(after(this.between_bytes));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// `duration` from now, or a far-off instant when that cannot be
/// represented.
fn after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn get(url: &str) -> Request<WasiBody> {
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        Request::get(url).body(body).expect("request")
    }

    fn timeouts(connect: u64, first_byte: u64, between_bytes: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(connect),
            first_byte: Duration::from_millis(first_byte),
            between_bytes: Duration::from_millis(between_bytes),
        }
    }

    /// A loopback server that answers each connection's first request with
    /// `reply`, then holds the connection open.
    async fn server(reply: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(reply).await;
                    // Hold the connection open until the test ends.
                    std::future::pending::<()>().await;
                });
            }
        });
        addr
    }

    /// A loopback listener that never accepts, its accept queue filled:
    /// further connects get no answer at all. Keep the listener and the
    /// queued connections alive while the address is in use.
    async fn full_accept_queue() -> (std::net::SocketAddr, TcpListener, Vec<TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("address");
        let mut queued = Vec::new();
        for _ in 0..8 {
            let connect = TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(200), connect).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(err)) => panic!("connecting to {addr}: {err}"),
                Err(_elapsed) => return (addr, listener, queued),
            }
        }
        panic!("the accept queue of {addr} never filled up");
    }

    #[test]
    fn unset_timeouts_default_to_ten_minutes() {
        let set = RequestOptions {
            connect_timeout: Some(Duration::from_secs(1)),
            ..RequestOptions::default()
        };
        let timeouts = Timeouts::new(Some(set));
        assert_eq!(timeouts.connect, Duration::from_secs(1));
        assert_eq!(timeouts.first_byte, DEFAULT_TIMEOUT);
        assert_eq!(Timeouts::new(None).between_bytes, DEFAULT_TIMEOUT);
    }

    #[test]
    fn destinations_get_the_scheme_port_and_a_server_name() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        let address = |s: &str, tls| host_and_port(&uri(s), tls);
        assert_eq!(
            address("https://api.example", true).as_deref(),
            Some("api.example:443")
        );
        assert_eq!(
            address("http://api.example", false).as_deref(),
            Some("api.example:80")
        );
        assert_eq!(
            address("http://[::1]:8080", false).as_deref(),
            Some("[::1]:8080")
        );
        let name = |s: &str| server_name(&uri(s)).expect("server name");
        assert_eq!(
            name("https://[::1]:8443"),
            ServerName::from(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(
            name("https://127.0.0.1"),
            ServerName::from(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            name("https://api.example:8443"),
            ServerName::try_from("api.example").expect("name")
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port");
        let err = send(
            get(&format!("http://{closed}/")),
            timeouts(5_000, 5_000, 5_000),
        )
        .await
        .expect_err("nothing listens");
        assert!(
            matches!(&err, Error::Connect(io) if io.kind() == io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_connect_timeout_is_the_requests_own() {
        let (addr, _listener, _queued) = full_accept_queue().await;
        let url = format!("http://{addr}/");
        // Connecting hangs. With the request's connect timeout ignored, the
        // first-byte timeout would end it as a read timeout instead; each
        // timeout also holds for at least its own length.
        for connect in [100, 300] {
            let started = Instant::now();
            let err = send(get(&url), timeouts(connect, 10_000, 10_000))
                .await
                .expect_err("connecting hangs");
            assert!(matches!(err, Error::ConnectionTimeout), "{err:?}");
            assert!(started.elapsed() >= Duration::from_millis(connect));
        }
    }

    #[tokio::test]
    async fn no_response_head_is_a_read_timeout() {
        let addr = server(b"").await;
        let err = send(get(&format!("http://{addr}/")), timeouts(5_000, 100, 5_000))
            .await
            .expect_err("the server never answers");
        assert!(matches!(err, Error::ConnectionReadTimeout), "{err:?}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_read_timeout() {
        let addr =
            server(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n").await;
        let response = send(get(&format!("http://{addr}/")), timeouts(5_000, 5_000, 100))
            .await
            .expect("a response head");
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"abc"[..]));
        let stalled = body.frame().await.expect("an error frame");
        assert!(
            matches!(stalled, Err(Error::ConnectionReadTimeout)),
            "{stalled:?}"
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_server_is_a_tls_error() {
        let addr = server(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        let err = send(
            get(&format!("https://{addr}/")),
            timeouts(5_000, 5_000, 5_000),
        )
        .await
        .expect_err("not TLS");
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
    }
}
