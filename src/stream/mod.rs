//! The streaming translation: chat-completions chunks in, Responses events
//! out, and the Response object they describe.
//!
//! [`EventStream`] is a state machine fed one backend chunk at a time. It
//! opens output items as content appears (reasoning, then message text, then
//! tool calls), emits their deltas, closes them, and ends with exactly one
//! terminal event. The non-streaming path runs the same machine and keeps
//! only the final [`Response`], so both paths produce identical objects.
//!
//! The module is long because the machine is one type whose transitions
//! share its open items; the finished items it writes are in `output`.

pub mod events;
mod hosted;
mod output;
pub mod sse;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::items::{ContentPart, Item, Message, Reasoning, Role, Status};
use crate::api::response::{IncompleteDetails, Response, ResponseError, ResponseStatus};
use crate::chat::{ChatChunk, ChatUsage, ThinkTags, ToolCallDelta, ToolKind, ToolMap};
use crate::error::ApiError;
use crate::ids::Env;
use events::{Event, EventKind, Part, Progress};
pub use hosted::{ListingSlot, Round, ServerCall, ServerTool};
use output::{call_item, custom_input, message_item, reasoning_item, response_error_code, usage};

/// The open reasoning item.
struct OpenReasoning {
    index: usize,
    id: String,
    text: String,
}

/// The open assistant message.
struct OpenMessage {
    index: usize,
    id: String,
    text: String,
    logprobs: Vec<Value>,
}

/// A tool call being assembled from fragments, keyed by the backend's index.
#[derive(Default)]
struct OpenCall {
    /// Output position once announced.
    index: Option<usize>,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Chat-completions chunks → Responses events.
pub struct EventStream {
    response: Response,
    tools: ToolMap,
    reasoning: Option<OpenReasoning>,
    message: Option<OpenMessage>,
    calls: BTreeMap<usize, OpenCall>,
    finish_reason: Option<String>,
    usage: Option<ChatUsage>,
    sequence: u64,
    pending: Vec<Event>,
    /// Splits reasoning out of the content, for backends that put it in
    /// `<think>` tags.
    think_tags: Option<ThinkTags>,
    /// Where item ids and the completion time come from.
    env: Env,
    /// Calls the server runs itself, announced and not yet done.
    running: Vec<ServerCall>,
    /// What the response's searches found: the sources its text may cite.
    sources: Vec<crate::search::Source>,
}

impl EventStream {
    /// A stream for `response` (in progress, no output yet).
    pub fn new(response: Response, tools: ToolMap, env: Env) -> Self {
        EventStream {
            response,
            tools,
            reasoning: None,
            message: None,
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
            sequence: 0,
            pending: Vec::new(),
            think_tags: None,
            env,
            running: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Reads reasoning from `<think>` tags at the start of the content.
    pub fn with_think_tags(mut self) -> Self {
        self.think_tags = Some(ThinkTags::default());
        self
    }

    /// The response as it stands.
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// Whether the backend said why it stopped (a `finish_reason`).
    pub fn saw_finish(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// Consumes the stream, returning the response.
    pub fn into_response(self) -> Response {
        self.response
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Event> {
        let snapshot = Box::new(self.response.clone());
        self.emit(EventKind::Created {
            response: snapshot.clone(),
        });
        self.emit(EventKind::InProgress { response: snapshot });
        self.take()
    }

    /// A background response's first events: `response.created` and
    /// `response.queued` with the response `queued`, as its create was
    /// answered, then `response.in_progress`.
    pub fn start_queued(&mut self) -> Vec<Event> {
        let mut queued = Box::new(self.response.clone());
        queued.status = crate::api::response::ResponseStatus::Queued;
        self.emit(EventKind::Created {
            response: queued.clone(),
        });
        self.emit(EventKind::Queued { response: queued });
        let snapshot = Box::new(self.response.clone());
        self.emit(EventKind::InProgress { response: snapshot });
        self.take()
    }

    /// An item made before the model's answer (a `compaction`), added to
    /// the output whole: its `output_item.added` and `.done`.
    pub fn complete_item(&mut self, item: Item) -> Vec<Event> {
        let index = self.add_item(item.clone());
        self.done_item(index, item);
        self.take()
    }

    /// Applies one backend chunk.
    pub fn feed(&mut self, chunk: ChatChunk) -> Vec<Event> {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in chunk.choices.into_iter().take(1) {
            let delta = choice.delta;
            if let Some(text) = delta.reasoning_text() {
                self.reasoning_delta(text);
            }
            let logprobs = choice.logprobs.and_then(|l| l.content).unwrap_or_default();
            let content = match (&mut self.think_tags, delta.content) {
                (Some(tags), Some(content)) => {
                    let split = tags.push(&content);
                    if !split.reasoning.is_empty() {
                        self.reasoning_delta(&split.reasoning);
                    }
                    Some(split.content)
                }
                (_, content) => content,
            };
            let text = [content.as_deref(), delta.refusal.as_deref()]
                .into_iter()
                .flatten()
                .collect::<String>();
            if !text.is_empty() || !logprobs.is_empty() {
                self.text_delta(&text, logprobs);
            }
            for call in delta.tool_calls {
                self.tool_call_delta(call);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
        }
        self.take()
    }

    /// Closes every open item and emits the terminal event:
    /// `response.completed`, or `response.incomplete` when the backend hit
    /// its length limit.
    pub fn finish(&mut self) -> Vec<Event> {
        self.flush_think_tags();
        let truncated = matches!(self.finish_reason.as_deref(), Some("length"));
        let filtered = matches!(self.finish_reason.as_deref(), Some("content_filter"));
        let item_status = if truncated {
            Status::Incomplete
        } else {
            Status::Completed
        };
        self.close_all(item_status);
        self.close_running();
        self.take_usage();
        self.response.completed_at = Some(self.env.now());
        if truncated || filtered {
            let reason = if truncated {
                "max_output_tokens"
            } else {
                "content_filter"
            };
            self.response.status = ResponseStatus::Incomplete;
            self.response.incomplete_details = Some(IncompleteDetails {
                reason: reason.to_owned(),
            });
            let response = Box::new(self.response.clone());
            self.emit(EventKind::Incomplete { response });
        } else {
            self.response.status = ResponseStatus::Completed;
            let response = Box::new(self.response.clone());
            self.emit(EventKind::Completed { response });
        }
        self.take()
    }

    /// Ends the stream with an `error` event and `response.failed`.
    pub fn fail(&mut self, error: &ApiError) -> Vec<Event> {
        self.flush_think_tags();
        self.close_all(Status::Incomplete);
        self.close_running();
        self.take_usage();
        self.response.status = ResponseStatus::Failed;
        self.response.incomplete_details = None;
        let code = error
            .code
            .clone()
            .unwrap_or_else(|| "server_error".to_owned());
        self.response.error = Some(ResponseError {
            code: response_error_code(&code).to_owned(),
            message: error.message.clone(),
        });
        self.emit(EventKind::Error {
            code: Some(code),
            message: error.message.clone(),
            param: error.param.clone(),
        });
        let response = Box::new(self.response.clone());
        self.emit(EventKind::Failed { response });
        self.take()
    }

    /// Turns the unsent end of a stream (what [`finish`](Self::finish) or
    /// [`fail`](Self::fail) returned) into a failure for `error`: its
    /// terminal event, and the `error` event before it, give way to `error`
    /// and `response.failed`, numbered in their place. Used when the
    /// response could not be stored.
    pub fn fail_instead(&mut self, mut events: Vec<Event>, error: &ApiError) -> Vec<Event> {
        while let Some(last) = events.pop_if(|e| e.kind.ends_stream()) {
            self.sequence = last.sequence_number;
        }
        events.extend(self.fail(error));
        events
    }

    /// Marks the response as cut short because the client went away; no
    /// events, as nobody is listening.
    pub fn interrupt(&mut self) {
        self.flush_think_tags();
        self.close_all(Status::Incomplete);
        self.close_running();
        self.pending.clear();
        self.take_usage();
        self.response.status = ResponseStatus::Incomplete;
        self.response.incomplete_details = Some(IncompleteDetails {
            reason: "interrupted".to_owned(),
        });
    }

    /// Ends a background response its client cancelled: what was produced
    /// so far, unfinished items closed, status `cancelled`, announced by
    /// `response.incomplete` (the stream events have no type of their own
    /// for a cancel).
    pub fn cancel(&mut self) -> Vec<Event> {
        self.flush_think_tags();
        self.close_all(Status::Incomplete);
        self.close_running();
        self.take_usage();
        self.response.status = ResponseStatus::Cancelled;
        self.response.completed_at = Some(self.env.now());
        let response = Box::new(self.response.clone());
        self.emit(EventKind::Incomplete { response });
        self.take()
    }

    /// Emits what the think-tag splitter held back at the end of the content.
    fn flush_think_tags(&mut self) {
        let Some(split) = self.think_tags.as_mut().map(ThinkTags::finish) else {
            return;
        };
        if !split.reasoning.is_empty() {
            self.reasoning_delta(&split.reasoning);
        }
        if !split.content.is_empty() {
            self.text_delta(&split.content, Vec::new());
        }
    }

    /// Adds the backend's usage of the last call to the response's; what
    /// earlier calls recorded stays when there is nothing new.
    fn take_usage(&mut self) {
        if let Some(chat) = self.usage.take() {
            let last = usage(chat);
            self.response.usage = Some(match self.response.usage.take() {
                Some(before) => before.plus(&last),
                None => last,
            });
        }
    }

    fn emit(&mut self, kind: EventKind) {
        self.pending.push(Event {
            kind,
            sequence_number: self.sequence,
        });
        self.sequence += 1;
    }

    fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    /// Appends an item to the output and announces it.
    fn add_item(&mut self, item: Item) -> usize {
        let index = self.response.output.len();
        self.response.output.push(item.clone());
        self.emit(EventKind::OutputItemAdded {
            output_index: index,
            item,
        });
        index
    }

    /// Replaces an item with its final form and closes it.
    fn done_item(&mut self, index: usize, item: Item) {
        if let Some(slot) = self.response.output.get_mut(index) {
            *slot = item.clone();
        }
        self.emit(EventKind::OutputItemDone {
            output_index: index,
            item,
        });
    }

    fn reasoning_delta(&mut self, delta: &str) {
        if self.message.is_some() {
            self.close_message(Status::Completed);
        }
        if self.reasoning.is_none() {
            let id = self.env.new_id("rs");
            let index = self.add_item(Item::Reasoning(Reasoning {
                id: Some(id.clone()),
                summary: Vec::new(),
                content: Some(Vec::new()),
                encrypted_content: None,
                status: Some(Status::InProgress),
            }));
            self.emit(EventKind::ContentPartAdded {
                item_id: id.clone(),
                output_index: index,
                content_index: 0,
                part: Part::reasoning(""),
            });
            self.reasoning = Some(OpenReasoning {
                index,
                id,
                text: String::new(),
            });
        }
        let Some(open) = self.reasoning.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        let (item_id, output_index) = (open.id.clone(), open.index);
        self.emit(EventKind::ReasoningTextDelta {
            item_id,
            output_index,
            content_index: 0,
            delta: delta.to_owned(),
        });
    }

    fn text_delta(&mut self, delta: &str, logprobs: Vec<Value>) {
        if self.reasoning.is_some() {
            self.close_reasoning();
        }
        if self.message.is_none() {
            let id = self.env.new_id("msg");
            let index = self.add_item(Item::Message(Message {
                id: Some(id.clone()),
                role: Role::Assistant,
                content: Vec::new(),
                status: Some(Status::InProgress),
                phase: None,
            }));
            self.emit(EventKind::ContentPartAdded {
                item_id: id.clone(),
                output_index: index,
                content_index: 0,
                part: Part::Content(ContentPart::output_text("")),
            });
            self.message = Some(OpenMessage {
                index,
                id,
                text: String::new(),
                logprobs: Vec::new(),
            });
        }
        let Some(open) = self.message.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        open.logprobs.extend(logprobs.iter().cloned());
        let (item_id, output_index) = (open.id.clone(), open.index);
        self.emit(EventKind::OutputTextDelta {
            item_id,
            output_index,
            content_index: 0,
            delta: delta.to_owned(),
            logprobs,
        });
    }

    fn tool_call_delta(&mut self, delta: ToolCallDelta) {
        let key = delta.index.unwrap_or(self.calls.len());
        let call = self.calls.entry(key).or_default();
        // Most backends send the id and the name once; some split them
        // across chunks, others repeat them whole in every chunk.
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            if call.call_id != id {
                call.call_id.push_str(&id);
            }
        }
        let mut fragment = String::new();
        if let Some(function) = delta.function {
            if let Some(name) = function.name.filter(|name| *name != call.name) {
                call.name.push_str(&name);
            }
            fragment = function.arguments.unwrap_or_default();
        }
        if call.index.is_none() && !call.name.is_empty() && !fragment.is_empty() {
            self.announce_call(key);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.arguments.push_str(&fragment);
        if let (Some(output_index), false) = (call.index, fragment.is_empty()) {
            let item_id = call.item_id.clone();
            match self.tools.lookup(&call.name) {
                ToolKind::Function { .. } => self.emit(EventKind::FunctionCallArgumentsDelta {
                    item_id,
                    output_index,
                    delta: fragment,
                }),
                ToolKind::Mcp {
                    approval: false, ..
                } => self.emit(EventKind::McpCallArgumentsDelta {
                    item_id,
                    output_index,
                    delta: fragment,
                }),
                ToolKind::Custom { .. } | ToolKind::Mcp { .. } | ToolKind::WebSearch => {}
            }
        }
    }

    /// Opens the output item of a tool call once its name is known.
    fn announce_call(&mut self, key: usize) {
        if self.reasoning.is_some() {
            self.close_reasoning();
        }
        if self.message.is_some() {
            self.close_message(Status::Completed);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.call_id.is_empty() {
            call.call_id = self.env.new_id("call");
        }
        let kind = self.tools.lookup(&call.name);
        call.item_id = self.env.new_id(match kind {
            ToolKind::Function { .. } => "fc",
            ToolKind::Custom { .. } => "ctc",
            ToolKind::Mcp { approval: true, .. } => "mcpr",
            ToolKind::Mcp { .. } => "mcp",
            ToolKind::WebSearch => "ws",
        });
        let item_id = call.item_id.clone();
        let item = call_item(call, &kind, String::new(), Status::InProgress);
        let index = self.add_item(item);
        if let Some(call) = self.calls.get_mut(&key) {
            call.index = Some(index);
        }
        match kind {
            ToolKind::Mcp {
                approval: false, ..
            } => self.progress(Progress::CallInProgress, item_id, index),
            ToolKind::WebSearch => self.progress(Progress::SearchInProgress, item_id, index),
            _ => {}
        }
    }

    fn close_reasoning(&mut self) {
        let Some(open) = self.reasoning.take() else {
            return;
        };
        self.emit(EventKind::ReasoningTextDone {
            item_id: open.id.clone(),
            output_index: open.index,
            content_index: 0,
            text: open.text.clone(),
        });
        self.emit(EventKind::ContentPartDone {
            item_id: open.id.clone(),
            output_index: open.index,
            content_index: 0,
            part: Part::reasoning(open.text.clone()),
        });
        let item = reasoning_item(&open.id, &open.text, Status::Completed);
        self.done_item(open.index, item);
    }

    fn close_message(&mut self, status: Status) {
        let Some(open) = self.message.take() else {
            return;
        };
        let annotations = self.citations(&open.id, open.index, &open.text);
        let part = ContentPart::OutputText {
            text: open.text.clone(),
            annotations,
            logprobs: open.logprobs.clone(),
        };
        self.emit(EventKind::OutputTextDone {
            item_id: open.id.clone(),
            output_index: open.index,
            content_index: 0,
            text: open.text.clone(),
            logprobs: open.logprobs,
        });
        self.emit(EventKind::ContentPartDone {
            item_id: open.id.clone(),
            output_index: open.index,
            content_index: 0,
            part: Part::Content(part.clone()),
        });
        self.done_item(open.index, message_item(&open.id, part, status));
    }

    /// The `url_citation`s of a message's text, each announced with
    /// `response.output_text.annotation.added`.
    fn citations(&mut self, item_id: &str, output_index: usize, text: &str) -> Vec<Value> {
        if self.sources.is_empty() {
            return Vec::new();
        }
        let citations = crate::search::url_citations(text, &self.sources);
        let mut annotations = Vec::with_capacity(citations.len());
        for (annotation_index, citation) in citations.iter().enumerate() {
            let annotation = serde_json::to_value(citation).unwrap_or_default();
            self.emit(EventKind::OutputTextAnnotationAdded {
                item_id: item_id.to_owned(),
                output_index,
                content_index: 0,
                annotation_index,
                annotation: annotation.clone(),
            });
            annotations.push(annotation);
        }
        annotations
    }

    fn close_calls(&mut self, status: Status) {
        let keys: Vec<usize> = self.calls.keys().copied().collect();
        for key in keys {
            let announced = self.calls.get(&key).is_some_and(|c| c.index.is_some());
            let named = self.calls.get(&key).is_some_and(|c| !c.name.is_empty());
            if !announced && named {
                self.announce_call(key);
            }
        }
        for (_, call) in std::mem::take(&mut self.calls) {
            let Some(index) = call.index else { continue };
            let kind = self.tools.lookup(&call.name);
            match &kind {
                ToolKind::Function { name, .. } => {
                    self.emit(EventKind::FunctionCallArgumentsDone {
                        item_id: call.item_id.clone(),
                        output_index: index,
                        name: name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
                ToolKind::Mcp {
                    server,
                    name,
                    approval: false,
                } => {
                    self.emit(EventKind::McpCallArgumentsDone {
                        item_id: call.item_id.clone(),
                        output_index: index,
                        arguments: call.arguments.clone(),
                    });
                    // Run by the model loop, which then closes it.
                    self.running.push(ServerCall {
                        index,
                        item_id: call.item_id,
                        tool: ServerTool::Mcp {
                            server: server.clone(),
                            name: name.clone(),
                        },
                        arguments: call.arguments,
                        approval_request_id: None,
                    });
                    continue;
                }
                ToolKind::WebSearch => {
                    self.running.push(ServerCall {
                        index,
                        item_id: call.item_id,
                        tool: ServerTool::WebSearch,
                        arguments: call.arguments,
                        approval_request_id: None,
                    });
                    continue;
                }
                ToolKind::Mcp { .. } => {}
                ToolKind::Custom { .. } => {
                    let input = custom_input(&call.arguments);
                    self.emit(EventKind::CustomToolCallInputDelta {
                        item_id: call.item_id.clone(),
                        output_index: index,
                        delta: input.clone(),
                    });
                    self.emit(EventKind::CustomToolCallInputDone {
                        item_id: call.item_id.clone(),
                        output_index: index,
                        input,
                    });
                }
            }
            let item = call_item(&call, &kind, call.arguments.clone(), status);
            self.done_item(index, item);
        }
    }

    fn close_all(&mut self, status: Status) {
        self.close_reasoning();
        self.close_message(status);
        self.close_calls(status);
    }
}

#[cfg(test)]
mod tests;
