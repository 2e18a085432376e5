//! The Chat Completions side: what we send to the backend and what it sends
//! back.
//!
//! [`ChatRequest::build`] turns a Responses request plus its conversation
//! history into one `/chat/completions` request; the `answer` module reads
//! what comes back.

mod answer;
mod messages;
mod think;
mod tools;

pub use answer::{
    ChatChunk, ChatCompletion, ChatUsage, ChunkChoice, ChunkLogprobs, CompletionChoice, Delta,
    FunctionDelta, ToolCallDelta,
};
pub use messages::{to_messages, Rendered, RENDERING};
pub use think::ThinkTags;
pub use tools::{flat_name, mcp_function_name, McpOffer, ToolKind, ToolMap};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::api::request::CreateRequest;
use crate::error::ApiError;

/// A `/chat/completions` request.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: ChatMessages,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
}

/// The messages of a chat request: the system message, the messages kept
/// with earlier turns (passed on as stored), then the messages rendered for
/// this request.
#[derive(Debug, Clone, Default)]
pub struct ChatMessages {
    pub system: Option<ChatMessage>,
    /// JSON messages separated by commas, as [`KeptMessages`] joins them.
    pub kept: KeptMessages,
    pub rendered: Vec<ChatMessage>,
}

/// Kept chat messages: JSON message objects separated by commas, copied
/// from storage without being parsed into messages.
#[derive(Debug, Clone, Default)]
pub struct KeptMessages(Vec<u8>);

impl KeptMessages {
    /// Bytes of the kept messages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Appends the messages of `array`, a JSON array of messages.
    pub fn push_array(&mut self, array: &[u8]) {
        let inner = array.trim_ascii();
        let inner = inner.strip_prefix(b"[").unwrap_or(inner);
        let inner = inner.strip_suffix(b"]").unwrap_or(inner).trim_ascii();
        if inner.is_empty() {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(b',');
        }
        self.0.extend_from_slice(inner);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ChatMessages {
    /// The messages as one JSON array. Kept messages are spliced in as they
    /// are, and the assembled array is checked to be well-formed JSON; without
    /// them the messages are written directly.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        if self.kept.is_empty() {
            let len = usize::from(self.system.is_some()) + self.rendered.len();
            let mut seq = serializer.serialize_seq(Some(len))?;
            for message in self.system.iter().chain(&self.rendered) {
                seq.serialize_element(message)?;
            }
            return seq.end();
        }
        let mut array = Vec::with_capacity(self.kept.0.len() + 256 * (self.rendered.len() + 1));
        array.push(b'[');
        let mut parts = 0;
        let mut separate = |array: &mut Vec<u8>| {
            if parts > 0 {
                array.push(b',');
            }
            parts += 1;
        };
        for message in self.system.iter() {
            separate(&mut array);
            serde_json::to_writer(&mut array, message).map_err(S::Error::custom)?;
        }
        if !self.kept.is_empty() {
            separate(&mut array);
            array.extend_from_slice(&self.kept.0);
        }
        for message in &self.rendered {
            separate(&mut array);
            serde_json::to_writer(&mut array, message).map_err(S::Error::custom)?;
        }
        array.push(b']');
        let text = String::from_utf8(array).map_err(S::Error::custom)?;
        RawValue::from_string(text)
            .map_err(|e| S::Error::custom(format!("kept chat messages are not valid JSON: {e}")))?
            .serialize(serializer)
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: Option<ChatContent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ChatToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// Message content: plain text, or parts when there is media.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ChatContent {
    Text(String),
    Parts(Vec<Value>),
}

/// A tool call in an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ChatFunction,
}

/// The function of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatFunction {
    pub name: String,
    pub arguments: String,
}

impl ChatMessage {
    /// A message of `role` with text content.
    pub fn text(role: &'static str, text: impl Into<String>) -> Self {
        messages::text_message(role, text.into())
    }
}

impl ChatRequest {
    /// A request for one whole completion (`stream: false`) without tools
    /// or sampling parameters: `instructions` as the system message, then
    /// `rendered`.
    pub fn plain(model: &str, instructions: Option<&str>, rendered: Vec<ChatMessage>) -> Self {
        ChatRequest {
            model: model.to_owned(),
            messages: ChatMessages {
                system: messages::system_message(instructions),
                kept: KeptMessages::default(),
                rendered,
            },
            stream: false,
            stream_options: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            temperature: None,
            top_p: None,
            frequency_penalty: None,
            presence_penalty: None,
            max_tokens: None,
            max_completion_tokens: None,
            response_format: None,
            reasoning_effort: None,
            logprobs: None,
            top_logprobs: None,
            user: None,
            prompt_cache_key: None,
        }
    }

    /// The chat request for `request`. Its conversation is the messages
    /// earlier turns `kept`, followed by the messages `rendered` now: the
    /// whole conversation when nothing was kept, else this request's input.
    pub fn build(
        request: &CreateRequest,
        kept: KeptMessages,
        rendered: Vec<ChatMessage>,
        tools: &ToolMap,
    ) -> Result<Self, ApiError> {
        let messages = ChatMessages {
            system: messages::system_message(request.instructions.as_deref()),
            kept,
            rendered,
        };
        // `max_tool_calls: 0` leaves the model nothing to call; with 1, one
        // call at a time.
        let no_calls = request.max_tool_calls == Some(0);
        let offered = if no_calls {
            Vec::new()
        } else {
            tools.chat_tools()
        };
        let parallel = match request.max_tool_calls {
            Some(1) => Some(false),
            _ => request.parallel_tool_calls,
        };
        let wants_logprobs = request
            .include
            .as_ref()
            .is_some_and(|inc| inc.iter().any(|i| i == "message.output_text.logprobs"))
            || request.top_logprobs.is_some_and(|n| n > 0);
        Ok(ChatRequest {
            model: request.model().to_owned(),
            messages,
            stream: true,
            stream_options: Some(json!({"include_usage": true})),
            tool_choice: if no_calls {
                None
            } else {
                tools.chat_tool_choice()
            },
            parallel_tool_calls: parallel.filter(|_| !offered.is_empty()),
            tools: offered,
            temperature: request.temperature,
            top_p: request.top_p,
            frequency_penalty: request.frequency_penalty,
            presence_penalty: request.presence_penalty,
            max_tokens: request.max_output_tokens,
            max_completion_tokens: None,
            response_format: response_format(request.text.as_ref())?,
            reasoning_effort: request
                .reasoning
                .as_ref()
                .and_then(|r| r.get("effort"))
                .filter(|e| !e.is_null())
                .cloned(),
            logprobs: wants_logprobs.then_some(true),
            top_logprobs: request.top_logprobs.filter(|_| wants_logprobs),
            user: request
                .safety_identifier
                .clone()
                .or_else(|| request.user.clone()),
            prompt_cache_key: request.prompt_cache_key.clone(),
        })
    }

    /// Whether the request asks for output that follows a JSON schema.
    pub fn has_json_schema(&self) -> bool {
        self.response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            == Some("json_schema")
    }

    /// For servers without `json_schema` response formats: asks for a JSON
    /// object instead and puts the schema in the system message.
    pub fn schema_in_prompt(&mut self) {
        if !self.has_json_schema() {
            return;
        }
        let Some(format) = self.response_format.take() else {
            return;
        };
        let schema = format
            .pointer("/json_schema/schema")
            .cloned()
            .unwrap_or_default();
        let instruction = format!(
            "Answer with one JSON object, and nothing else, that conforms to this JSON schema: {schema}"
        );
        self.response_format = Some(json!({"type": "json_object"}));
        self.messages.system = Some(match self.messages.system.take() {
            Some(ChatMessage {
                content: Some(ChatContent::Text(text)),
                ..
            }) => messages::text_message("system", format!("{text}\n\n{instruction}")),
            _ => messages::text_message("system", instruction),
        });
    }
}

/// `text.format` of the Responses API as chat-completions `response_format`.
fn response_format(text: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")) else {
        return Ok(None);
    };
    let kind = format.get("type").and_then(Value::as_str).unwrap_or("text");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let name = format.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_request("Missing required parameter: 'text.format.name'.")
                    .with_param("text.format.name")
            })?;
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    ApiError::invalid_request("Missing required parameter: 'text.format.schema'.")
                        .with_param("text.format.schema")
                })?;
            let mut json_schema = json!({"name": name, "schema": schema});
            for key in ["strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    json_schema[key] = v.clone();
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": json_schema}),
            ))
        }
        other => Err(ApiError::invalid_param(
            "text.format.type",
            format!("Unsupported text format type '{other}'."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_schema_format_maps_to_response_format() {
        let text = json!({"format": {"type": "json_schema", "name": "person", "strict": true,
                                     "schema": {"type": "object"}}});
        assert_eq!(
            response_format(Some(&text)).unwrap(),
            Some(json!({"type": "json_schema", "json_schema":
                {"name": "person", "schema": {"type": "object"}, "strict": true}}))
        );
        let missing = json!({"format": {"type": "json_schema", "name": "x"}});
        assert_eq!(
            response_format(Some(&missing))
                .unwrap_err()
                .param
                .as_deref(),
            Some("text.format.schema")
        );
    }

    #[test]
    fn kept_messages_go_between_the_system_message_and_the_new_ones() {
        let text = |role, t: &str| ChatMessage {
            role,
            content: Some(ChatContent::Text(t.to_owned())),
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning_content: None,
        };
        let mut kept = KeptMessages::default();
        kept.push_array(br#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]"#);
        kept.push_array(b" [ ] ");
        let messages = ChatMessages {
            system: Some(text("system", "s")),
            kept,
            rendered: vec![text("user", "c")],
        };
        let contents: Vec<Value> = serde_json::to_value(&messages)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].clone())
            .collect();
        assert_eq!(contents, [json!("s"), json!("a"), json!("b"), json!("c")]);
        let fresh = ChatMessages {
            kept: KeptMessages::default(),
            ..messages.clone()
        };
        assert_eq!(
            serde_json::to_value(&fresh)
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let mut broken = KeptMessages::default();
        broken.push_array(br#"[{"role":"user""#);
        let broken = ChatMessages {
            kept: broken,
            ..fresh
        };
        assert!(serde_json::to_vec(&broken).is_err());
    }

    #[test]
    fn request_maps_parameters() {
        let request = CreateRequest::parse(
            br#"{"model":"m","input":"hi","instructions":"be brief","temperature":0.2,
                "max_output_tokens":50,"reasoning":{"effort":"low"},
                "include":["message.output_text.logprobs"],"top_logprobs":2}"#,
        )
        .unwrap();
        let history = request.input.clone().unwrap().into_items();
        let chat = ChatRequest::build(
            &request,
            KeptMessages::default(),
            to_messages(None, &history, false),
            &ToolMap::default(),
        )
        .unwrap();
        let v = serde_json::to_value(&chat).unwrap();
        assert_eq!(
            v["messages"],
            json!([{"role":"system","content":"be brief"},
                                         {"role":"user","content":"hi"}])
        );
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 50);
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["reasoning_effort"], "low");
        assert_eq!(v["logprobs"], true);
        assert_eq!(v["top_logprobs"], 2);
        assert!(v.get("tools").is_none());
    }
}
