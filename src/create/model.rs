//! Step 5 of a create, the model loop: the calls to the backend that make
//! one response, their answers fed chunk by chunk through the
//! [`EventStream`] and out to the client as they arrive.
//!
//! Today a response is one call. This is where server-side tools plug in:
//! when a call ends in tool calls the server can run itself, the loop runs
//! them, appends their outputs to the chat request and calls the backend
//! again. `max_tool_calls` is counted by the loop, across its calls.

use super::emit::{Emitter, EventSink};
use crate::backend::call::{open_chat, ChatAnswer};
use crate::backend::dialect::Learned;
use crate::backend::routes::Route;
use crate::backend::{Backend, BodyStream as _};
use crate::chat::{ChatChunk, ChatRequest};
use crate::error::ApiError;
use crate::stream::sse::{SseData, SseReader};
use crate::stream::EventStream;

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
    /// The backend's tool-call indices let through so far.
    calls_seen: Vec<usize>,
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
            pending: Some(chat),
            answer: None,
            max_tool_calls,
            calls_seen: Vec::new(),
        }
    }

    /// Makes the pending call and keeps its answer. A plain request opens
    /// its first call before answering, so that a backend's refusal is
    /// answered as the HTTP error it is; a stream opens it inside
    /// [`run`](Self::run), after its first events.
    pub async fn open(&mut self) -> Result<(), ApiError> {
        let Some(chat) = self.pending.take() else {
            return Ok(());
        };
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

    /// Reads the answers through `stream` to `out` until the model is done.
    pub async fn run<S: EventSink>(
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

    /// Drops the tool calls of a chunk that go past `max_tool_calls`.
    fn limit_tool_calls(&mut self, chunk: &mut ChatChunk) {
        let Some(max) = self.max_tool_calls else {
            return;
        };
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        for choice in &mut chunk.choices {
            let seen = &mut self.calls_seen;
            choice.delta.tool_calls.retain(|call| {
                // Without an index, each fragment is a call of its own.
                let index = call.index.unwrap_or(usize::MAX - seen.len());
                if seen.contains(&index) {
                    return true;
                }
                if seen.len() < max {
                    seen.push(index);
                    return true;
                }
                false
            });
        }
    }
}
