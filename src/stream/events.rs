//! Streaming events of the Responses API, as they go on the wire.

use serde::Serialize;
use serde_json::Value;

use crate::api::items::{ContentPart, Item};
use crate::api::response::Response;

/// One event with its position in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub kind: EventKind,
    pub sequence_number: u64,
}

/// The event kinds we emit. The serde tag is the wire `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum EventKind {
    #[serde(rename = "response.created")]
    Created { response: Box<Response> },
    #[serde(rename = "response.queued")]
    Queued { response: Box<Response> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<Response> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { output_index: usize, item: Item },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { output_index: usize, item: Item },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: Part,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: Part,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
    },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomToolCallInputDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomToolCallInputDone {
        item_id: String,
        output_index: usize,
        input: String,
    },
    #[serde(rename = "response.output_text.annotation.added")]
    OutputTextAnnotationAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        annotation_index: usize,
        annotation: Value,
    },
    #[serde(rename = "response.mcp_call_arguments.delta")]
    McpCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.mcp_call_arguments.done")]
    McpCallArgumentsDone {
        item_id: String,
        output_index: usize,
        arguments: String,
    },
    #[serde(rename = "response.completed")]
    Completed { response: Box<Response> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<Response> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<Response> },
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
    },
    /// The progress of an item the server works on itself (an MCP listing
    /// or call): the event is named by its [`Progress`]. Untagged
    /// variants come last.
    #[serde(untagged)]
    Progress {
        #[serde(rename = "type")]
        progress: Progress,
        item_id: String,
        output_index: usize,
    },
}

/// The steps of an item the server works on itself, each an event type
/// that carries only the item's id and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Progress {
    #[serde(rename = "response.mcp_list_tools.in_progress")]
    ListToolsInProgress,
    #[serde(rename = "response.mcp_list_tools.completed")]
    ListToolsCompleted,
    #[serde(rename = "response.mcp_list_tools.failed")]
    ListToolsFailed,
    #[serde(rename = "response.mcp_call.in_progress")]
    CallInProgress,
    #[serde(rename = "response.mcp_call.completed")]
    CallCompleted,
    #[serde(rename = "response.mcp_call.failed")]
    CallFailed,
    #[serde(rename = "response.web_search_call.in_progress")]
    SearchInProgress,
    #[serde(rename = "response.web_search_call.searching")]
    SearchSearching,
    #[serde(rename = "response.web_search_call.completed")]
    SearchCompleted,
}

impl Progress {
    /// The event type.
    pub fn name(self) -> &'static str {
        match self {
            Progress::ListToolsInProgress => "response.mcp_list_tools.in_progress",
            Progress::ListToolsCompleted => "response.mcp_list_tools.completed",
            Progress::ListToolsFailed => "response.mcp_list_tools.failed",
            Progress::CallInProgress => "response.mcp_call.in_progress",
            Progress::CallCompleted => "response.mcp_call.completed",
            Progress::CallFailed => "response.mcp_call.failed",
            Progress::SearchInProgress => "response.web_search_call.in_progress",
            Progress::SearchSearching => "response.web_search_call.searching",
            Progress::SearchCompleted => "response.web_search_call.completed",
        }
    }
}

/// A content part as the part events carry it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Part {
    Content(ContentPart),
    Reasoning {
        #[serde(rename = "type")]
        kind: &'static str,
        text: String,
    },
}

impl Part {
    pub fn reasoning(text: impl Into<String>) -> Self {
        Part::Reasoning {
            kind: "reasoning_text",
            text: text.into(),
        }
    }
}

impl EventKind {
    /// The wire `type` of the event.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "response.created",
            EventKind::Queued { .. } => "response.queued",
            EventKind::InProgress { .. } => "response.in_progress",
            EventKind::OutputItemAdded { .. } => "response.output_item.added",
            EventKind::OutputItemDone { .. } => "response.output_item.done",
            EventKind::ContentPartAdded { .. } => "response.content_part.added",
            EventKind::ContentPartDone { .. } => "response.content_part.done",
            EventKind::OutputTextDelta { .. } => "response.output_text.delta",
            EventKind::OutputTextDone { .. } => "response.output_text.done",
            EventKind::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            EventKind::ReasoningTextDone { .. } => "response.reasoning_text.done",
            EventKind::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            EventKind::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            EventKind::CustomToolCallInputDelta { .. } => "response.custom_tool_call_input.delta",
            EventKind::CustomToolCallInputDone { .. } => "response.custom_tool_call_input.done",
            EventKind::OutputTextAnnotationAdded { .. } => "response.output_text.annotation.added",
            EventKind::McpCallArgumentsDelta { .. } => "response.mcp_call_arguments.delta",
            EventKind::McpCallArgumentsDone { .. } => "response.mcp_call_arguments.done",
            EventKind::Progress { progress, .. } => progress.name(),
            EventKind::Completed { .. } => "response.completed",
            EventKind::Incomplete { .. } => "response.incomplete",
            EventKind::Failed { .. } => "response.failed",
            EventKind::Error { .. } => "error",
        }
    }
}

impl EventKind {
    /// Whether the event belongs to the end of a stream: a terminal event,
    /// or the `error` event that precedes `response.failed`.
    pub fn ends_stream(&self) -> bool {
        matches!(
            self,
            EventKind::Completed { .. }
                | EventKind::Incomplete { .. }
                | EventKind::Failed { .. }
                | EventKind::Error { .. }
        )
    }
}

impl Event {
    /// The event as one server-sent-events frame: `event:` line, one `data:`
    /// line, blank line.
    pub fn to_sse(&self) -> Vec<u8> {
        let data = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","message":"event encoding failed: {e}"}}"#)
        });
        let name = self.kind.name();
        let mut frame = Vec::with_capacity(data.len() + name.len() + 16);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(name.as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        frame.extend_from_slice(data.as_bytes());
        frame.extend_from_slice(b"\n\n");
        frame
    }
}

/// The frame that ends every stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";
