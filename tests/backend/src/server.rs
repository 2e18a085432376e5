//! The HTTP server: [`Backend`] binds a loopback port, accepts (and counts)
//! keep-alive HTTP/1.1 connections, records every request, routes it, and
//! answers chat completions from the reply queue.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::body::ScriptBody;
use crate::record::RecordedRequest;
use crate::render::{error_body, RequestInfo};
use crate::reply::Reply;
use crate::respond::{json_response, respond, Outcome};

/// The model list served by `GET /v1/models` until changed.
pub const DEFAULT_MODEL: &str = "test-model";

/// Pause after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A running scripted backend. Dropping it (or [`Backend::shutdown`]) stops
/// the server and closes its connections.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    runner: Runner,
}

/// Where the server runs.
enum Runner {
    /// A task on the runtime that started the backend.
    Task(JoinHandle<()>),
    /// A thread with its own runtime; the receiver fires once it has ended.
    Thread(oneshot::Receiver<()>),
}

/// State shared between the [`Backend`] handle and the connections.
struct Shared {
    state: Mutex<State>,
    recorded: watch::Sender<usize>,
    connections: AtomicUsize,
}

struct State {
    queue: VecDeque<Reply>,
    default_reply: Reply,
    models: Vec<String>,
    log: Vec<RecordedRequest>,
    recording: bool,
}

impl Backend {
    /// Starts a backend on `127.0.0.1` with a free port. Inside a tokio
    /// runtime it is spawned on that runtime; elsewhere it gets a thread of
    /// its own (see [`Backend::start_in_thread`]).
    pub fn start() -> anyhow::Result<Backend> {
        Backend::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Like [`Backend::start`], on the given loopback address.
    pub fn start_on(addr: SocketAddr) -> anyhow::Result<Backend> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Backend::start_in_thread_on(addr);
        }
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let (stop, stopped) = oneshot::channel();
        let listener = TcpListener::from_std(listener)?;
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(Backend {
            addr,
            shared,
            stop: Some(stop),
            runner: Runner::Task(task),
        })
    }

    /// Starts a backend on `127.0.0.1` with a free port, served by a thread
    /// with its own runtime. Use it when the test blocks its runtime thread
    /// (for example with synchronous HTTP calls), which would starve a
    /// backend spawned on that runtime.
    pub fn start_in_thread() -> anyhow::Result<Backend> {
        Backend::start_in_thread_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Like [`Backend::start_in_thread`], on the given loopback address.
    pub fn start_in_thread_on(addr: SocketAddr) -> anyhow::Result<Backend> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let (stop, stopped) = oneshot::channel();
        let (ended, ended_signal) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the backend runtime")?;
        let thread_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("scripted-backend-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(listener) = TcpListener::from_std(listener) {
                        serve(listener, thread_shared, stopped).await;
                    }
                });
                drop(runtime);
                let _ = ended.send(());
            })
            .context("spawning the backend thread")?;
        Ok(Backend {
            addr,
            shared,
            stop: Some(stop),
            runner: Runner::Thread(ended_signal),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients configure: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply; each chat-completions request takes the oldest one.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().queue.push_back(reply);
    }

    /// Queues several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().queue.extend(replies);
    }

    /// How many queued replies have not been used yet.
    pub fn pending_replies(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The reply used when the queue is empty (initially [`Reply::echo`]).
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default_reply = reply;
    }

    /// The model ids `GET /v1/models` lists; the first one also stands in
    /// for a request that names no model.
    pub fn set_models<I, S>(&self, models: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.shared.lock().models = models.into_iter().map(Into::into).collect();
    }

    /// Turns the request log on (the default) or off; off keeps memory flat
    /// for long benchmark runs.
    pub fn set_recording(&self, recording: bool) {
        self.shared.lock().recording = recording;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// The `POST /v1/chat/completions` requests received so far.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|request| is_chat_completions(request))
            .cloned()
            .collect()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().log.last().cloned()
    }

    /// How many requests the log holds.
    pub fn request_count(&self) -> usize {
        self.shared.lock().log.len()
    }

    /// How many TCP connections the server has accepted so far; clients that
    /// keep connections alive make fewer than requests.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        let mut state = self.shared.lock();
        state.log.clear();
        self.shared.recorded.send_replace(0);
    }

    /// Waits until the log holds at least `count` requests.
    pub async fn wait_for_requests(&self, count: usize) {
        let mut recorded = self.shared.recorded.subscribe();
        // The sender lives in `self.shared`, so the wait cannot fail.
        let _ = recorded.wait_for(|recorded| *recorded >= count).await;
    }

    /// Stops the server and waits until its port and connections are
    /// closed.
    pub async fn shutdown(mut self) {
        self.stop.take();
        match &mut self.runner {
            Runner::Task(task) => {
                task.abort();
                let _ = task.await;
            }
            Runner::Thread(ended) => {
                let _ = ended.await;
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.take();
        if let Runner::Task(task) = &self.runner {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Backend")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn new() -> Self {
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                default_reply: Reply::echo(),
                models: vec![DEFAULT_MODEL.to_string()],
                log: Vec::new(),
                recording: true,
            }),
            recorded: watch::Sender::new(0),
            connections: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: &RecordedRequest) {
        let mut state = self.lock();
        if state.recording {
            state.log.push(request.clone());
            self.recorded.send_replace(state.log.len());
        }
    }

    fn next_reply(&self) -> Reply {
        let mut state = self.lock();
        match state.queue.pop_front() {
            Some(reply) => reply,
            None => state.default_reply.clone(),
        }
    }

    fn models(&self) -> Vec<String> {
        self.lock().models.clone()
    }

    fn default_model(&self) -> String {
        self.lock()
            .models
            .first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_MODEL.to_string())
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<StdListener> {
    if !addr.ip().is_loopback() {
        bail!("refusing to listen on {addr}: only loopback addresses are allowed");
    }
    let listener = StdListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accepts connections until `stop` fires or its sender is dropped; the
/// connections end with it.
async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nodelay(true);
                        connections.spawn(connection(TokioIo::new(stream), Arc::clone(&shared)));
                    }
                    // Out of file descriptors or similar: back off instead of spinning.
                    Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(io: TokioIo<tokio::net::TcpStream>, shared: Arc<Shared>) {
    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
}

/// Records a request, then answers it. An `Err` closes the connection
/// without a response.
async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ScriptBody>, ConnectionClosed> {
    let (parts, body) = request.into_parts();
    let raw = body
        .collect()
        .await
        .map_err(|_| ConnectionClosed)?
        .to_bytes();
    let recorded = RecordedRequest::new(&parts, raw.to_vec());
    shared.record(&recorded);
    let outcome = match (&parts.method, recorded.path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => chat_completions(&shared, &recorded).await,
        (&Method::GET, "/v1/models") => Some(models(&shared)),
        (&Method::POST, "/_scripted/replies") => Some(script(&shared, &recorded)),
        _ => Some(not_found(&recorded)),
    };
    outcome.ok_or(ConnectionClosed)
}

async fn chat_completions(shared: &Shared, request: &RecordedRequest) -> Outcome {
    if let Some(rejection) = validate(request) {
        return Some(rejection);
    }
    let info = RequestInfo::from_body(&request.body, &shared.default_model());
    respond(shared.next_reply(), info).await
}

/// A 400 for a body that is not a JSON object with a `messages` array.
fn validate(request: &RecordedRequest) -> Option<Response<ScriptBody>> {
    let (message, param) = if !request.body.is_object() {
        (
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            None,
        )
    } else if request
        .body
        .get("messages")
        .and_then(Value::as_array)
        .is_none()
    {
        ("'messages' is a required property", Some("messages"))
    } else {
        return None;
    };
    Some(json_response(
        StatusCode::BAD_REQUEST,
        &error_body(message, "invalid_request_error", param, None),
    ))
}

fn models(shared: &Shared) -> Response<ScriptBody> {
    let data: Vec<Value> = shared
        .models()
        .into_iter()
        .map(|id| {
            json!({
                "id": id,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "scripted-backend",
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// `POST /_scripted/replies`: queues replies described in JSON.
fn script(shared: &Shared, request: &RecordedRequest) -> Response<ScriptBody> {
    match crate::control::replies_from_json(&request.body) {
        Ok(replies) => {
            let count = replies.len();
            shared.lock().queue.extend(replies);
            json_response(StatusCode::OK, &serde_json::json!({ "queued": count }))
        }
        Err(message) => json_response(
            StatusCode::BAD_REQUEST,
            &error_body(&message, "invalid_request_error", None, None),
        ),
    }
}

fn not_found(request: &RecordedRequest) -> Response<ScriptBody> {
    let message = format!("Unknown request URL: {} {}", request.method, request.path);
    json_response(
        StatusCode::NOT_FOUND,
        &error_body(&message, "invalid_request_error", None, Some("unknown_url")),
    )
}

fn is_chat_completions(request: &RecordedRequest) -> bool {
    request.method == "POST" && request.path == "/v1/chat/completions"
}

/// The service error that makes hyper drop a connection unanswered.
#[derive(Debug)]
struct ConnectionClosed;

impl std::fmt::Display for ConnectionClosed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("connection closed by script")
    }
}

impl std::error::Error for ConnectionClosed {}
