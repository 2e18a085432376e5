//! The parameters real chat-completions servers disagree on, and learning
//! which form a backend takes from its 400s.
//!
//! | parameter | default | when the backend rejects it |
//! | --- | --- | --- |
//! | output-token limit | `max_tokens` (or the `max_tokens_param` setting) | the other name: OpenAI's reasoning models take only `max_completion_tokens`, Ollama and older servers only `max_tokens` |
//! | `stream_options.include_usage` | sent | dropped: usage is then simply absent |
//! | `reasoning_effort` | sent when asked for | dropped |
//! | `response_format` `json_schema` | sent | `json_object`, with the schema in the system message |
//!
//! `max_tokens` is the default because a server that does not know a field
//! usually ignores it rather than rejecting it: Ollama and LM Studio would
//! silently drop `max_completion_tokens`, and no 400 would ever tell us,
//! while OpenAI rejects `max_tokens` by name for the models that need the
//! other one.
//!
//! A rejection names the parameter in `error.param` or in its message
//! (OpenAI: "Unsupported parameter: 'max_tokens' ...", vLLM: "Extra inputs
//! are not permitted" at `('body', 'max_completion_tokens')`). Each change
//! is tried once per request; a change the backend then accepts is
//! remembered for the life of the instance in [`Learned`].

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::chat::ChatRequest;

/// The name the output-token limit goes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensParam {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensParam {
    /// `max_tokens` or `max_completion_tokens`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "max_tokens" => Ok(Self::MaxTokens),
            "max_completion_tokens" => Ok(Self::MaxCompletionTokens),
            other => Err(format!(
                "max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got '{other}'"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::MaxCompletionTokens => "max_completion_tokens",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::MaxTokens => Self::MaxCompletionTokens,
            Self::MaxCompletionTokens => Self::MaxTokens,
        }
    }
}

/// How one backend takes the parameters servers disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub max_tokens: MaxTokensParam,
    /// Send `stream_options.include_usage`.
    pub stream_usage: bool,
    /// Send `reasoning_effort`.
    pub reasoning_effort: bool,
    /// Send `json_schema` response formats as they are.
    pub json_schema: bool,
}

impl Dialect {
    /// What a backend is first sent, with its output-token limit under
    /// `max_tokens`.
    pub fn new(max_tokens: MaxTokensParam) -> Self {
        Dialect {
            max_tokens,
            stream_usage: true,
            reasoning_effort: true,
            json_schema: true,
        }
    }

    /// Rewrites `chat` into this dialect. Changes only go one way (a
    /// parameter once dropped stays dropped), so a request can be rewritten
    /// again after each rejection.
    pub fn apply(&self, chat: &mut ChatRequest) {
        let limit = chat.max_tokens.take().or(chat.max_completion_tokens.take());
        match self.max_tokens {
            MaxTokensParam::MaxTokens => chat.max_tokens = limit,
            MaxTokensParam::MaxCompletionTokens => chat.max_completion_tokens = limit,
        }
        if !self.stream_usage {
            chat.stream_options = None;
        }
        if !self.reasoning_effort {
            chat.reasoning_effort = None;
        }
        if !self.json_schema {
            chat.schema_in_prompt();
        }
    }

    /// The dialect to retry `chat` with after the backend rejected it with
    /// `body` (a 400 or 422): the parameter the rejection names, changed.
    /// `None` when it names nothing this dialect can change.
    pub fn after_rejection(&self, chat: &ChatRequest, body: &[u8]) -> Option<(Dialect, String)> {
        let rejection = Rejection::read(body);
        let names = |name: &str| rejection.names(name);
        let mut next = *self;
        let change = if chat.max_tokens.is_some() && names("max_tokens") {
            next.max_tokens = self.max_tokens.other();
            "`max_tokens` rejected: sending `max_completion_tokens` instead"
        } else if chat.max_completion_tokens.is_some() && names("max_completion_tokens") {
            next.max_tokens = self.max_tokens.other();
            "`max_completion_tokens` rejected: sending `max_tokens` instead"
        } else if chat.stream_options.is_some()
            && (names("stream_options") || names("include_usage"))
        {
            next.stream_usage = false;
            "`stream_options` rejected: asking for no usage"
        } else if chat.reasoning_effort.is_some() && names("reasoning_effort") {
            next.reasoning_effort = false;
            "`reasoning_effort` rejected: leaving it out"
        } else if chat.has_json_schema() && (names("response_format") || names("json_schema")) {
            next.json_schema = false;
            "`json_schema` rejected: asking for `json_object` with the schema in the system message"
        } else {
            return None;
        };
        (next != *self).then(|| (next, change.to_owned()))
    }
}

/// What a rejection says, lowercase.
struct Rejection {
    /// `error.param`, when the backend named the parameter there.
    param: Option<String>,
    /// Its message, detail and code.
    text: String,
}

impl Rejection {
    fn read(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Rejection {
                param: None,
                text: String::from_utf8_lossy(body).to_ascii_lowercase(),
            };
        };
        let detail = value
            .get("error")
            .filter(|e| e.is_object())
            .unwrap_or(&value);
        let mut text = String::new();
        for key in ["message", "detail", "code"] {
            match detail.get(key) {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Null) | None => {}
                Some(other) => text.push_str(&other.to_string()),
            }
            text.push('\n');
        }
        if let Some(Value::String(s)) = value.get("error") {
            text.push_str(s);
        }
        Rejection {
            param: detail
                .get("param")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_lowercase),
            text: text.to_ascii_lowercase(),
        }
    }

    /// Whether the rejection is about parameter `name`: the one in
    /// `error.param` when there is one (OpenAI's message about `max_tokens`
    /// also names `max_completion_tokens`), else any named in the message.
    fn names(&self, name: &str) -> bool {
        match &self.param {
            Some(param) => mentions(param, name),
            None => mentions(&self.text, name),
        }
    }
}

/// Whether `text` names the identifier `name` (not as part of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(identifier) && !after.is_some_and(identifier)
    })
}

/// Dialects that backends accepted after a rejection, by backend base URL,
/// for as long as the instance lives.
#[derive(Debug, Default)]
pub struct Learned(RefCell<BTreeMap<String, Dialect>>);

impl Learned {
    pub fn get(&self, backend: &str) -> Option<Dialect> {
        self.0.borrow().get(backend).copied()
    }

    pub fn remember(&self, backend: &str, dialect: Dialect) {
        self.0.borrow_mut().insert(backend.to_owned(), dialect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::CreateRequest;
    use crate::chat::{to_messages, KeptMessages, ToolMap};

    fn chat(body: &str) -> ChatRequest {
        let request = CreateRequest::parse(body.as_bytes()).unwrap();
        let items = request.input.clone().unwrap().into_items();
        let mut chat = ChatRequest::build(
            &request,
            KeptMessages::default(),
            to_messages(None, &items, false),
            &ToolMap::default(),
        )
        .unwrap();
        Dialect::new(MaxTokensParam::default()).apply(&mut chat);
        chat
    }

    const OPENAI_MAX_TOKENS: &[u8] = br#"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#;
    const VLLM_EXTRA: &[u8] = br#"{"object":"error","message":"[{'type': 'extra_forbidden', 'loc': ('body', 'max_completion_tokens'), 'msg': 'Extra inputs are not permitted', 'input': 5}]","type":"BadRequestError","param":null,"code":400}"#;

    #[test]
    fn max_tokens_switches_name_both_ways() {
        let mut sent = chat(r#"{"model":"m","input":"hi","max_output_tokens":5}"#);
        let first = Dialect::new(MaxTokensParam::MaxTokens);
        let (second, _) = first.after_rejection(&sent, OPENAI_MAX_TOKENS).unwrap();
        assert_eq!(second.max_tokens, MaxTokensParam::MaxCompletionTokens);
        second.apply(&mut sent);
        let v = serde_json::to_value(&sent).unwrap();
        assert_eq!(
            (v.get("max_tokens"), &v["max_completion_tokens"]),
            (None, &Value::from(5))
        );
        assert!(second.after_rejection(&sent, OPENAI_MAX_TOKENS).is_none());
        let (back, _) = second.after_rejection(&sent, VLLM_EXTRA).unwrap();
        assert_eq!(back.max_tokens, MaxTokensParam::MaxTokens);
    }

    #[test]
    fn unnamed_or_unsent_parameters_are_not_retried() {
        let sent = chat(r#"{"model":"m","input":"hi"}"#);
        let dialect = Dialect::new(MaxTokensParam::MaxTokens);
        assert!(dialect.after_rejection(&sent, OPENAI_MAX_TOKENS).is_none());
        assert!(dialect
            .after_rejection(&sent, br#"{"error":{"message":"temperature too high"}}"#)
            .is_none());
        assert!(!mentions("max_tokens_to_sample", "max_tokens"));
        assert!(mentions("'max_tokens' is", "max_tokens"));
    }

    #[test]
    fn usage_effort_and_schema_fall_back() {
        let mut sent = chat(
            r#"{"model":"m","input":"hi","instructions":"Be brief.","reasoning":{"effort":"high"},
               "text":{"format":{"type":"json_schema","name":"p","schema":{"type":"object"}}}}"#,
        );
        let mut dialect = Dialect::new(MaxTokensParam::MaxTokens);
        for body in [
            &br#"{"error":{"message":"Unrecognized request argument supplied: stream_options"}}"#[..],
            br#"{"detail":"reasoning_effort is not supported"}"#,
            br#"{"error":{"message":"response_format json_schema is not supported","param":null}}"#,
        ] {
            let (next, _) = dialect.after_rejection(&sent, body).unwrap();
            next.apply(&mut sent);
            dialect = next;
        }
        let v = serde_json::to_value(&sent).unwrap();
        assert!(v.get("stream_options").is_none() && v.get("reasoning_effort").is_none());
        assert_eq!(
            v["response_format"],
            serde_json::json!({"type": "json_object"})
        );
        let system = v["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("Be brief.") && system.contains(r#"{"type":"object"}"#));
    }
}
