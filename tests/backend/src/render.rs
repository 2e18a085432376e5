//! Rendering: turns a scripted [`Completion`] and the request it answers into
//! chat-completions JSON, either the chunks of a stream or one
//! `chat.completion` object, in the shapes real backends send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::reply::{Completion, Content, ToolCall};

/// What rendering needs to know about the request being answered.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) logprobs: bool,
    pub(crate) top_logprobs: usize,
    pub(crate) last_user_text: String,
    pub(crate) prompt_words: u64,
}

impl RequestInfo {
    /// Reads the fields rendering depends on from a request body;
    /// `default_model` stands in when the request names none.
    pub(crate) fn from_body(body: &Value, default_model: &str) -> Self {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        RequestInfo {
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(default_model)
                .to_string(),
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: body.pointer("/stream_options/include_usage")
                == Some(&Value::Bool(true)),
            logprobs: body.get("logprobs").and_then(Value::as_bool) == Some(true),
            top_logprobs: body
                .get("top_logprobs")
                .and_then(Value::as_u64)
                .map_or(0, |n| n.min(20) as usize),
            last_user_text: last_user_text(messages),
            prompt_words: messages
                .iter()
                .map(|message| count_words(&message_text(message)))
                .sum(),
        }
    }
}

/// The data chunks of a stream, in order, before `data: [DONE]`.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub(crate) chunks: Vec<Value>,
    /// Index of the chunk that carries `finish_reason`.
    pub(crate) finish_index: usize,
}

/// One unit of streamed output.
#[derive(Clone, Debug)]
enum Piece {
    Reasoning(String),
    Content {
        text: String,
        position: usize,
    },
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolArguments {
        index: usize,
        fragment: String,
    },
}

impl Piece {
    /// Whether the piece counts as a generated token in default usage.
    fn is_token(&self) -> bool {
        !matches!(self, Piece::ToolStart { .. })
    }
}

/// Renders completions for one request.
pub(crate) struct Renderer<'a> {
    completion: &'a Completion,
    request: &'a RequestInfo,
    id: String,
    created: u64,
    pieces: Vec<Piece>,
}

impl<'a> Renderer<'a> {
    pub(crate) fn new(completion: &'a Completion, request: &'a RequestInfo) -> Self {
        Renderer {
            completion,
            request,
            id: next_completion_id(),
            created: unix_seconds(),
            pieces: pieces(completion, request),
        }
    }

    /// The chunks of a streamed answer.
    pub(crate) fn stream(&self) -> StreamPlan {
        let mut chunks = vec![self.chunk(json!({"role": "assistant", "content": ""}), None)];
        for (number, piece) in self.pieces.iter().enumerate() {
            chunks.push(self.chunk(self.delta(piece), self.piece_logprobs(piece)));
            if self.completion.empty_deltas {
                chunks.push(self.chunk(empty_delta(number), None));
            }
        }
        let finish_index = self.place_finish_reason(&mut chunks);
        if self.sends_stream_usage() {
            chunks.push(self.usage_chunk());
        }
        StreamPlan {
            chunks,
            finish_index,
        }
    }

    /// The `chat.completion` object of a non-streamed answer.
    pub(crate) fn completion(&self) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), self.joined_content());
        message.insert("refusal".into(), Value::Null);
        if let Some(reasoning) = self.joined_reasoning() {
            message.insert(self.completion.reasoning_field.clone(), json!(reasoning));
        }
        if !self.completion.tool_calls.is_empty() {
            message.insert("tool_calls".into(), self.tool_calls());
        }
        let mut completion = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": self.all_logprobs(),
                "finish_reason": self.finish_reason(),
            }],
        });
        if !self.completion.usage.omit {
            completion["usage"] = self.usage();
        }
        completion
    }

    /// Whether a stream carries usage: asked for with
    /// `stream_options.include_usage` and not suppressed by the reply.
    fn sends_stream_usage(&self) -> bool {
        self.request.include_usage && !self.completion.usage.omit
    }

    /// An in-stream error event, as vLLM sends when generation fails.
    pub(crate) fn stream_error(message: &str) -> Value {
        error_body(message, "server_error", None, None)
    }

    fn chunk(&self, delta: Value, logprobs: Option<Value>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": logprobs.unwrap_or(Value::Null),
                "finish_reason": null,
            }],
        });
        if self.sends_stream_usage() {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// Sets `finish_reason` on the last delta chunk or on a new chunk with an
    /// empty delta; returns the index of that chunk.
    fn place_finish_reason(&self, chunks: &mut Vec<Value>) -> usize {
        let reuse_last = self.completion.finish_on_last_delta && !self.pieces.is_empty();
        if !reuse_last {
            chunks.push(self.chunk(json!({}), None));
        }
        let index = chunks.len() - 1;
        chunks[index]["choices"][0]["finish_reason"] = json!(self.finish_reason());
        index
    }

    fn usage_chunk(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": self.usage(),
        })
    }

    fn delta(&self, piece: &Piece) -> Value {
        match piece {
            Piece::Reasoning(text) => {
                let mut delta = Map::new();
                delta.insert(self.completion.reasoning_field.clone(), json!(text));
                Value::Object(delta)
            }
            Piece::Content { text, .. } => json!({ "content": text }),
            Piece::ToolStart { index, id, name } => json!({
                "tool_calls": [{
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": "" },
                }],
            }),
            Piece::ToolArguments { index, fragment } => json!({
                "tool_calls": [{ "index": index, "function": { "arguments": fragment } }],
            }),
        }
    }

    fn wants_logprobs(&self) -> bool {
        self.completion.logprobs || self.request.logprobs
    }

    fn piece_logprobs(&self, piece: &Piece) -> Option<Value> {
        match piece {
            Piece::Content { text, position } if self.wants_logprobs() => Some(json!({
                "content": [self.token_logprob(text, *position)],
                "refusal": null,
            })),
            _ => None,
        }
    }

    fn all_logprobs(&self) -> Value {
        if !self.wants_logprobs() {
            return Value::Null;
        }
        let content: Vec<Value> = self
            .pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Content { text, position } => Some(self.token_logprob(text, *position)),
                _ => None,
            })
            .collect();
        json!({ "content": content, "refusal": null })
    }

    /// A deterministic logprob entry for one content token.
    fn token_logprob(&self, token: &str, position: usize) -> Value {
        let logprob = -0.01 * ((position % 7) + 1) as f64;
        let mut top = Vec::with_capacity(self.request.top_logprobs);
        for rank in 0..self.request.top_logprobs {
            let alternative = if rank == 0 {
                token.to_string()
            } else {
                format!("alt{rank}")
            };
            top.push(json!({
                "token": alternative,
                "logprob": logprob - rank as f64,
                "bytes": alternative.as_bytes(),
            }));
        }
        json!({
            "token": token,
            "logprob": logprob,
            "bytes": token.as_bytes(),
            "top_logprobs": top,
        })
    }

    fn joined_content(&self) -> Value {
        if matches!(self.completion.content, Content::None) {
            return Value::Null;
        }
        let text: String = self
            .pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Content { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        json!(text)
    }

    fn joined_reasoning(&self) -> Option<String> {
        if self.completion.reasoning.is_empty() {
            return None;
        }
        Some(self.completion.reasoning.concat())
    }

    fn tool_calls(&self) -> Value {
        let calls: Vec<Value> = self
            .completion
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
        json!(calls)
    }

    fn finish_reason(&self) -> String {
        match &self.completion.finish_reason {
            Some(reason) => reason.clone(),
            None if self.completion.tool_calls.is_empty() => "stop".to_string(),
            None => "tool_calls".to_string(),
        }
    }

    fn usage(&self) -> Value {
        let spec = &self.completion.usage;
        let generated = self.pieces.iter().filter(|piece| piece.is_token()).count() as u64;
        let (prompt, completion) = spec
            .counts
            .unwrap_or((self.request.prompt_words, generated));
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        });
        if let Some(cached) = spec.cached_tokens {
            usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
        }
        if let Some(reasoning) = spec.reasoning_tokens {
            usage["completion_tokens_details"] = json!({ "reasoning_tokens": reasoning });
        }
        usage
    }
}

/// An OpenAI error body: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_body(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": param,
            "code": code,
        }
    })
}

/// The streamed pieces of a completion, in wire order: reasoning, content,
/// then tool calls.
fn pieces(completion: &Completion, request: &RequestInfo) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = completion
        .reasoning
        .iter()
        .cloned()
        .map(Piece::Reasoning)
        .collect();
    let content = match &completion.content {
        Content::None => Vec::new(),
        Content::Pieces(pieces) => pieces.clone(),
        Content::Echo => {
            crate::reply::split_words(&format!("Hello! You said: {}", request.last_user_text))
        }
    };
    pieces.extend(
        content
            .into_iter()
            .enumerate()
            .map(|(position, text)| Piece::Content { text, position }),
    );
    pieces.extend(tool_call_pieces(completion));
    pieces
}

fn tool_call_pieces(completion: &Completion) -> Vec<Piece> {
    let per_call: Vec<Vec<Piece>> = completion
        .tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| one_tool_call(index, call, completion.fragment_chars))
        .collect();
    if completion.interleave_tool_calls {
        round_robin(per_call)
    } else {
        per_call.into_iter().flatten().collect()
    }
}

/// The start chunk of a tool call followed by its argument fragments.
fn one_tool_call(index: usize, call: &ToolCall, fragment_chars: usize) -> Vec<Piece> {
    let start = Piece::ToolStart {
        index,
        id: call.id.clone(),
        name: call.name.clone(),
    };
    let fragments = split_chars(&call.arguments, fragment_chars)
        .into_iter()
        .map(|fragment| Piece::ToolArguments { index, fragment });
    std::iter::once(start).chain(fragments).collect()
}

fn round_robin(lists: Vec<Vec<Piece>>) -> Vec<Piece> {
    let mut iterators: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut merged = Vec::new();
    loop {
        let before = merged.len();
        merged.extend(iterators.iter_mut().filter_map(Iterator::next));
        if merged.len() == before {
            return merged;
        }
    }
}

/// Splits text into pieces of at most `size` characters.
fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|chunk| chunk.iter().collect())
        .collect()
}

fn empty_delta(number: usize) -> Value {
    if number.is_multiple_of(2) {
        json!({})
    } else {
        json!({ "content": "" })
    }
}

/// The text of a message: a string `content`, or the `text` of its parts.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .map(message_text)
        .unwrap_or_default()
}

fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn next_completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "chatcmpl-scripted{:016x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Reply;

    fn request(stream: bool) -> RequestInfo {
        RequestInfo::from_body(
            &json!({
                "model": "m",
                "stream": stream,
                "messages": [{"role": "user", "content": "two words"}],
            }),
            "default",
        )
    }

    #[test]
    fn round_robin_interleaves_by_index() {
        let reply = Reply::new()
            .tool_call("a", "f", "1234")
            .tool_call("b", "g", "12")
            .argument_fragment_chars(2)
            .interleave_tool_calls();
        let order: Vec<String> = tool_call_pieces(&reply.completion)
            .iter()
            .map(|piece| match piece {
                Piece::ToolStart { index, .. } => format!("start{index}"),
                Piece::ToolArguments { index, fragment } => format!("{index}:{fragment}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(order, ["start0", "start1", "0:12", "1:12", "0:34"]);
    }

    #[test]
    fn split_chars_respects_char_boundaries() {
        assert_eq!(split_chars("héllo", 2), ["hé", "ll", "o"]);
        assert!(split_chars("", 3).is_empty());
    }

    #[test]
    fn request_info_reads_defaults() {
        let info = RequestInfo::from_body(&json!({"messages": []}), "fallback");
        assert_eq!(info.model, "fallback");
        assert!(!info.stream);
        assert_eq!(info.prompt_words, 0);
        assert_eq!(request(true).prompt_words, 2);
    }

    #[test]
    fn finish_reason_can_ride_on_the_last_delta() {
        let reply = Reply::text("a b").finish_on_last_delta();
        let info = request(true);
        let plan = Renderer::new(&reply.completion, &info).stream();
        assert_eq!(plan.chunks.len(), 3);
        assert_eq!(plan.finish_index, 2);
        assert_eq!(plan.chunks[2]["choices"][0]["delta"]["content"], " b");
        assert_eq!(plan.chunks[2]["choices"][0]["finish_reason"], "stop");
    }
}
