//! A scripted OpenAI-compatible chat-completions server for integration
//! tests and benchmarks.
//!
//! [`Backend`] listens on a loopback port and speaks the wire format of real
//! backends (vLLM, Ollama, OpenAI): `POST /v1/chat/completions`, streamed as
//! server-sent events when the request says `"stream": true`, and
//! `GET /v1/models` (under any base path: `/openai/deployments/<name>/chat/completions`
//! is answered too). Every request is recorded so a test can assert what a
//! client sent, and every chat-completions request takes the next scripted
//! [`Reply`] from a queue (or the default reply when the queue is empty; it
//! starts as [`Reply::echo`], `Hello! You said: <last user message>`).
//!
//! Modules:
//! - `server`: the listener, routing, the reply queue and the request log;
//! - `reply`: the [`Reply`] builder and the [`Gate`];
//! - `render`: chat-completions JSON, as stream chunks or one object;
//! - `respond`: playing a reply out over HTTP (delays, gates, faults);
//! - `body`: the streaming response body;
//! - `record`: [`RecordedRequest`] and its JSON log form;
//! - `control`: the JSON *reply spec* ([`Reply::to_spec`],
//!   [`Reply::from_spec`]) used to script a backend over HTTP;
//! - `remote`: [`Backend::start_python`]'s child process and the control
//!   client that drives it.
//!
//! # Two implementations
//!
//! [`Backend::start`] serves from this process, on hyper. [`Backend::start_python`]
//! starts `tests/python/chat_backend.py`, an independent implementation of
//! the same behaviour on Python's `http.server` (stdlib only), and drives it
//! over HTTP; the same tests run against both. Its wire habits differ on
//! purpose: it reads request bodies only by `content-length` (a chunked body
//! reads as empty), and ends streams by closing the connection instead of
//! chunked framing.
//!
//! # Quirks of real backends
//!
//! [`Backend::require_content_length`], [`Backend::reject_param`],
//! [`Backend::require_header`] and [`Backend::require_query`] make the
//! backend refuse requests the way some servers and gateways do;
//! [`Reply::json_despite_stream`] and [`Reply::no_usage`] answer the way
//! some proxies do.
//!
//! # Scripting a streamed tool call
//!
//! ```no_run
//! use scripted_backend::{Backend, Reply};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let backend = Backend::start()?;
//! backend.push(
//!     Reply::text("Let me check.")
//!         .reasoning("The user wants the weather.")
//!         .tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#)
//!         .tool_call("call_2", "get_time", r#"{"tz":"Europe/Paris"}"#)
//!         .usage(12, 30),
//! );
//! // Point the client at `backend.url()` ("http://127.0.0.1:PORT/v1")...
//! // ...then assert on what it sent:
//! let request = backend.last_request().expect("one request");
//! assert!(request.is_stream());
//! assert_eq!(request.header("authorization"), Some("Bearer test-key"));
//! # Ok(())
//! # }
//! ```
//!
//! Streamed, that reply is a role chunk, one chunk per reasoning word
//! (`delta.reasoning_content`), one per content word, then for each tool
//! call a chunk with `index`, `id`, `type`, `function.name` and empty
//! `function.arguments` followed by argument fragments carrying only `index`
//! and `function.arguments`; then a chunk with `finish_reason:
//! "tool_calls"`, a usage chunk when the request set
//! `stream_options.include_usage`, and `data: [DONE]`.
//!
//! # Holding a stream with a gate
//!
//! A gate proves ordering without timing: the backend stops before a chunk
//! until the test releases it.
//!
//! ```no_run
//! use scripted_backend::{Backend, Reply};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let backend = Backend::start()?;
//! let (reply, gate) = Reply::text("a b c").pause_before_last();
//! backend.push(reply);
//! // Start the client's streamed request, then:
//! gate.reached().await; // every chunk before the finish chunk is out
//! // ...assert the client already emitted its delta events...
//! gate.release(); // the finish chunk and [DONE] follow
//! # Ok(())
//! # }
//! ```
//!
//! # Faults
//!
//! [`Reply::error`] answers an HTTP error with an OpenAI error body;
//! [`Reply::cut_after`] drops the connection mid-stream;
//! [`Reply::malformed_after`] sends a frame that is not JSON;
//! [`Reply::error_after`] sends an in-stream error event;
//! [`Reply::hang`] answers nothing (for timeouts); [`Reply::raw`] sends any
//! body at all.

mod body;
mod control;
mod record;
pub mod redis;
mod remote;
mod render;
mod reply;
mod respond;
mod server;

pub use record::RecordedRequest;
pub use reply::{Gate, Reply, DEFAULT_ARGUMENT_FRAGMENT_CHARS, DEFAULT_REASONING_FIELD};
pub use server::{Backend, DEFAULT_MODEL};
