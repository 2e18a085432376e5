//! What a chat-completions backend sends back: [`ChatChunk`], one streamed
//! chunk, and [`ChatCompletion`], a whole answer from a backend that did not
//! stream. Both are parsed leniently because backends differ
//! (`reasoning_content` vs `reasoning`, `null` for absent, text as parts,
//! missing and extra fields).

use serde::Deserialize;
use serde_json::Value;

/// One `chat.completion.chunk`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatChunk {
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub usage: Option<ChatUsage>,
    /// An error reported in the middle of a stream (vLLM, LiteLLM and others
    /// send `data: {"error": {...}}` when generation fails).
    #[serde(default)]
    pub error: Option<Value>,
}

impl ChatChunk {
    /// The message of an in-stream error, if this chunk is one.
    pub fn error_message(&self) -> Option<String> {
        let error = self.error.as_ref().filter(|e| !e.is_null())?;
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        Some(message)
    }
}

/// The first (and only) choice of a chunk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChunkChoice {
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub delta: Delta,
    #[serde(default, deserialize_with = "lenient::text")]
    pub finish_reason: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub logprobs: Option<ChunkLogprobs>,
}

/// What a chunk adds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Delta {
    #[serde(default, deserialize_with = "lenient::text")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub refusal: Option<String>,
    /// Reasoning as vLLM (older versions), SGLang and DeepSeek send it.
    #[serde(default, deserialize_with = "lenient::text")]
    pub reasoning_content: Option<String>,
    /// Reasoning as Ollama, OpenRouter and newer vLLM send it.
    #[serde(default, deserialize_with = "lenient::text")]
    pub reasoning: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Delta {
    /// Reasoning text, whichever field the backend uses.
    pub fn reasoning_text(&self) -> Option<&str> {
        [&self.reasoning_content, &self.reasoning]
            .into_iter()
            .filter_map(Option::as_deref)
            .find(|s| !s.is_empty())
    }
}

/// A fragment of a tool call, merged by `index`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub index: Option<usize>,
    #[serde(default, deserialize_with = "lenient::text")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub function: Option<FunctionDelta>,
}

/// A fragment of a tool call's function.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, deserialize_with = "lenient::text")]
    pub name: Option<String>,
    /// Arguments as text; a server that sends them as a JSON object gets
    /// them serialized.
    #[serde(default, deserialize_with = "lenient::json_text")]
    pub arguments: Option<String>,
}

/// Log probabilities of a chunk's content tokens.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChunkLogprobs {
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub content: Option<Vec<Value>>,
}

/// Token counts reported by the backend. A count that is not a
/// non-negative integer (negative, fractional, past `u64`, not a number)
/// is read as the nearest count, never as a malformed chunk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatUsage {
    #[serde(default, deserialize_with = "lenient::count")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "lenient::count")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient::count_or_none")]
    pub total_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub prompt_tokens_details: Option<Value>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub completion_tokens_details: Option<Value>,
}

/// A whole `chat.completion`: the answer of a backend that did not stream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatCompletion {
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub choices: Vec<CompletionChoice>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub usage: Option<ChatUsage>,
}

/// A choice of a [`ChatCompletion`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CompletionChoice {
    /// The whole message: the same fields as a [`Delta`].
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub message: Delta,
    #[serde(default, deserialize_with = "lenient::text")]
    pub finish_reason: Option<String>,
    #[serde(default, deserialize_with = "lenient::or_default")]
    pub logprobs: Option<ChunkLogprobs>,
}

impl ChatCompletion {
    /// The completion as the one chunk that carries all of it, so it runs
    /// through the same event machine as a stream. A server that stopped
    /// without saying why stopped normally (or for its tool calls).
    pub fn into_chunk(self) -> ChatChunk {
        let choices = self
            .choices
            .into_iter()
            .take(1)
            .map(|choice| {
                let mut delta = choice.message;
                for (i, call) in delta.tool_calls.iter_mut().enumerate() {
                    call.index.get_or_insert(i);
                }
                let finish_reason = choice.finish_reason.or_else(|| {
                    Some(
                        if delta.tool_calls.is_empty() {
                            "stop"
                        } else {
                            "tool_calls"
                        }
                        .to_owned(),
                    )
                });
                ChunkChoice {
                    delta,
                    finish_reason,
                    logprobs: choice.logprobs,
                }
            })
            .collect();
        ChatChunk {
            choices,
            usage: self.usage,
            error: None,
        }
    }
}

/// Deserializers that take what real servers send: `null` for absent,
/// text as parts, text fields of an unexpected type ignored rather than
/// failing the whole chunk.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// `T`, with `null` as its default.
    pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
    }

    /// A token count: an integer as is, a float rounded down (saturating),
    /// a negative number 0, anything else (`null`, text) 0.
    pub fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        Ok(count_or_none(deserializer)?.unwrap_or(0))
    }

    /// [`count`], with `null` and other non-numbers as `None`.
    pub fn count_or_none<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Number(n) => Some(match (n.as_u64(), n.as_f64()) {
                (Some(n), _) => n,
                // `as` saturates: negative and NaN become 0, huge u64::MAX.
                (None, Some(f)) => f as u64,
                (None, None) => 0,
            }),
            _ => None,
        })
    }

    /// A string; parts (`[{"type": "text", "text": ...}]`) are joined.
    pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::String(text) => Some(text),
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect(),
            ),
            _ => None,
        })
    }

    /// A string, or any other JSON value as its text.
    pub fn json_text<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Null => None,
            Value::String(text) => Some(text),
            other => Some(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_parsing_is_lenient() {
        let chunk: ChatChunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":0,"delta":{"reasoning":"hm","extra":1}}],"new":true}"#,
        )
        .unwrap();
        assert_eq!(chunk.choices[0].delta.reasoning_text(), Some("hm"));
        let usage_only: ChatChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(usage_only.usage.unwrap().prompt_tokens, 3);
        // Counts no backend should send still leave the chunk readable.
        let odd: ChatChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":-4,"completion_tokens":1e40,"total_tokens":"many"}}"#,
        )
        .unwrap();
        let usage = odd.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (0, u64::MAX, None)
        );
        let failed: ChatChunk =
            serde_json::from_str(r#"{"error":{"message":"out of memory","type":"server_error"}}"#)
                .unwrap();
        assert_eq!(failed.error_message().as_deref(), Some("out of memory"));
        assert_eq!(ChatChunk::default().error_message(), None);
    }
}
