//! A backend for native tests: it answers from a queue of scripted answers
//! and records what it was sent; and a service wired to it, on
//! [`MemoryKv`], with a fixed clock and counting ids.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::{json, Value};

use super::dialect::Learned;
use super::{Answer, Backend, BodyStream, Method, Outbound};
use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::fixed::{self, FixedClock};
use crate::service::Service;
use crate::store::MemoryKv;

/// One scripted answer: a head and the pieces of its body, or a transport
/// failure.
pub type Scripted = Result<(u16, &'static str, Vec<Vec<u8>>), ApiError>;

/// A backend that answers from a queue and records what it was sent. With
/// the queue empty it streams "ok".
#[derive(Default)]
pub struct ReplayBackend {
    answers: RefCell<VecDeque<Scripted>>,
    pub sent: RefCell<Vec<Outbound>>,
    /// The `mcp-session-id` every answer carries.
    pub session: RefCell<Option<String>>,
}

pub struct ReplayBody(VecDeque<Vec<u8>>);

impl BodyStream for ReplayBody {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.0.pop_front().map(Ok)
    }
}

impl Backend for Rc<ReplayBackend> {
    type Body = ReplayBody;

    async fn send(&self, request: Outbound) -> Result<Answer<ReplayBody>, ApiError> {
        self.sent.borrow_mut().push(request);
        let next = self.answers.borrow_mut().pop_front();
        let (status, content_type, pieces) = next.unwrap_or_else(|| Ok(events(&text("ok"))))?;
        Ok(Answer {
            status,
            content_type: Some(content_type.to_owned()),
            session: self.session.borrow().clone(),
            body: ReplayBody(pieces.into()),
        })
    }
}

impl ReplayBackend {
    pub fn push(&self, answer: Scripted) {
        self.answers.borrow_mut().push_back(answer);
    }

    /// Queues a whole body with its status and content type.
    pub fn push_body(&self, status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) {
        self.push(Ok((status, content_type, vec![body.into()])));
    }

    /// The JSON bodies of the chat requests sent so far.
    pub fn chats(&self) -> Vec<Value> {
        self.sent
            .borrow()
            .iter()
            .filter(|r| r.method == Method::Post)
            .map(|r| serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap())
            .collect()
    }
}

/// Chunks that stream `words` as content, then stop with usage.
pub fn text(words: &str) -> Vec<Value> {
    let mut chunks: Vec<Value> = words
        .split_inclusive(' ')
        .map(|w| json!({"choices": [{"index": 0, "delta": {"content": w}}]}))
        .collect();
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    chunks.push(json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}));
    chunks
}

/// An event-stream answer, one chunk per body piece, ending in `[DONE]`.
pub fn events(chunks: &[Value]) -> (u16, &'static str, Vec<Vec<u8>>) {
    let mut pieces: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| format!("data: {c}\n\n").into_bytes())
        .collect();
    pieces.push(b"data: [DONE]\n\n".to_vec());
    (200, "text/event-stream", pieces)
}

/// A service on the replay backend and [`MemoryKv`], configured with
/// `pairs` (a backend URL is given), at time `now`.
pub fn service(
    pairs: &[(&str, &str)],
    now: i64,
) -> (
    Service<MemoryKv, Rc<ReplayBackend>>,
    Rc<ReplayBackend>,
    Rc<FixedClock>,
) {
    let mut all = vec![("backend_url".to_owned(), "http://127.0.0.1:9/v1".to_owned())];
    all.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let backend = Rc::new(ReplayBackend::default());
    let (env, clock) = fixed::env(now);
    let service = Service {
        settings: Settings::from_pairs(all).unwrap(),
        kv: MemoryKv::default(),
        backend: backend.clone(),
        learned: Rc::new(Learned::default()),
        env,
        sessions: Default::default(),
    };
    (service, backend, clock)
}
