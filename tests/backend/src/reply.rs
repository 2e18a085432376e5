//! Scripted replies: the description of what the backend answers to one
//! `POST /v1/chat/completions` request, and the [`Gate`] that holds a stream
//! until the test lets it go.
//!
//! A [`Reply`] is plain data built with chained methods. It says *what* to
//! send (reasoning, text, tool calls, usage, an error...) and *how* (delays,
//! pauses, faults). Whether it goes out as a server-sent-event stream or as
//! one JSON object is decided by the request's `stream` flag; rendering lives
//! in [`crate::render`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::remote;

/// Delta field that carries reasoning text by default (vLLM, DeepSeek).
pub const DEFAULT_REASONING_FIELD: &str = "reasoning_content";

/// Default size, in characters, of the tool-call argument fragments a stream
/// carries.
pub const DEFAULT_ARGUMENT_FRAGMENT_CHARS: usize = 8;

/// One scripted answer to a chat-completions request.
///
/// Start from a constructor ([`Reply::text`], [`Reply::new`],
/// [`Reply::error`], ...) and chain options. Options that do not apply to a
/// kind of reply (for example [`Reply::tool_call`] on an error) are ignored.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) kind: Kind,
    pub(crate) completion: Completion,
    pub(crate) faults: Faults,
    pub(crate) timing: Timing,
    pub(crate) headers: Vec<(String, String)>,
}

/// What kind of HTTP answer a reply is.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// A `chat.completion` (or its chunks).
    Completion,
    /// An HTTP error with an OpenAI-shaped error body.
    Error(ErrorReply),
    /// Any status, content type and body, sent verbatim.
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    /// Send nothing for a while, then close the connection.
    Hang(Duration),
}

/// The fields of an OpenAI error body.
#[derive(Clone, Debug)]
pub(crate) struct ErrorReply {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) error_type: String,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<String>,
}

/// Where the assistant text comes from.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    /// No text: `content` is null in a non-streamed message.
    None,
    /// Fixed text, one streamed delta per piece.
    Pieces(Vec<String>),
    /// `Hello! You said: <last user text>`, split word by word.
    Echo,
}

#[derive(Clone, Debug)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// The completion itself: what the model "said".
#[derive(Clone, Debug)]
pub(crate) struct Completion {
    pub(crate) content: Content,
    pub(crate) reasoning: Vec<String>,
    pub(crate) reasoning_field: String,
    pub(crate) tool_calls: Vec<ToolCall>,
    pub(crate) interleave_tool_calls: bool,
    pub(crate) fragment_chars: usize,
    pub(crate) finish_reason: Option<String>,
    pub(crate) finish_on_last_delta: bool,
    pub(crate) usage: UsageSpec,
    pub(crate) logprobs: bool,
    pub(crate) empty_deltas: bool,
    pub(crate) keepalive_comment: bool,
    pub(crate) json_despite_stream: bool,
}

/// Token counts; `None` means "compute a default".
#[derive(Clone, Debug, Default)]
pub(crate) struct UsageSpec {
    pub(crate) counts: Option<(u64, u64)>,
    pub(crate) reasoning_tokens: Option<u64>,
    pub(crate) cached_tokens: Option<u64>,
    /// Never send `usage`, whatever the request asks.
    pub(crate) omit: bool,
}

/// Deliberate wire faults, positioned by streamed data-chunk index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    pub(crate) cut_after: Option<usize>,
    pub(crate) malformed_after: Option<usize>,
    pub(crate) error_after: Option<(usize, String)>,
    pub(crate) omit_done: bool,
}

/// Delays and pauses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timing {
    pub(crate) before_first: Duration,
    pub(crate) between_chunks: Duration,
    pub(crate) gates: Vec<(GatePosition, Arc<GateState>)>,
}

/// Where in a stream a gate holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GatePosition {
    /// Before the data chunk with this index (0 is the role chunk).
    Chunk(usize),
    /// Before the chunk that carries `finish_reason`.
    Finish,
    /// Before `data: [DONE]`.
    Done,
}

impl Reply {
    /// A completion with no text and no tool calls; add them with the
    /// builder methods.
    pub fn new() -> Self {
        Reply {
            kind: Kind::Completion,
            completion: Completion {
                content: Content::None,
                reasoning: Vec::new(),
                reasoning_field: DEFAULT_REASONING_FIELD.to_string(),
                tool_calls: Vec::new(),
                interleave_tool_calls: false,
                fragment_chars: DEFAULT_ARGUMENT_FRAGMENT_CHARS,
                finish_reason: None,
                finish_on_last_delta: false,
                usage: UsageSpec::default(),
                logprobs: false,
                empty_deltas: false,
                keepalive_comment: false,
                json_despite_stream: false,
            },
            faults: Faults::default(),
            timing: Timing::default(),
            headers: Vec::new(),
        }
    }

    /// One assistant message; streamed word by word (each delta keeps the
    /// whitespace that precedes its word, so the deltas concatenate back to
    /// `text`).
    pub fn text(text: impl Into<String>) -> Self {
        let mut reply = Reply::new();
        reply.completion.content = Content::Pieces(split_words(&text.into()));
        reply
    }

    /// One assistant message streamed as exactly these content deltas.
    pub fn chunks<I, S>(pieces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut reply = Reply::new();
        reply.completion.content = Content::Pieces(pieces.into_iter().map(Into::into).collect());
        reply
    }

    /// The backend's initial default: `Hello! You said: <text of the last
    /// user message>`, streamed word by word.
    pub fn echo() -> Self {
        let mut reply = Reply::new();
        reply.completion.content = Content::Echo;
        reply
    }

    /// An HTTP error with an OpenAI error body
    /// `{"error":{"message","type","param","code"}}`. The type follows the
    /// status (`invalid_request_error`, `authentication_error`,
    /// `permission_error`, `rate_limit_error`, `server_error`); change it with
    /// [`Reply::error_type`], and set [`Reply::code`] / [`Reply::param`].
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let mut reply = Reply::new();
        reply.kind = Kind::Error(ErrorReply {
            status,
            message: message.into(),
            error_type: default_error_type(status).to_string(),
            param: None,
            code: None,
        });
        reply
    }

    /// Any status, content type and body, sent as is (an HTML page from a
    /// proxy, a backend's own error shape...).
    pub fn raw(status: u16, content_type: impl Into<String>, body: impl Into<String>) -> Self {
        let mut reply = Reply::new();
        reply.kind = Kind::Raw {
            status,
            content_type: content_type.into(),
            body: body.into(),
        };
        reply
    }

    /// Accept the request, send nothing for `duration`, then close the
    /// connection without a response. Use it to exercise client timeouts.
    pub fn hang(duration: Duration) -> Self {
        let mut reply = Reply::new();
        reply.kind = Kind::Hang(duration);
        reply
    }

    /// Reasoning text, emitted before the content; streamed word by word.
    pub fn reasoning(mut self, text: impl Into<String>) -> Self {
        self.completion.reasoning = split_words(&text.into());
        self
    }

    /// The delta/message field that carries reasoning: `reasoning_content`
    /// (default; vLLM, DeepSeek) or `reasoning` (Ollama, OpenRouter).
    pub fn reasoning_field(mut self, field: impl Into<String>) -> Self {
        self.completion.reasoning_field = field.into();
        self
    }

    /// Appends a function tool call. Several calls in one reply are parallel
    /// tool calls, indexed in the order they were added.
    pub fn tool_call(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        self.completion.tool_calls.push(ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// Streams the chunks of parallel tool calls round-robin by index
    /// instead of one call after the other.
    pub fn interleave_tool_calls(mut self) -> Self {
        self.completion.interleave_tool_calls = true;
        self
    }

    /// Size in characters of the streamed argument fragments (default 8).
    pub fn argument_fragment_chars(mut self, chars: usize) -> Self {
        self.completion.fragment_chars = chars.max(1);
        self
    }

    /// The finish reason; defaults to `tool_calls` when the reply has tool
    /// calls and `stop` otherwise.
    pub fn finish_reason(mut self, reason: impl Into<String>) -> Self {
        self.completion.finish_reason = Some(reason.into());
        self
    }

    /// Puts `finish_reason` on the last delta chunk instead of a separate
    /// chunk with an empty delta (as vLLM and Ollama often do).
    pub fn finish_on_last_delta(mut self) -> Self {
        self.completion.finish_on_last_delta = true;
        self
    }

    /// Token counts reported in `usage`. By default `prompt_tokens` is the
    /// number of whitespace-separated words in the request's messages and
    /// `completion_tokens` the number of reasoning, content and argument
    /// pieces the reply streams.
    pub fn usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.completion.usage.counts = Some((prompt_tokens, completion_tokens));
        self
    }

    /// Reports `usage.completion_tokens_details.reasoning_tokens`.
    pub fn reasoning_tokens(mut self, tokens: u64) -> Self {
        self.completion.usage.reasoning_tokens = Some(tokens);
        self
    }

    /// Reports `usage.prompt_tokens_details.cached_tokens`.
    pub fn cached_tokens(mut self, tokens: u64) -> Self {
        self.completion.usage.cached_tokens = Some(tokens);
        self
    }

    /// Includes `logprobs` for content tokens even when the request did not
    /// ask for them (a request with `"logprobs": true` always gets them).
    pub fn logprobs(mut self) -> Self {
        self.completion.logprobs = true;
        self
    }

    /// Follows every delta chunk with an empty one (`delta: {}` and
    /// `delta: {"content": ""}` alternately).
    pub fn empty_deltas(mut self) -> Self {
        self.completion.empty_deltas = true;
        self
    }

    /// Starts the stream with an SSE comment line (`: keep-alive`), as some
    /// gateways do.
    pub fn keepalive_comment(mut self) -> Self {
        self.completion.keepalive_comment = true;
        self
    }

    /// Answers with one `application/json` `chat.completion` object (with
    /// `content-length`) even when the request asks for a stream, as some
    /// proxies do. Reasoning goes in `message.<reasoning_field>`, tool calls
    /// in `message.tool_calls`; faults and delays apply as to a non-streamed
    /// answer.
    pub fn json_despite_stream(mut self) -> Self {
        self.completion.json_despite_stream = true;
        self
    }

    /// Never sends `usage`: no usage chunk (and no `usage: null` on the
    /// other chunks) whatever `stream_options` says, and no `usage` in a
    /// `chat.completion` object.
    pub fn no_usage(mut self) -> Self {
        self.completion.usage.omit = true;
        self
    }

    /// Waits this long before the first streamed chunk (response headers go
    /// out at once), or before the whole response when not streaming.
    pub fn delay_before_first(mut self, delay: Duration) -> Self {
        self.timing.before_first = delay;
        self
    }

    /// Waits this long before each streamed chunk after the first.
    pub fn delay_between_chunks(mut self, delay: Duration) -> Self {
        self.timing.between_chunks = delay;
        self
    }

    /// Streaming: closes the connection abruptly after `chunks` data chunks,
    /// without `data: [DONE]` and without ending the chunked body (a count
    /// past the last chunk cuts just before `[DONE]`; the same goes for
    /// the other faults).
    /// Non-streaming: closes the connection in the middle of the body.
    pub fn cut_after(mut self, chunks: usize) -> Self {
        self.faults.cut_after = Some(chunks);
        self
    }

    /// Streaming: after `chunks` data chunks, sends one `data:` frame that is
    /// not valid JSON; the stream then goes on as scripted.
    /// Non-streaming: the body is truncated JSON with status 200.
    pub fn malformed_after(mut self, chunks: usize) -> Self {
        self.faults.malformed_after = Some(chunks);
        self
    }

    /// Streaming: after `chunks` data chunks, sends an in-stream error event
    /// `data: {"error": {...}}` followed by `data: [DONE]` (as vLLM does).
    /// Non-streaming: answers HTTP 500 with that error.
    pub fn error_after(mut self, chunks: usize, message: impl Into<String>) -> Self {
        self.faults.error_after = Some((chunks, message.into()));
        self
    }

    /// Ends the stream cleanly without `data: [DONE]`.
    pub fn without_done(mut self) -> Self {
        self.faults.omit_done = true;
        self
    }

    /// Error replies: the `error.type` field.
    pub fn error_type(mut self, error_type: impl Into<String>) -> Self {
        if let Kind::Error(error) = &mut self.kind {
            error.error_type = error_type.into();
        }
        self
    }

    /// Error replies: the `error.code` field (e.g. `model_not_found`).
    pub fn code(mut self, code: impl Into<String>) -> Self {
        if let Kind::Error(error) = &mut self.kind {
            error.code = Some(code.into());
        }
        self
    }

    /// Error replies: the `error.param` field.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        if let Kind::Error(error) = &mut self.kind {
            error.param = Some(param.into());
        }
        self
    }

    /// Adds a response header (e.g. `retry-after` on a 429).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Holds the stream before data chunk `chunk` (0 is the role chunk)
    /// until the returned [`Gate`] is released or dropped. A non-streamed
    /// response is held as a whole.
    pub fn pause_before(self, chunk: usize) -> (Reply, Gate) {
        self.gated(GatePosition::Chunk(chunk))
    }

    /// Holds the stream before the chunk that carries `finish_reason`.
    pub fn pause_before_last(self) -> (Reply, Gate) {
        self.gated(GatePosition::Finish)
    }

    /// Holds the stream before `data: [DONE]` (after the usage chunk).
    pub fn pause_before_done(self) -> (Reply, Gate) {
        self.gated(GatePosition::Done)
    }

    fn gated(mut self, position: GatePosition) -> (Reply, Gate) {
        let state = Arc::new(GateState::new());
        self.timing.gates.push((position, Arc::clone(&state)));
        (self, Gate { state })
    }
}

impl Default for Reply {
    fn default() -> Self {
        Reply::new()
    }
}

/// Holds a scripted stream at one point until the test releases it.
///
/// Created by [`Reply::pause_before`] and friends. Dropping the gate
/// releases it, so a forgotten gate never blocks a stream for good.
///
/// A gate whose reply went to a backend in another process
/// ([`Backend::start_python`](crate::Backend::start_python)) is driven over
/// that backend's control endpoints: [`Gate::reached`] polls
/// `GET /_scripted/gates/{id}` (for at most two minutes in all)
/// and [`Gate::release`] posts to `/_scripted/gates/{id}/release`.
#[derive(Debug)]
pub struct Gate {
    state: Arc<GateState>,
}

impl Gate {
    /// Lets the stream go on.
    pub fn release(&self) {
        self.state.released.send_replace(true);
        if let Some(addr) = self.state.remote.get() {
            // A backend that is already gone has nothing left to hold.
            let _ = remote::release_gate(*addr, &self.state.id);
        }
    }

    /// Whether the backend has produced every chunk before the gate and is
    /// now waiting on it.
    pub fn is_reached(&self) -> bool {
        match self.state.remote.get() {
            Some(addr) => remote::gate_reached(*addr, &self.state.id),
            None => *self.state.reached.borrow(),
        }
    }

    /// Waits until the backend reaches the gate.
    ///
    /// # Panics
    ///
    /// For a gate on a backend in another process, when the backend does
    /// not reach it within two minutes or cannot be asked.
    pub async fn reached(&self) {
        if let Some(addr) = self.state.remote.get() {
            if let Err(error) = remote::wait_for_gate(*addr, &self.state.id).await {
                panic!("gate {}: {error:#}", self.state.id);
            }
            return;
        }
        let mut reached = self.state.reached.subscribe();
        // The sender lives in `self.state`, so the wait cannot fail.
        let _ = reached.wait_for(|reached| *reached).await;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
    }
}

/// The state a [`Gate`] shares with the stream it holds.
#[derive(Debug)]
pub(crate) struct GateState {
    /// Names the gate in a reply spec and on the control endpoints.
    pub(crate) id: String,
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
    /// The control address of the out-of-process backend the gated reply
    /// was sent to, once it was.
    remote: OnceLock<SocketAddr>,
}

impl GateState {
    /// A gate with a fresh id, unique in this process.
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        GateState::with_id(format!("gate-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// A gate with the given id (from a reply spec).
    pub(crate) fn with_id(id: String) -> Self {
        GateState {
            id,
            reached: watch::Sender::new(false),
            released: watch::Sender::new(false),
            remote: OnceLock::new(),
        }
    }

    /// Marks the gate as reached and waits until it is released.
    pub(crate) async fn pass(&self) {
        self.reached.send_replace(true);
        let mut released = self.released.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = released.wait_for(|released| *released).await;
    }

    /// Lets the stream go on (the control endpoint's release).
    pub(crate) fn release(&self) {
        self.released.send_replace(true);
    }

    pub(crate) fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    pub(crate) fn is_reached(&self) -> bool {
        *self.reached.borrow()
    }

    /// Waits at most `limit` for the gate to be reached; whether it was.
    pub(crate) async fn reached_within(&self, limit: Duration) -> bool {
        let mut reached = self.reached.subscribe();
        let waited = tokio::time::timeout(limit, reached.wait_for(|reached| *reached)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Ties the gate to a backend in another process, which from now on
    /// holds the stream; the first backend a gated reply is sent to wins.
    pub(crate) fn bind_remote(&self, addr: SocketAddr) {
        let _ = self.remote.set(addr);
    }
}

impl Reply {
    /// Ties this reply's gates to the out-of-process backend at `addr`.
    pub(crate) fn bind_gates(&self, addr: SocketAddr) {
        for (_, gate) in &self.timing.gates {
            gate.bind_remote(addr);
        }
    }
}

/// Splits text into words, each keeping the whitespace before it, so the
/// pieces concatenate back to `text`.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_is_space = true;
    for (index, ch) in text.char_indices() {
        let is_space = ch.is_whitespace();
        if is_space && !previous_is_space && index > start {
            pieces.push(text[start..index].to_string());
            start = index;
        }
        previous_is_space = is_space;
    }
    if start < text.len() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

pub(crate) fn default_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn split_words_keeps_leading_whitespace() {
        assert_eq!(
            split_words("Hello! You  said:\nhi"),
            ["Hello!", " You", "  said:", "\nhi"]
        );
    }

    #[test]
    fn split_words_round_trips() {
        for text in ["", " ", "  lead", "trail  ", "a b c", "héllo wörld ✓"] {
            assert_eq!(split_words(text).concat(), text);
        }
    }
}
