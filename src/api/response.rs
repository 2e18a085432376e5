//! The Response object we return, store and stream.
//!
//! Every key of OpenAI's schema (and of the Open Responses schema) is always
//! serialized, `null` where allowed, arrays as `[]`: SDKs and frameworks
//! validate the shape and break on a missing key.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::items::Item;
use super::request::CreateRequest;

/// The lifecycle of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// A background response not yet started.
    Queued,
    InProgress,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

/// A Response object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub status: ResponseStatus,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub model: String,
    pub previous_response_id: Option<String>,
    /// The conversation object the response's items were added to.
    #[serde(default)]
    pub conversation: Option<ConversationId>,
    pub instructions: Option<String>,
    pub output: Vec<Item>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub temperature: f64,
    pub top_p: f64,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub top_logprobs: u32,
    pub max_output_tokens: Option<u64>,
    pub max_tool_calls: Option<u64>,
    pub reasoning: Value,
    pub truncation: String,
    pub usage: Option<Usage>,
    pub store: bool,
    pub background: bool,
    pub service_tier: String,
    pub metadata: Map<String, Value>,
    pub user: Option<String>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
}

/// `conversation` of a Response: `{"id": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationId {
    pub id: String,
}

/// Why a response failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// Why a response is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    pub reason: String,
}

/// Token usage of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

impl Usage {
    /// The usage of two backend calls of one response, saturating.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            input_tokens_details: InputTokensDetails {
                cached_tokens: self
                    .input_tokens_details
                    .cached_tokens
                    .saturating_add(other.input_tokens_details.cached_tokens),
                cache_write_tokens: 0,
            },
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: self
                    .output_tokens_details
                    .reasoning_tokens
                    .saturating_add(other.output_tokens_details.reasoning_tokens),
            },
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    /// Tokens written to the prompt cache; chat-completions backends do not
    /// report them, so this is 0, but typed clients require the key.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

impl Response {
    /// Every key of the serialized object: the union of what OpenAI's and
    /// the Open Responses schemas require.
    pub const KEYS: &'static [&'static str] = &[
        "id",
        "object",
        "created_at",
        "completed_at",
        "status",
        "error",
        "incomplete_details",
        "model",
        "previous_response_id",
        "conversation",
        "instructions",
        "output",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "top_logprobs",
        "max_output_tokens",
        "max_tool_calls",
        "reasoning",
        "truncation",
        "usage",
        "store",
        "background",
        "service_tier",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
    ];

    /// A response in progress for `request`, echoing its parameters.
    pub fn start(id: String, created_at: i64, request: &CreateRequest) -> Self {
        Response {
            id,
            object: "response".to_owned(),
            created_at,
            completed_at: None,
            status: ResponseStatus::InProgress,
            error: None,
            incomplete_details: None,
            model: request.model().to_owned(),
            previous_response_id: request.previous_response_id.clone(),
            conversation: request.conversation.clone().map(|id| ConversationId { id }),
            instructions: request.instructions.clone(),
            output: Vec::new(),
            tools: request.tools.iter().flatten().map(echoed_tool).collect(),
            tool_choice: request
                .tool_choice
                .clone()
                .unwrap_or_else(|| Value::from("auto")),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            text: text_config(request.text.as_ref()),
            temperature: request.temperature.unwrap_or(1.0),
            top_p: request.top_p.unwrap_or(1.0),
            presence_penalty: request.presence_penalty.unwrap_or(0.0),
            frequency_penalty: request.frequency_penalty.unwrap_or(0.0),
            top_logprobs: request.top_logprobs.unwrap_or(0),
            max_output_tokens: request.max_output_tokens,
            max_tool_calls: request.max_tool_calls,
            reasoning: reasoning_config(request.reasoning.as_ref()),
            truncation: request
                .truncation
                .clone()
                .unwrap_or_else(|| "disabled".to_owned()),
            usage: None,
            store: request.store(),
            background: request.background.unwrap_or(false),
            service_tier: request
                .service_tier
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            metadata: request.metadata.clone().unwrap_or_default(),
            user: request.user.clone(),
            safety_identifier: request.safety_identifier.clone(),
            prompt_cache_key: request.prompt_cache_key.clone(),
        }
    }

    /// The text of all `output_text` parts, as the SDKs' `output_text` helper computes it.
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|item| match item {
                Item::Message(m) => Some(m.text()),
                _ => None,
            })
            .collect()
    }
}

/// `text` echoed with its defaults filled in.
fn text_config(text: Option<&Value>) -> Value {
    let mut config = match text {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    config
        .entry("format")
        .or_insert_with(|| json!({"type": "text"}));
    config.entry("verbosity").or_insert(json!("medium"));
    Value::Object(config)
}

/// `reasoning` echoed with its keys present.
fn reasoning_config(reasoning: Option<&Value>) -> Value {
    let mut config = match reasoning {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    config.entry("effort").or_insert(Value::Null);
    config.entry("summary").or_insert(Value::Null);
    Value::Object(config)
}

/// The keys of an `mcp` tool that carry credentials: never echoed, so
/// never stored (in the response, or in the events of a background
/// response), as at OpenAI, where clients send them with every request.
const MCP_SECRETS: [&str; 2] = ["authorization", "headers"];

/// A tool as the Response echoes it: function tools carry every key of
/// their schema (`description`, `parameters`, `strict`), `null` where the
/// request left one out; `mcp` tools leave out their credentials.
fn echoed_tool(tool: &Value) -> Value {
    let mut tool = tool.clone();
    let Some(object) = tool.as_object_mut() else {
        return tool;
    };
    match object.get("type").and_then(Value::as_str) {
        Some("function") => {
            for key in ["description", "parameters", "strict"] {
                object.entry(key).or_insert(Value::Null);
            }
        }
        // Rebuilt rather than removed from: map removal is code the
        // component otherwise does without.
        Some("mcp") => {
            for (key, value) in std::mem::take(object) {
                if !MCP_SECRETS.contains(&key.as_str()) {
                    object.insert(key, value);
                }
            }
        }
        _ => {}
    }
    tool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_serialized() {
        let request = CreateRequest::parse(br#"{"model":"m","input":"hi"}"#).unwrap();
        let response = Response::start("resp_1".into(), 1_700_000_000, &request);
        let value = serde_json::to_value(&response).unwrap();
        for key in Response::KEYS {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value.as_object().unwrap().len(), Response::KEYS.len());
        assert!(value["created_at"].is_i64());
        assert_eq!(value["tools"], json!([]));
        assert_eq!(value["text"]["format"]["type"], "text");
    }

    #[test]
    fn mcp_credentials_are_not_echoed() {
        let request = CreateRequest::parse(
            br#"{"model":"m","input":"hi","tools":[{"type":"mcp","server_label":"calc",
                "server_url":"https://mcp.example.com","authorization":"sk-secret",
                "headers":{"X-Api-Key":"also-secret"},"require_approval":"never"}]}"#,
        )
        .unwrap();
        let response = Response::start("resp_1".into(), 1_700_000_000, &request);
        let echoed = serde_json::to_string(&response.tools).unwrap();
        assert!(!echoed.contains("secret"), "{echoed}");
        assert_eq!(response.tools[0]["server_label"], "calc");
        assert_eq!(response.tools[0]["require_approval"], "never");
        assert!(response.tools[0].get("headers").is_none());
    }
}
