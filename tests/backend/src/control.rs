//! The JSON form of a [`Reply`] (a *reply spec*), shared by every way of
//! scripting a backend over HTTP: the Python SDK tests, and [`Backend`]
//! driving an out-of-process backend (`tests/python/chat_backend.py`), which
//! reads the same specs.
//!
//! [`Reply::to_spec`] writes the full form; [`Reply::from_spec`] reads it,
//! and also the short form the Python SDK tests send. Keys (all optional):
//!
//! - content: `content` (`null` for none, or an array of streamed pieces),
//!   `echo: true` (`Hello! You said: ...`), or `text` (split into words;
//!   a spec with none of the three has empty text);
//! - `reasoning` (a string split into words, or an array of pieces),
//!   `reasoning_field`;
//! - `tool_calls` (`[{"id", "name", "arguments"}]`), `interleave_tool_calls`,
//!   `argument_fragment_chars`;
//! - `finish_reason`, `finish_on_last_delta`;
//! - `usage` (`[prompt_tokens, completion_tokens]`), `reasoning_tokens`,
//!   `cached_tokens`, `no_usage`;
//! - `logprobs`, `empty_deltas`, `keepalive_comment`, `json_despite_stream`;
//! - faults: `cut_after`, `malformed_after`, `error_after`
//!   (`{"after", "message"}`), `without_done`;
//! - timing: `delay_before_first_ms`, `delay_between_chunks_ms`, `gates`
//!   (`[{"id", "at": <chunk index> | "finish" | "done", "released"}]`);
//! - `headers` (`[[name, value], ...]`);
//! - instead of a completion: `error` (`{"status", "message", "type",
//!   "param", "code"}`), `raw` (`{"status", "content_type", "body"}`) or
//!   `hang_ms`.
//!
//! [`Backend`]: crate::Backend

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::reply::{
    default_error_type, split_words, Content, ErrorReply, GatePosition, GateState, Kind, Reply,
    ToolCall,
};

/// Every key a spec may have; anything else is refused, so a typo does not
/// silently script something else.
const KEYS: &[&str] = &[
    "content",
    "echo",
    "text",
    "reasoning",
    "reasoning_field",
    "tool_calls",
    "interleave_tool_calls",
    "argument_fragment_chars",
    "finish_reason",
    "finish_on_last_delta",
    "usage",
    "reasoning_tokens",
    "cached_tokens",
    "no_usage",
    "logprobs",
    "empty_deltas",
    "keepalive_comment",
    "json_despite_stream",
    "cut_after",
    "malformed_after",
    "error_after",
    "without_done",
    "delay_before_first_ms",
    "delay_between_chunks_ms",
    "gates",
    "headers",
    "error",
    "raw",
    "hang_ms",
];

impl Reply {
    /// The full JSON spec of this reply (see the `control` module docs);
    /// [`Reply::from_spec`] reads it back. Gates appear with their ids.
    pub fn to_spec(&self) -> Value {
        let completion = &self.completion;
        let mut spec = Map::new();
        match &completion.content {
            Content::None => {
                spec.insert("content".into(), Value::Null);
            }
            Content::Pieces(pieces) => {
                spec.insert("content".into(), json!(pieces));
            }
            Content::Echo => {
                spec.insert("echo".into(), json!(true));
            }
        }
        spec.insert("reasoning".into(), json!(completion.reasoning));
        spec.insert("reasoning_field".into(), json!(completion.reasoning_field));
        let calls: Vec<Value> = completion
            .tool_calls
            .iter()
            .map(|call| json!({"id": call.id, "name": call.name, "arguments": call.arguments}))
            .collect();
        spec.insert("tool_calls".into(), json!(calls));
        spec.insert(
            "interleave_tool_calls".into(),
            json!(completion.interleave_tool_calls),
        );
        spec.insert(
            "argument_fragment_chars".into(),
            json!(completion.fragment_chars),
        );
        spec.insert("finish_reason".into(), json!(completion.finish_reason));
        spec.insert(
            "finish_on_last_delta".into(),
            json!(completion.finish_on_last_delta),
        );
        spec.insert("usage".into(), json!(completion.usage.counts));
        spec.insert(
            "reasoning_tokens".into(),
            json!(completion.usage.reasoning_tokens),
        );
        spec.insert(
            "cached_tokens".into(),
            json!(completion.usage.cached_tokens),
        );
        spec.insert("no_usage".into(), json!(completion.usage.omit));
        spec.insert("logprobs".into(), json!(completion.logprobs));
        spec.insert("empty_deltas".into(), json!(completion.empty_deltas));
        spec.insert(
            "keepalive_comment".into(),
            json!(completion.keepalive_comment),
        );
        spec.insert(
            "json_despite_stream".into(),
            json!(completion.json_despite_stream),
        );
        spec.insert("cut_after".into(), json!(self.faults.cut_after));
        spec.insert("malformed_after".into(), json!(self.faults.malformed_after));
        spec.insert(
            "error_after".into(),
            match &self.faults.error_after {
                Some((after, message)) => json!({"after": after, "message": message}),
                None => Value::Null,
            },
        );
        spec.insert("without_done".into(), json!(self.faults.omit_done));
        spec.insert(
            "delay_before_first_ms".into(),
            json!(millis(self.timing.before_first)),
        );
        spec.insert(
            "delay_between_chunks_ms".into(),
            json!(millis(self.timing.between_chunks)),
        );
        let gates: Vec<Value> = self
            .timing
            .gates
            .iter()
            .map(|(position, gate)| {
                let at = match position {
                    GatePosition::Chunk(index) => json!(index),
                    GatePosition::Finish => json!("finish"),
                    GatePosition::Done => json!("done"),
                };
                json!({"id": gate.id, "at": at, "released": gate.is_released()})
            })
            .collect();
        spec.insert("gates".into(), json!(gates));
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(name, value)| json!([name, value]))
            .collect();
        spec.insert("headers".into(), json!(headers));
        match &self.kind {
            Kind::Completion => {}
            Kind::Error(error) => {
                spec.insert(
                    "error".into(),
                    json!({
                        "status": error.status,
                        "message": error.message,
                        "type": error.error_type,
                        "param": error.param,
                        "code": error.code,
                    }),
                );
            }
            Kind::Raw {
                status,
                content_type,
                body,
            } => {
                spec.insert(
                    "raw".into(),
                    json!({"status": status, "content_type": content_type, "body": body}),
                );
            }
            Kind::Hang(duration) => {
                spec.insert("hang_ms".into(), json!(millis(*duration)));
            }
        }
        Value::Object(spec)
    }

    /// Reads a reply spec (full or short form; see the `control` module
    /// docs). Each gate in it gets a state of its own, released when the
    /// spec says so.
    pub fn from_spec(spec: &Value) -> Result<Reply, String> {
        reply_from_spec(spec, &mut |id| Arc::new(GateState::with_id(id.to_string())))
    }
}

/// The replies an array of specs describes; `gate` supplies the state of
/// each gate id.
pub(crate) fn replies_from_json(
    specs: &Value,
    gate: &mut dyn FnMut(&str) -> Arc<GateState>,
) -> Result<Vec<Reply>, String> {
    let specs = specs
        .as_array()
        .ok_or("the body must be a JSON array of reply specs")?;
    specs
        .iter()
        .map(|spec| reply_from_spec(spec, gate))
        .collect()
}

/// Reads one spec; `gate` supplies the state of each gate id.
pub(crate) fn reply_from_spec(
    spec: &Value,
    gate: &mut dyn FnMut(&str) -> Arc<GateState>,
) -> Result<Reply, String> {
    let object = spec
        .as_object()
        .ok_or("a reply spec must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!("unknown reply spec key `{unknown}`"));
    }
    let mut reply = Reply::new();
    reply.kind = kind(spec)?;
    read_completion(spec, &mut reply)?;
    read_faults(spec, &mut reply)?;
    read_timing(spec, &mut reply, gate)?;
    if let Some(headers) = spec.get("headers").filter(|v| !v.is_null()) {
        let headers = headers.as_array().ok_or("headers must be an array")?;
        for pair in headers {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(name), Value::String(value)]) => {
                    reply.headers.push((name.clone(), value.clone()));
                }
                _ => return Err("headers must be [name, value] string pairs".to_string()),
            }
        }
    }
    Ok(reply)
}

fn kind(spec: &Value) -> Result<Kind, String> {
    if let Some(error) = present(spec, "error") {
        let status = status(error, "error.status")?;
        let text = |key: &str| optional_str(error, key, "error");
        return Ok(Kind::Error(ErrorReply {
            status,
            message: text("message")?.unwrap_or_else(|| "scripted error".to_string()),
            error_type: text("type")?.unwrap_or_else(|| default_error_type(status).to_string()),
            param: text("param")?,
            code: text("code")?,
        }));
    }
    if let Some(raw) = present(spec, "raw") {
        return Ok(Kind::Raw {
            status: status(raw, "raw.status")?,
            content_type: optional_str(raw, "content_type", "raw")?
                .unwrap_or_else(|| "application/json".to_string()),
            body: optional_str(raw, "body", "raw")?.unwrap_or_default(),
        });
    }
    if let Some(hang) = present(spec, "hang_ms") {
        return Ok(Kind::Hang(duration(hang, "hang_ms")?));
    }
    Ok(Kind::Completion)
}

fn read_completion(spec: &Value, reply: &mut Reply) -> Result<(), String> {
    let completion = &mut reply.completion;
    completion.content = if let Some(content) = spec.get("content") {
        match content {
            Value::Null => Content::None,
            pieces => Content::Pieces(strings(pieces, "content")?),
        }
    } else if flag(spec, "echo")? {
        Content::Echo
    } else {
        let text = optional_str(spec, "text", "spec")?.unwrap_or_default();
        Content::Pieces(split_words(&text))
    };
    completion.reasoning = match present(spec, "reasoning") {
        None => Vec::new(),
        Some(Value::String(text)) => split_words(text),
        Some(pieces) => strings(pieces, "reasoning")?,
    };
    if let Some(field) = optional_str(spec, "reasoning_field", "spec")? {
        completion.reasoning_field = field;
    }
    for call in present(spec, "tool_calls")
        .map(|calls| calls.as_array().ok_or("tool_calls must be an array"))
        .transpose()?
        .into_iter()
        .flatten()
    {
        let field = |key: &str| optional_str(call, key, "tool_calls[]");
        completion.tool_calls.push(ToolCall {
            id: field("id")?.ok_or("tool_calls[].id is required")?,
            name: field("name")?.ok_or("tool_calls[].name is required")?,
            arguments: field("arguments")?.unwrap_or_else(|| "{}".to_string()),
        });
    }
    completion.interleave_tool_calls = flag(spec, "interleave_tool_calls")?;
    if let Some(chars) = count(spec, "argument_fragment_chars")? {
        completion.fragment_chars = chars.max(1);
    }
    completion.finish_reason = optional_str(spec, "finish_reason", "spec")?;
    completion.finish_on_last_delta = flag(spec, "finish_on_last_delta")?;
    if let Some(usage) = present(spec, "usage") {
        let tokens = |v: &Value| v.as_u64().ok_or("usage must be two integers");
        match usage.as_array().map(Vec::as_slice) {
            Some([prompt, generated]) => {
                completion.usage.counts = Some((tokens(prompt)?, tokens(generated)?));
            }
            _ => return Err("usage must be two integers".to_string()),
        }
    }
    completion.usage.reasoning_tokens = number(spec, "reasoning_tokens")?;
    completion.usage.cached_tokens = number(spec, "cached_tokens")?;
    completion.usage.omit = flag(spec, "no_usage")?;
    completion.logprobs = flag(spec, "logprobs")?;
    completion.empty_deltas = flag(spec, "empty_deltas")?;
    completion.keepalive_comment = flag(spec, "keepalive_comment")?;
    completion.json_despite_stream = flag(spec, "json_despite_stream")?;
    Ok(())
}

fn read_faults(spec: &Value, reply: &mut Reply) -> Result<(), String> {
    reply.faults.cut_after = count(spec, "cut_after")?;
    reply.faults.malformed_after = count(spec, "malformed_after")?;
    if let Some(error) = present(spec, "error_after") {
        let after = count(error, "after")?.ok_or("error_after.after is required")?;
        let message = optional_str(error, "message", "error_after")?
            .unwrap_or_else(|| "scripted error".to_string());
        reply.faults.error_after = Some((after, message));
    }
    reply.faults.omit_done = flag(spec, "without_done")?;
    Ok(())
}

fn read_timing(
    spec: &Value,
    reply: &mut Reply,
    gate: &mut dyn FnMut(&str) -> Arc<GateState>,
) -> Result<(), String> {
    if let Some(delay) = present(spec, "delay_before_first_ms") {
        reply.timing.before_first = duration(delay, "delay_before_first_ms")?;
    }
    if let Some(delay) = present(spec, "delay_between_chunks_ms") {
        reply.timing.between_chunks = duration(delay, "delay_between_chunks_ms")?;
    }
    for entry in present(spec, "gates")
        .map(|gates| gates.as_array().ok_or("gates must be an array"))
        .transpose()?
        .into_iter()
        .flatten()
    {
        let id = optional_str(entry, "id", "gates[]")?.ok_or("gates[].id is required")?;
        let position = match entry.get("at") {
            Some(Value::String(at)) if at == "finish" => GatePosition::Finish,
            Some(Value::String(at)) if at == "done" => GatePosition::Done,
            Some(at) => GatePosition::Chunk(
                at.as_u64()
                    .and_then(|at| usize::try_from(at).ok())
                    .ok_or("gates[].at must be a chunk index, \"finish\" or \"done\"")?,
            ),
            None => return Err("gates[].at is required".to_string()),
        };
        let state = gate(&id);
        if flag(entry, "released")? {
            state.release();
        }
        reply.timing.gates.push((position, state));
    }
    Ok(())
}

/// The value of `key` unless absent or `null`.
fn present<'a>(spec: &'a Value, key: &str) -> Option<&'a Value> {
    spec.get(key).filter(|value| !value.is_null())
}

fn optional_str(spec: &Value, key: &str, what: &str) -> Result<Option<String>, String> {
    match present(spec, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{what}.{key} must be a string")),
    }
}

fn flag(spec: &Value, key: &str) -> Result<bool, String> {
    match present(spec, key) {
        None => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(_) => Err(format!("{key} must be true or false")),
    }
}

fn number(spec: &Value, key: &str) -> Result<Option<u64>, String> {
    present(spec, key)
        .map(|value| {
            value
                .as_u64()
                .ok_or_else(|| format!("{key} must be a non-negative integer"))
        })
        .transpose()
}

fn count(spec: &Value, key: &str) -> Result<Option<usize>, String> {
    number(spec, key)?
        .map(|n| usize::try_from(n).map_err(|_| format!("{key} is too large")))
        .transpose()
}

fn status(spec: &Value, what: &str) -> Result<u16, String> {
    spec.get("status")
        .and_then(Value::as_u64)
        .and_then(|status| u16::try_from(status).ok())
        .filter(|status| (100..=999).contains(status))
        .ok_or_else(|| format!("{what} must be an HTTP status"))
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| format!("{what} must be an array of strings"))
}

fn duration(value: &Value, what: &str) -> Result<Duration, String> {
    value
        .as_f64()
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .ok_or_else(|| format!("{what} must be a non-negative number of milliseconds"))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_specs_still_read() {
        let spec = json!({
            "text": "a b",
            "reasoning": "think",
            "tool_calls": [{"id": "c", "name": "f"}],
            "finish_reason": "length",
            "usage": [3, 4],
        });
        let reply = Reply::from_spec(&spec).unwrap();
        let full = reply.to_spec();
        assert_eq!(full["content"], json!(["a", " b"]));
        assert_eq!(full["reasoning"], json!(["think"]));
        assert_eq!(full["tool_calls"][0]["arguments"], "{}");
        assert_eq!(full["usage"], json!([3, 4]));
        let error = Reply::from_spec(&json!({"error": {"status": 404, "code": "x"}})).unwrap();
        let error = error.to_spec()["error"].clone();
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["message"], "scripted error");
        assert_eq!(
            Reply::from_spec(&json!({})).unwrap().to_spec()["content"],
            json!([])
        );
    }

    #[test]
    fn full_specs_round_trip() {
        let (reply, gate) = Reply::chunks(["x", "y"])
            .reasoning("r s")
            .reasoning_field("reasoning")
            .tool_call("id", "name", "{}")
            .interleave_tool_calls()
            .argument_fragment_chars(3)
            .finish_reason("stop")
            .finish_on_last_delta()
            .usage(1, 2)
            .reasoning_tokens(3)
            .cached_tokens(4)
            .no_usage()
            .logprobs()
            .empty_deltas()
            .keepalive_comment()
            .json_despite_stream()
            .cut_after(5)
            .malformed_after(6)
            .error_after(7, "boom")
            .without_done()
            .delay_before_first(Duration::from_millis(8))
            .delay_between_chunks(Duration::from_millis(9))
            .header("x-a", "b")
            .pause_before(2);
        let (reply, _done) = reply.pause_before_done();
        gate.release();
        let spec = reply.to_spec();
        assert_eq!(spec["gates"][0]["at"], 2);
        assert_eq!(spec["gates"][0]["released"], true);
        assert_eq!(spec["gates"][1]["at"], "done");
        assert_eq!(Reply::from_spec(&spec).unwrap().to_spec(), spec);
        for reply in [
            Reply::echo(),
            Reply::new(),
            Reply::error(429, "slow")
                .error_type("t")
                .param("p")
                .code("c"),
            Reply::raw(502, "text/html", "<p>"),
            Reply::hang(Duration::from_millis(1500)),
        ] {
            let spec = reply.to_spec();
            assert_eq!(Reply::from_spec(&spec).unwrap().to_spec(), spec);
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            json!([]),
            json!({"txet": "typo"}),
            json!({"error": {"status": "500"}}),
            json!({"usage": [1]}),
            json!({"gates": [{"at": 1}]}),
            json!({"gates": [{"id": "g", "at": "middle"}]}),
            json!({"delay_before_first_ms": -1}),
            json!({"headers": [["a"]]}),
            json!({"content": "not pieces"}),
        ] {
            assert!(Reply::from_spec(&spec).is_err(), "{spec}");
        }
    }
}
