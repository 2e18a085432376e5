//! Step 5 of a create, the model loop: the calls to the backend that make
//! one response, their answers fed chunk by chunk through the
//! [`EventStream`] and out to the client as they arrive.
//!
//! A response is one call unless the request names tools the server runs
//! itself ([`Hosted`]): when a call ends in calls of those tools, the loop
//! runs them, appends the call and its result to the chat request and
//! calls the backend again. Calls of the client's own tools, and calls
//! waiting for the client's approval, end the response. `max_tool_calls`
//! is counted by the loop, across its calls; `parallel_tool_calls: false`
//! lets one call through per answer.

use super::emit::{Emitter, EventSink};
use super::hosted::Hosted;
use crate::backend::call::{open_chat, ChatAnswer};
use crate::backend::dialect::Learned;
use crate::backend::routes::Route;
use crate::backend::{Backend, BodyStream as _};
use crate::chat::{ChatChunk, ChatRequest, Rendered};
use crate::error::ApiError;
use crate::stream::sse::{SseData, SseReader};
use crate::stream::EventStream;

/// Backend calls one response makes at most; the last is offered no tool.
const MAX_CALLS: usize = 16;

/// How the loop ended.
pub enum Ended {
    /// The model finished (or stopped at a limit).
    Finished,
    Failed(ApiError),
    /// The client went away.
    ClientGone,
}

/// The calls of one response.
pub struct ModelLoop<'a, Bk: Backend> {
    call: Call<'a, Bk>,
    /// The request of the call still to make.
    pending: Option<ChatRequest>,
    /// The answer of the call in flight.
    answer: Option<ChatAnswer<Bk::Body>>,
    /// `max_tool_calls`: tool calls past it are dropped.
    max_tool_calls: Option<u64>,
    /// Tool calls let through so far, over every call.
    tool_calls: u64,
    /// `parallel_tool_calls: false`: one tool call per answer.
    one_call_per_answer: bool,
    /// The backend's tool-call indices let through in the call being read.
    calls_seen: Vec<usize>,
    /// The tools the server runs, when the request names any.
    hosted: Option<Hosted<'a, Bk>>,
    /// Whether earlier reasoning goes back to the backend.
    send_reasoning: bool,
    /// The request of the last call, while another may follow.
    sent: Option<ChatRequest>,
    /// Calls made so far.
    made: usize,
}

/// What a chat call needs besides its request.
pub struct Call<'a, Bk> {
    pub backend: &'a Bk,
    pub route: &'a Route,
    pub learned: &'a Learned,
    /// The client's key, for backends that get it.
    pub client_key: Option<&'a str>,
}

impl<'a, Bk: Backend> ModelLoop<'a, Bk> {
    /// A loop whose first call is `chat`; nothing is sent yet.
    pub fn new(call: Call<'a, Bk>, chat: ChatRequest, max_tool_calls: Option<u64>) -> Self {
        ModelLoop {
            call,
            one_call_per_answer: chat.parallel_tool_calls == Some(false),
            pending: Some(chat),
            answer: None,
            max_tool_calls,
            tool_calls: 0,
            calls_seen: Vec::new(),
            hosted: None,
            send_reasoning: false,
            sent: None,
            made: 0,
        }
    }

    /// The requests that end the MCP sessions the loop opened.
    pub fn end_sessions(&self) -> Vec<crate::backend::Outbound> {
        self.hosted
            .as_ref()
            .map(Hosted::end_sessions)
            .unwrap_or_default()
    }

    /// Runs the server-side tools of `hosted` in the loop.
    pub fn with_hosted(mut self, hosted: Hosted<'a, Bk>, send_reasoning: bool) -> Self {
        self.hosted = Some(hosted).filter(|h| !h.is_empty());
        self.send_reasoning = send_reasoning;
        self
    }

    /// Lists the servers' tools and runs approved calls, before the first
    /// call; `false` once the client has gone away.
    pub async fn prepare<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        let (Some(hosted), Some(chat)) = (self.hosted.as_mut(), self.pending.as_mut()) else {
            return true;
        };
        if self.made > 0 {
            return true;
        }
        let Some(prepared) = hosted.prepare(stream, out).await else {
            return false;
        };
        if !prepared.tools.is_empty() {
            chat.tools.extend(prepared.tools);
            chat.tool_choice = stream.chat_tool_choice();
        }
        chat.messages.rendered.extend(prepared.messages);
        true
    }

    /// Makes the pending call and keeps its answer.
    pub async fn open(&mut self) -> Result<(), ApiError> {
        let Some(chat) = self.pending.take() else {
            return Ok(());
        };
        if self.hosted.is_some() {
            self.sent = Some(chat.clone());
        }
        self.made += 1;
        self.calls_seen.clear();
        let call = &self.call;
        let answer = open_chat(
            call.backend,
            call.route,
            call.learned,
            call.client_key,
            chat,
        )
        .await?;
        self.answer = Some(answer);
        Ok(())
    }

    /// Reads the answers through `stream` to `out` until the model is
    /// done, running the server's tools between calls.
    pub async fn run<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Ended {
        if !self.prepare(stream, out).await {
            return Ended::ClientGone;
        }
        loop {
            let start = stream.response().output.len();
            match self.run_call(stream, out).await {
                Ended::Finished => {}
                ended => return ended,
            }
            match self.run_tools(start, stream, out).await {
                Some(true) => {}
                Some(false) => return Ended::Finished,
                None => return Ended::ClientGone,
            }
        }
    }

    /// After a call: runs the server's tools it called and sets up the next
    /// call; `Some(false)` when the response is done, `None` once the
    /// client has gone away.
    async fn run_tools<S: EventSink>(
        &mut self,
        start: usize,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<bool> {
        let Some(hosted) = self.hosted.as_mut() else {
            return Some(false);
        };
        let (round, events) = stream.end_round();
        if !out.events(events).await {
            return None;
        }
        for call in &round.calls {
            hosted.run(call, stream, out).await?;
        }
        let Some(mut next) = self.sent.take() else {
            return Some(false);
        };
        if round.calls.is_empty() || round.client_calls || round.approvals {
            return Some(false);
        }
        let mut round_items = Rendered::new(stream.output_since(start), self.send_reasoning);
        hosted.show_results(&mut round_items.messages);
        next.messages.rendered.extend(round_items.messages);
        let spent = self
            .max_tool_calls
            .is_some_and(|max| self.tool_calls >= max);
        if spent || self.made + 1 >= MAX_CALLS {
            next.tool_choice = Some(serde_json::json!("none"));
        }
        stream.next_call();
        self.pending = Some(next);
        Some(true)
    }

    /// One backend call, its answer read to its end.
    async fn run_call<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Ended {
        match out.wait(self.open()).await {
            Some(Ok(())) => {}
            Some(Err(error)) => return Ended::Failed(error),
            None => return Ended::ClientGone,
        }
        match self.answer.take() {
            Some(ChatAnswer::Completion(chunk)) => match self.feed(chunk, stream, out).await {
                true => Ended::Finished,
                false => Ended::ClientGone,
            },
            Some(ChatAnswer::Events { first, body }) => {
                self.read_events(first, body, stream, out).await
            }
            None => Ended::Finished,
        }
    }

    /// Reads an event stream to its end: `[DONE]`, a last frame, or the
    /// connection closing after a finish reason.
    async fn read_events<S: EventSink>(
        &mut self,
        first: Vec<u8>,
        mut body: Bk::Body,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Ended {
        let mut reader = SseReader::default();
        let mut payloads = reader.push(&first);
        loop {
            if let Some(ended) = self.feed_payloads(payloads, stream, out).await {
                return ended;
            }
            let Some(piece) = out.wait(body.next()).await else {
                return Ended::ClientGone;
            };
            payloads = match piece {
                Some(Ok(bytes)) => reader.push(&bytes),
                Some(Err(e)) => {
                    return Ended::Failed(ApiError::backend(format!(
                        "The backend connection failed mid-stream: {e}"
                    )))
                }
                None => {
                    // A last frame without its blank line still counts;
                    // without one, the stream ended early unless the model
                    // had said why it stopped.
                    if let Some(last) = reader.finish() {
                        return self
                            .feed_payloads(vec![last], stream, out)
                            .await
                            .unwrap_or(Ended::Finished);
                    }
                    if stream.saw_finish() {
                        return Ended::Finished;
                    }
                    return Ended::Failed(ApiError::backend(
                        "The backend closed the stream before the completion was finished.",
                    ));
                }
            };
        }
    }

    /// Feeds SSE payloads; `Some` once they end the stream.
    async fn feed_payloads<S: EventSink>(
        &mut self,
        payloads: Vec<SseData>,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<Ended> {
        for payload in payloads {
            let data = match payload {
                SseData::Done => return Some(Ended::Finished),
                SseData::Data(data) => data,
            };
            let chunk: ChatChunk = match serde_json::from_str(&data) {
                Ok(chunk) => chunk,
                Err(e) => {
                    return Some(Ended::Failed(ApiError::backend(format!(
                        "The backend sent a malformed chunk ({e}): {}",
                        data.chars().take(200).collect::<String>()
                    ))))
                }
            };
            if let Some(message) = chunk.error_message() {
                return Some(Ended::Failed(ApiError::backend(format!(
                    "The backend reported an error mid-stream: {message}"
                ))));
            }
            if !self.feed(chunk, stream, out).await {
                return Some(Ended::ClientGone);
            }
        }
        None
    }

    /// One chunk through the event machine to the client; `false` once the
    /// client has gone away.
    async fn feed<S: EventSink>(
        &mut self,
        mut chunk: ChatChunk,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> bool {
        self.limit_tool_calls(&mut chunk);
        out.events(stream.feed(chunk)).await
    }

    /// Drops the tool calls of a chunk that go past `max_tool_calls`, or
    /// past the first of the answer when calls may not run in parallel.
    fn limit_tool_calls(&mut self, chunk: &mut ChatChunk) {
        if self.max_tool_calls.is_none() && !self.one_call_per_answer {
            return;
        }
        let max = self.max_tool_calls.unwrap_or(u64::MAX);
        let per_answer = if self.one_call_per_answer {
            1
        } else {
            usize::MAX
        };
        for choice in &mut chunk.choices {
            let seen = &mut self.calls_seen;
            let total = &mut self.tool_calls;
            choice.delta.tool_calls.retain(|call| {
                // Without an index, each fragment is a call of its own.
                let index = call.index.unwrap_or(usize::MAX - seen.len());
                if seen.contains(&index) {
                    return true;
                }
                if *total < max && seen.len() < per_answer {
                    seen.push(index);
                    *total += 1;
                    return true;
                }
                false
            });
        }
    }
}
