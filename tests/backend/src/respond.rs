//! Answering one chat-completions request: plays a [`Reply`] out as an HTTP
//! response, with its delays, gates and faults.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::body::{ScriptBody, Sink};
use crate::render::{error_body, Renderer, RequestInfo, StreamPlan};
use crate::reply::{ErrorReply, Faults, GatePosition, Kind, Reply, Timing};

/// The answer to a request; `None` closes the connection without one.
pub(crate) type Outcome = Option<Response<ScriptBody>>;

const DONE_FRAME: &str = "data: [DONE]\n\n";
const MALFORMED_FRAME: &str = "data: {\"id\":\"chatcmpl-malformed\",\"choices\":[{\"delta\":\n\n";
const KEEPALIVE_FRAME: &str = ": keep-alive\n\n";

/// Plays `reply` out for the request described by `info`.
pub(crate) async fn respond(reply: Reply, info: RequestInfo) -> Outcome {
    let response = match &reply.kind {
        Kind::Hang(duration) => {
            tokio::time::sleep(*duration).await;
            return None;
        }
        Kind::Completion if info.stream && !reply.completion.json_despite_stream => {
            stream_response(&reply, &info)
        }
        Kind::Completion => {
            hold(&reply.timing).await;
            completion_response(&reply, &info)
        }
        Kind::Error(error) => {
            hold(&reply.timing).await;
            error_response(error)
        }
        Kind::Raw {
            status,
            content_type,
            body,
        } => {
            hold(&reply.timing).await;
            raw_response(*status, content_type, body.clone())
        }
    };
    Some(with_headers(response, &reply.headers))
}

/// A complete JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<ScriptBody> {
    response(
        status,
        "application/json",
        ScriptBody::full(body.to_string()),
    )
}

fn response(status: StatusCode, content_type: &str, body: ScriptBody) -> Response<ScriptBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn with_headers(
    mut response: Response<ScriptBody>,
    headers: &[(String, String)],
) -> Response<ScriptBody> {
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_str(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Waits for every gate, then the initial delay: how a non-streamed answer
/// is held back.
async fn hold(timing: &Timing) {
    for (_, gate) in &timing.gates {
        gate.pass().await;
    }
    sleep(timing.before_first).await;
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn error_response(error: &ErrorReply) -> Response<ScriptBody> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = error_body(
        &error.message,
        &error.error_type,
        error.param.as_deref(),
        error.code.as_deref(),
    );
    json_response(status, &body)
}

fn raw_response(status: u16, content_type: &str, body: String) -> Response<ScriptBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response(status, content_type, ScriptBody::full(body))
}

fn completion_response(reply: &Reply, info: &RequestInfo) -> Response<ScriptBody> {
    if let Some((_, message)) = &reply.faults.error_after {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Renderer::stream_error(message),
        );
    }
    let body = Bytes::from(
        Renderer::new(&reply.completion, info)
            .completion()
            .to_string(),
    );
    let half = body.slice(..body.len() / 2);
    let body = if reply.faults.cut_after.is_some() {
        cut_body(body.len(), half)
    } else if reply.faults.malformed_after.is_some() {
        ScriptBody::full(half)
    } else {
        ScriptBody::full(body)
    };
    response(StatusCode::OK, "application/json", body)
}

/// A body that announces `length` bytes, sends `sent`, then drops the
/// connection.
fn cut_body(length: usize, sent: Bytes) -> ScriptBody {
    ScriptBody::streamed(Some(length as u64), move |sink| async move {
        if sink.send(sent).await {
            sink.drained().await;
            sink.abort().await;
        }
    })
}

fn stream_response(reply: &Reply, info: &RequestInfo) -> Response<ScriptBody> {
    let script = StreamScript {
        plan: Renderer::new(&reply.completion, info).stream(),
        faults: reply.faults.clone(),
        timing: reply.timing.clone(),
        keepalive_comment: reply.completion.keepalive_comment,
    };
    let body = ScriptBody::streamed(None, move |sink| script.run(sink));
    let mut response = response(StatusCode::OK, "text/event-stream", body);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Everything a streamed answer plays out.
struct StreamScript {
    plan: StreamPlan,
    faults: Faults,
    timing: Timing,
    keepalive_comment: bool,
}

/// What happens at a point of the stream instead of (or besides) the next
/// chunk.
enum Fault<'a> {
    Cut,
    Malformed,
    Error(&'a str),
}

impl StreamScript {
    async fn run(self, sink: Sink) {
        if self.keepalive_comment && !sink.send(KEEPALIVE_FRAME).await {
            return;
        }
        for (index, chunk) in self.plan.chunks.iter().enumerate() {
            if !self.before_chunk(index, &sink).await {
                return;
            }
            if !sink.send(data_frame(chunk)).await {
                return;
            }
        }
        if !self.apply_fault(self.plan.chunks.len(), &sink).await {
            return;
        }
        self.pass_gates(|position| self.holds_before_done(position), &sink)
            .await;
        if !self.faults.omit_done {
            sink.send(DONE_FRAME).await;
        }
    }

    /// Faults, gates and delay before chunk `index`; `false` ends the
    /// stream.
    async fn before_chunk(&self, index: usize, sink: &Sink) -> bool {
        if !self.apply_fault(index, sink).await {
            return false;
        }
        self.pass_gates(|position| self.holds_before(position, index), sink)
            .await;
        let delay = if index == 0 {
            self.timing.before_first
        } else {
            self.timing.between_chunks
        };
        sleep(delay).await;
        true
    }

    /// Plays the fault placed after `sent` chunks, if any; `false` ends the
    /// stream.
    async fn apply_fault(&self, sent: usize, sink: &Sink) -> bool {
        match self.fault_at(sent) {
            None => true,
            Some(Fault::Cut) => {
                sink.drained().await;
                sink.abort().await;
                false
            }
            Some(Fault::Malformed) => sink.send(MALFORMED_FRAME).await,
            Some(Fault::Error(message)) => {
                sink.send(data_frame(&Renderer::stream_error(message)))
                    .await;
                sink.send(DONE_FRAME).await;
                false
            }
        }
    }

    /// The fault placed after `sent` chunks; a position past the last chunk
    /// means just before `data: [DONE]`.
    fn fault_at(&self, sent: usize) -> Option<Fault<'_>> {
        let at = |after: usize| after.min(self.plan.chunks.len()) == sent;
        if self.faults.cut_after.is_some_and(at) {
            return Some(Fault::Cut);
        }
        if self.faults.malformed_after.is_some_and(at) {
            return Some(Fault::Malformed);
        }
        match &self.faults.error_after {
            Some((after, message)) if at(*after) => Some(Fault::Error(message)),
            _ => None,
        }
    }

    async fn pass_gates(&self, holds: impl Fn(GatePosition) -> bool, sink: &Sink) {
        for (position, gate) in &self.timing.gates {
            if holds(*position) {
                sink.drained().await;
                gate.pass().await;
            }
        }
    }

    fn holds_before(&self, position: GatePosition, index: usize) -> bool {
        match position {
            GatePosition::Chunk(chunk) => chunk == index,
            GatePosition::Finish => self.plan.finish_index == index,
            GatePosition::Done => false,
        }
    }

    fn holds_before_done(&self, position: GatePosition) -> bool {
        match position {
            GatePosition::Chunk(chunk) => chunk >= self.plan.chunks.len(),
            GatePosition::Finish => false,
            GatePosition::Done => true,
        }
    }
}

fn data_frame(chunk: &Value) -> String {
    format!("data: {chunk}\n\n")
}
