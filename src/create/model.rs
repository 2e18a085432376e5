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

/// The `tool_choice` of the call after one whose tool calls the server
/// ran: a choice that forced a call (`required`, a named function, MCP
/// tool or web search) was honoured by that call, so the model is free to
/// answer now (`auto`), as at OpenAI; `none` and `auto` stay.
fn after_forced_call(choice: Option<serde_json::Value>) -> Option<serde_json::Value> {
    match choice {
        Some(choice) if choice == "none" => Some(choice),
        Some(_) => Some(serde_json::json!("auto")),
        None => None,
    }
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
    /// call; `Err` when the response ends there (the client has gone away,
    /// or `tool_choice` names a tool the server does not offer).
    pub async fn prepare<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Result<(), Ended> {
        let (Some(hosted), Some(chat)) = (self.hosted.as_mut(), self.pending.as_mut()) else {
            return Ok(());
        };
        if self.made > 0 {
            return Ok(());
        }
        let prepared = hosted.prepare(stream, out).await?;
        // The choice follows what is offered now: forced onto a server's
        // tool once listed, or freed when its listing failed.
        if !prepared.tools.is_empty() || chat.tool_choice.is_some() {
            chat.tool_choice = stream.chat_tool_choice();
        }
        chat.tools.extend(prepared.tools);
        chat.messages.rendered.extend(prepared.messages);
        Ok(())
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
        if let Err(ended) = self.prepare(stream, out).await {
            return ended;
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
        next.tool_choice = match spent || self.made + 1 >= MAX_CALLS {
            true => Some(serde_json::json!("none")),
            false => after_forced_call(next.tool_choice.take()),
        };
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

#[cfg(test)]
mod tests {
    use super::after_forced_call;
    use serde_json::json;

    #[test]
    fn a_forced_choice_is_freed_after_its_call() {
        let named = json!({"type": "function", "function": {"name": "calc__add"}});
        for forced in [json!("required"), named, json!("auto")] {
            assert_eq!(after_forced_call(Some(forced)), Some(json!("auto")));
        }
        assert_eq!(after_forced_call(Some(json!("none"))), Some(json!("none")));
        assert_eq!(after_forced_call(None), None);
    }
}
