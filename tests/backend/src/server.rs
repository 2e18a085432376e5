//! The HTTP server: [`Backend`] binds a loopback port, accepts (and counts)
//! keep-alive HTTP/1.1 connections, records every request, routes it, and
//! answers chat completions from the reply queue, after the quirks a test
//! switched on (framing, header, query and parameter checks). It also
//! serves the `/_scripted/` control endpoints (see `control_endpoint`).
//!
//! A [`Backend`] can instead stand for the Python backend in another
//! process ([`Backend::start_python`]); every method then goes through that
//! backend's control endpoints (see the `remote` module).

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::body::ScriptBody;
use crate::control::{replies_from_json, reply_from_spec};
use crate::record::RecordedRequest;
use crate::remote::Python;
use crate::render::{error_body, RequestInfo};
use crate::reply::{GateState, Reply};
use crate::respond::{json_response, respond, Outcome};

/// The model list served by `GET /v1/models` until changed.
pub const DEFAULT_MODEL: &str = "test-model";

/// Pause after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The longest a control endpoint waits on a gate or on the request log.
const CONTROL_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// The body of the 411 that [`Backend::require_content_length`] answers.
const LENGTH_REQUIRED_MESSAGE: &str = "A request body needs a Content-Length header.";

/// A running scripted backend. Dropping it (or [`Backend::shutdown`]) stops
/// the server and closes its connections.
pub struct Backend {
    addr: SocketAddr,
    mode: Mode,
}

/// Which server a [`Backend`] stands for.
enum Mode {
    /// The server in this process.
    Local(Local),
    /// `tests/python/chat_backend.py` in a child process.
    Python(Python),
}

/// The in-process server.
struct Local {
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
    quirks: Quirks,
    /// Gates of replies scripted over HTTP, by id.
    gates: HashMap<String, Arc<GateState>>,
}

/// Ways the backend refuses requests, as some real backends do.
#[derive(Default)]
struct Quirks {
    require_content_length: bool,
    /// Top-level body keys and the reply they get, in registration order.
    rejections: Vec<(String, Reply)>,
    /// Lowercase header names and the exact value they must have.
    required_headers: Vec<(String, String)>,
    required_query: Option<String>,
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
            mode: Mode::Local(Local {
                shared,
                stop: Some(stop),
                runner: Runner::Task(task),
            }),
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
            mode: Mode::Local(Local {
                shared,
                stop: Some(stop),
                runner: Runner::Thread(ended_signal),
            }),
        })
    }

    /// Starts the Python backend `script` (`tests/python/chat_backend.py`)
    /// on a free loopback port: a second, independent implementation of the
    /// same scripted behaviour on Python's `http.server`, which reads request
    /// bodies only by `content-length` and ends streams by closing the
    /// connection. Every method of the returned [`Backend`] works the same,
    /// through the script's control endpoints; the process is killed when
    /// the backend is dropped or shut down.
    ///
    /// The interpreter is `EDGE_RESPONSES_PYTHON`, else the workspace's
    /// `.venv/bin/python` if it exists, else `python3`. Methods panic when
    /// the process no longer answers.
    pub fn start_python(script: &Path) -> anyhow::Result<Backend> {
        let python = Python::start(script)?;
        Ok(Backend {
            addr: python.addr(),
            mode: Mode::Python(python),
        })
    }

    /// Whether this is the Python backend ([`Backend::start_python`]), for
    /// the rare assertion about wire habits only one of them has.
    pub fn is_python(&self) -> bool {
        matches!(self.mode, Mode::Python(_))
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
        self.push_all([reply]);
    }

    /// Queues several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().queue.extend(replies),
            Mode::Python(python) => python.push(replies.into_iter().collect()),
        }
    }

    /// How many queued replies have not been used yet.
    pub fn pending_replies(&self) -> usize {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().queue.len(),
            Mode::Python(python) => python.pending_replies(),
        }
    }

    /// The reply used when the queue is empty (initially [`Reply::echo`]).
    pub fn set_default(&self, reply: Reply) {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().default_reply = reply,
            Mode::Python(python) => python.set_default(&reply),
        }
    }

    /// The model ids `GET /v1/models` lists; the first one also stands in
    /// for a request that names no model.
    pub fn set_models<I, S>(&self, models: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let models: Vec<String> = models.into_iter().map(Into::into).collect();
        match &self.mode {
            Mode::Local(local) => local.shared.lock().models = models,
            Mode::Python(python) => python.set_models(&models),
        }
    }

    /// Turns the request log on (the default) or off; off keeps memory flat
    /// for long benchmark runs.
    pub fn set_recording(&self, recording: bool) {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().recording = recording,
            Mode::Python(python) => python.set_recording(recording),
        }
    }

    /// When on, a `POST` whose body is not framed by a `content-length`
    /// header (a chunked one, say) is answered `411 Length Required` with an
    /// OpenAI error body, as some servers do; it is still recorded.
    pub fn require_content_length(&self, on: bool) {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().quirks.require_content_length = on,
            Mode::Python(python) => python.quirks(&json!({ "require_content_length": on })),
        }
    }

    /// Answers every chat-completions request whose JSON body has the key
    /// `name` (a dotted path such as `response_format.json_schema` names a
    /// nested key) with `reply` (typically a [`Reply::error`])
    /// instead of taking one from the queue, which is left as it is.
    /// Several names can be registered; registering a name again replaces
    /// its reply. A request with several of them gets the reply of the name
    /// registered first.
    pub fn reject_param(&self, name: &str, reply: Reply) {
        match &self.mode {
            Mode::Local(local) => {
                let rejections = &mut local.shared.lock().quirks.rejections;
                match rejections.iter_mut().find(|(known, _)| known == name) {
                    Some(entry) => entry.1 = reply,
                    None => rejections.push((name.to_string(), reply)),
                }
            }
            Mode::Python(python) => {
                reply.bind_gates(self.addr);
                python.quirks(&json!({ "reject_params": { name: reply.to_spec() } }));
            }
        }
    }

    /// Forgets every [`Backend::reject_param`].
    pub fn clear_rejections(&self) {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().quirks.rejections.clear(),
            Mode::Python(python) => python.quirks(&json!({ "clear": ["reject_params"] })),
        }
    }

    /// Chat-completions and models requests without header `name` set to
    /// exactly `value` get a 401 with the error body Azure OpenAI sends.
    /// Several headers can be required.
    pub fn require_header(&self, name: &str, value: &str) {
        match &self.mode {
            Mode::Local(local) => {
                let name = name.to_ascii_lowercase();
                let required = &mut local.shared.lock().quirks.required_headers;
                required.retain(|(known, _)| *known != name);
                required.push((name, value.to_string()));
            }
            Mode::Python(python) => {
                python.quirks(&json!({ "require_headers": { name: value } }));
            }
        }
    }

    /// Chat-completions and models requests whose query string (without
    /// the `?`) is not exactly `query` get a 404 with the body Azure OpenAI
    /// sends (`api-version=...` on a deployment URL).
    pub fn require_query(&self, query: &str) {
        match &self.mode {
            Mode::Local(local) => {
                local.shared.lock().quirks.required_query = Some(query.to_string());
            }
            Mode::Python(python) => python.quirks(&json!({ "require_query": query })),
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().log.clone(),
            Mode::Python(python) => python.requests(),
        }
    }

    /// The chat-completions requests (`POST <base>/chat/completions`)
    /// received so far.
    pub fn chat_requests(&self) -> Vec<RecordedRequest> {
        let mut requests = self.requests();
        requests.retain(is_chat_completions);
        requests
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().log.last().cloned(),
            Mode::Python(python) => python.requests().pop(),
        }
    }

    /// How many requests the log holds.
    pub fn request_count(&self) -> usize {
        match &self.mode {
            Mode::Local(local) => local.shared.lock().log.len(),
            Mode::Python(python) => python.requests().len(),
        }
    }

    /// How many TCP connections the server has accepted so far; clients that
    /// keep connections alive make fewer than requests. (The Python backend
    /// counts the connections that carried a request other than a control
    /// one.)
    pub fn connections(&self) -> usize {
        match &self.mode {
            Mode::Local(local) => local.shared.connections.load(Ordering::Relaxed),
            Mode::Python(python) => python.connections(),
        }
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        match &self.mode {
            Mode::Local(local) => {
                let mut state = local.shared.lock();
                state.log.clear();
                local.shared.recorded.send_replace(0);
            }
            Mode::Python(python) => python.clear_requests(),
        }
    }

    /// Waits until the log holds at least `count` requests.
    ///
    /// # Panics
    ///
    /// On the Python backend, when that takes more than two minutes.
    pub async fn wait_for_requests(&self, count: usize) {
        match &self.mode {
            Mode::Local(local) => {
                let mut recorded = local.shared.recorded.subscribe();
                // The sender lives in `local.shared`, so the wait cannot fail.
                let _ = recorded.wait_for(|recorded| *recorded >= count).await;
            }
            Mode::Python(python) => python.wait_for_requests(count).await,
        }
    }

    /// Stops the server and waits until its port and connections are
    /// closed.
    pub async fn shutdown(self) {
        let Backend { mode, .. } = self;
        match mode {
            Mode::Local(mut local) => {
                local.stop.take();
                match &mut local.runner {
                    Runner::Task(task) => {
                        task.abort();
                        let _ = (&mut *task).await;
                    }
                    Runner::Thread(ended) => {
                        let _ = ended.await;
                    }
                }
            }
            Mode::Python(python) => python.stop(),
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop.take();
        if let Runner::Task(task) = &self.runner {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Local(_) => "in-process",
            Mode::Python(_) => "python",
        };
        formatter
            .debug_struct("Backend")
            .field("addr", &self.addr)
            .field("mode", &mode)
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
                quirks: Quirks::default(),
                gates: HashMap::new(),
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

    /// The reply for a chat-completions request: a rejection of one of its
    /// keys, else the next queued reply, else the default.
    fn next_reply(&self, body: &Value) -> Reply {
        let mut state = self.lock();
        let rejected = state
            .quirks
            .rejections
            .iter()
            .find(|(name, _)| has_path(body, name));
        if let Some((_, reply)) = rejected {
            return reply.clone();
        }
        match state.queue.pop_front() {
            Some(reply) => reply,
            None => state.default_reply.clone(),
        }
    }

    /// The answer the quirks give `request` instead of the normal one.
    fn refusal(&self, request: &RecordedRequest) -> Option<Response<ScriptBody>> {
        let state = self.lock();
        let quirks = &state.quirks;
        if quirks.require_content_length
            && request.method == "POST"
            && request.content_length.is_none()
        {
            return Some(json_response(
                StatusCode::LENGTH_REQUIRED,
                &error_body(LENGTH_REQUIRED_MESSAGE, "invalid_request_error", None, None),
            ));
        }
        if !is_chat_completions(request) && !is_models(request) {
            return None;
        }
        let missing_header = quirks
            .required_headers
            .iter()
            .any(|(name, value)| request.header(name) != Some(value.as_str()));
        if missing_header {
            return Some(json_response(
                StatusCode::UNAUTHORIZED,
                &error_body(
                    "Access denied due to invalid subscription key or wrong API endpoint.",
                    "invalid_request_error",
                    None,
                    Some("401"),
                ),
            ));
        }
        let wrong_query = quirks
            .required_query
            .as_ref()
            .is_some_and(|query| request.query.as_deref().unwrap_or("") != query);
        if wrong_query {
            return Some(json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": {"code": "404", "message": "Resource not found"}}),
            ));
        }
        None
    }

    /// The state of gate `id` of a reply scripted over HTTP; a gate asked
    /// about before its reply arrives is created then.
    fn gate(&self, id: &str) -> Arc<GateState> {
        Arc::clone(
            self.lock()
                .gates
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(GateState::with_id(id.to_string()))),
        )
    }

    fn replies_from_json(&self, specs: &Value) -> Result<Vec<Reply>, String> {
        replies_from_json(specs, &mut |id| self.gate(id))
    }

    fn reply_from_spec(&self, spec: &Value) -> Result<Reply, String> {
        reply_from_spec(spec, &mut |id| self.gate(id))
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
    // A backlog of thousands: benchmarks connect thousands of clients at
    // once, which the standard library's 128 would turn into SYN retries.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .and_then(|()| socket.listen(4096))
        .with_context(|| format!("binding {addr}"))?;
    let listener = StdListener::from(socket);
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
/// without a response. Control requests are neither recorded nor subject
/// to the quirks.
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
    if let Some(endpoint) = recorded.path.strip_prefix("/_scripted/") {
        return Ok(control_endpoint(&shared, &recorded, endpoint).await);
    }
    shared.record(&recorded);
    if let Some(refusal) = shared.refusal(&recorded) {
        return Ok(refusal);
    }
    let outcome = if is_chat_completions(&recorded) {
        chat_completions(&shared, &recorded).await
    } else if is_models(&recorded) {
        Some(models(&shared))
    } else {
        Some(not_found(&recorded))
    };
    outcome.ok_or(ConnectionClosed)
}

async fn chat_completions(shared: &Shared, request: &RecordedRequest) -> Outcome {
    if let Some(rejection) = validate(request) {
        return Some(rejection);
    }
    let info = RequestInfo::from_body(&request.body, &shared.default_model());
    respond(shared.next_reply(&request.body), info).await
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

/// The control endpoints, the same on both backends (the Python one is
/// driven through them):
///
/// - `POST replies` (an array of reply specs: queued), `GET replies`
///   (`{"pending"}`);
/// - `POST default` (one spec), `POST models` (an array of ids);
/// - `POST quirks` (`require_content_length`, `reject_params`
///   `{name: spec}`, `require_headers` `{name: value}`, `require_query`,
///   and `clear`: `true` or a list of those names, applied first);
/// - `GET requests` (`{"requests": [...]}`, after waiting up to `wait`
///   seconds for `wait_for` of them), `DELETE requests`;
/// - `GET connections`, `POST recording` (`{"recording": bool}`);
/// - `GET gates/{id}` (`{"reached", "released"}`, after waiting up to
///   `wait` seconds for it to be reached), `POST gates/{id}/release`.
async fn control_endpoint(
    shared: &Shared,
    request: &RecordedRequest,
    endpoint: &str,
) -> Response<ScriptBody> {
    let query = Query::parse(request.query.as_deref());
    let result = match (request.method.as_str(), endpoint) {
        ("POST", "replies") => shared.replies_from_json(&request.body).map(|replies| {
            let queued = replies.len();
            shared.lock().queue.extend(replies);
            json!({ "queued": queued })
        }),
        ("GET", "replies") => Ok(json!({ "pending": shared.lock().queue.len() })),
        ("POST", "default") => shared.reply_from_spec(&request.body).map(|reply| {
            shared.lock().default_reply = reply;
            json!({ "ok": true })
        }),
        ("POST", "models") => model_ids(&request.body).map(|models| {
            shared.lock().models = models;
            json!({ "ok": true })
        }),
        ("POST", "quirks") => set_quirks(shared, &request.body).map(|()| json!({ "ok": true })),
        ("GET", "requests") => {
            if let Some(count) = query.number("wait_for") {
                let mut recorded = shared.recorded.subscribe();
                let _ = tokio::time::timeout(
                    query.wait(),
                    recorded.wait_for(|recorded| *recorded >= count),
                )
                .await;
            }
            let log: Vec<Value> = shared
                .lock()
                .log
                .iter()
                .map(RecordedRequest::to_log)
                .collect();
            Ok(json!({ "requests": log }))
        }
        ("DELETE", "requests") => {
            shared.lock().log.clear();
            shared.recorded.send_replace(0);
            Ok(json!({ "ok": true }))
        }
        ("GET", "connections") => Ok(json!({
            "connections": shared.connections.load(Ordering::Relaxed)
        })),
        ("POST", "recording") => match request.body.get("recording").and_then(Value::as_bool) {
            Some(recording) => {
                shared.lock().recording = recording;
                Ok(json!({ "ok": true }))
            }
            None => Err("the body must be {\"recording\": true|false}".to_string()),
        },
        (method, endpoint) => match endpoint.strip_prefix("gates/") {
            Some(rest) => gate_endpoint(shared, method, rest, &query).await,
            None => return not_found(request),
        },
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(message) => json_response(
            StatusCode::BAD_REQUEST,
            &error_body(&message, "invalid_request_error", None, None),
        ),
    }
}

async fn gate_endpoint(
    shared: &Shared,
    method: &str,
    rest: &str,
    query: &Query,
) -> Result<Value, String> {
    let state =
        |gate: &GateState| json!({ "reached": gate.is_reached(), "released": gate.is_released() });
    match (method, rest.strip_suffix("/release")) {
        ("POST", Some(id)) => {
            let gate = shared.gate(id);
            gate.release();
            Ok(state(&gate))
        }
        ("GET", None) => {
            let gate = shared.gate(rest);
            gate.reached_within(query.wait()).await;
            Ok(state(&gate))
        }
        _ => Err(format!("no gate endpoint {method} {rest}")),
    }
}

fn model_ids(body: &Value) -> Result<Vec<String>, String> {
    body.as_array()
        .and_then(|ids| {
            ids.iter()
                .map(|id| id.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| "the body must be an array of model ids".to_string())
}

/// Applies a `POST /_scripted/quirks` body.
fn set_quirks(shared: &Shared, body: &Value) -> Result<(), String> {
    let body = body.as_object().ok_or("the body must be a JSON object")?;
    let known = [
        "clear",
        "require_content_length",
        "reject_params",
        "require_headers",
        "require_query",
    ];
    if let Some(unknown) = body.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(format!("unknown quirk `{unknown}`"));
    }
    // Read everything before changing anything.
    let clear: Vec<String> = match body.get("clear") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Vec::new(),
        Some(Value::Bool(true)) => known[1..].iter().map(|name| name.to_string()).collect(),
        Some(names) => names
            .as_array()
            .and_then(|names| {
                names
                    .iter()
                    .map(|name| name.as_str().filter(|name| known[1..].contains(name)))
                    .map(|name| name.map(str::to_string))
                    .collect()
            })
            .ok_or("clear must be true or a list of quirk names")?,
    };
    let require_content_length = match body.get("require_content_length") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(on)) => Some(*on),
        Some(_) => return Err("require_content_length must be true or false".to_string()),
    };
    let mut rejections = Vec::new();
    if let Some(specs) = body.get("reject_params").filter(|v| !v.is_null()) {
        let specs = specs
            .as_object()
            .ok_or("reject_params must map names to reply specs")?;
        for (name, spec) in specs {
            rejections.push((name.clone(), shared.reply_from_spec(spec)?));
        }
    }
    let mut headers = Vec::new();
    if let Some(required) = body.get("require_headers").filter(|v| !v.is_null()) {
        let required = required
            .as_object()
            .ok_or("require_headers must map names to values")?;
        for (name, value) in required {
            let value = value
                .as_str()
                .ok_or("require_headers values must be strings")?;
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    let query = match body.get("require_query") {
        None | Some(Value::Null) => None,
        Some(Value::String(query)) => Some(query.clone()),
        Some(_) => return Err("require_query must be a string".to_string()),
    };

    let mut state = shared.lock();
    let quirks = &mut state.quirks;
    for name in &clear {
        match name.as_str() {
            "require_content_length" => quirks.require_content_length = false,
            "reject_params" => quirks.rejections.clear(),
            "require_headers" => quirks.required_headers.clear(),
            _ => quirks.required_query = None,
        }
    }
    if let Some(on) = require_content_length {
        quirks.require_content_length = on;
    }
    for (name, reply) in rejections {
        match quirks
            .rejections
            .iter_mut()
            .find(|(known, _)| *known == name)
        {
            Some(entry) => entry.1 = reply,
            None => quirks.rejections.push((name, reply)),
        }
    }
    for (name, value) in headers {
        quirks.required_headers.retain(|(known, _)| *known != name);
        quirks.required_headers.push((name, value));
    }
    if query.is_some() {
        quirks.required_query = query;
    }
    Ok(())
}

/// The query parameters of a control request.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (pair.to_string(), String::new()),
            })
            .collect();
        Query(pairs)
    }

    fn number(&self, name: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .and_then(|(_, value)| value.parse().ok())
    }

    /// The `wait` parameter in seconds (fractions allowed), at most
    /// [`CONTROL_WAIT_LIMIT`]; zero when absent.
    fn wait(&self) -> Duration {
        self.0
            .iter()
            .find(|(known, _)| known == "wait")
            .and_then(|(_, value)| value.parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .map_or(Duration::ZERO, |seconds| {
                Duration::from_secs_f64(seconds.min(CONTROL_WAIT_LIMIT.as_secs_f64()))
            })
    }
}

fn not_found(request: &RecordedRequest) -> Response<ScriptBody> {
    let message = format!("Unknown request URL: {} {}", request.method, request.path);
    json_response(
        StatusCode::NOT_FOUND,
        &error_body(&message, "invalid_request_error", None, Some("unknown_url")),
    )
}

/// `POST <base>/chat/completions`, whatever the base path (`/v1`,
/// `/openai/deployments/<name>`, `/api/v1`...).
fn is_chat_completions(request: &RecordedRequest) -> bool {
    request.method == "POST" && request.path.ends_with("/chat/completions")
}

/// `GET <base>/models`, whatever the base path.
fn is_models(request: &RecordedRequest) -> bool {
    request.method == "GET" && request.path.ends_with("/models")
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

/// Whether `body` has the key at dotted `path` (`a.b` is `body["a"]["b"]`).
fn has_path(body: &Value, path: &str) -> bool {
    path.split('.')
        .try_fold(body, |value, key| value.get(key))
        .is_some()
}
