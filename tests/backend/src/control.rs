//! Scripting over HTTP, for clients that are not Rust (the Python SDK
//! tests): `POST /_scripted/replies` with a JSON array of reply specs queues
//! them like [`Backend::push`](crate::Backend::push).
//!
//! A spec is an object with any of:
//! `text`, `reasoning`, `tool_calls` (`[{"id", "name", "arguments"}]`),
//! `finish_reason`, `usage` (`[prompt_tokens, completion_tokens]`), or
//! `error` (`{"status", "message", "code"}`) for an HTTP error reply.

use serde_json::Value;

use crate::Reply;

/// The replies an array of specs describes.
pub fn replies_from_json(specs: &Value) -> Result<Vec<Reply>, String> {
    let specs = specs
        .as_array()
        .ok_or("the body must be a JSON array of reply specs")?;
    specs.iter().map(reply_from_json).collect()
}

fn str_field<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get(key).and_then(Value::as_str)
}

fn reply_from_json(spec: &Value) -> Result<Reply, String> {
    if let Some(error) = spec.get("error") {
        let status = error
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or("error.status must be an HTTP status")?;
        let mut reply = Reply::error(
            status,
            str_field(error, "message").unwrap_or("scripted error"),
        );
        if let Some(code) = str_field(error, "code") {
            reply = reply.code(code);
        }
        return Ok(reply);
    }
    let mut reply = Reply::text(str_field(spec, "text").unwrap_or_default());
    if let Some(reasoning) = str_field(spec, "reasoning") {
        reply = reply.reasoning(reasoning);
    }
    for call in spec
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = str_field(call, "id").ok_or("tool_calls[].id is required")?;
        let name = str_field(call, "name").ok_or("tool_calls[].name is required")?;
        reply = reply.tool_call(id, name, str_field(call, "arguments").unwrap_or("{}"));
    }
    if let Some(reason) = str_field(spec, "finish_reason") {
        reply = reply.finish_reason(reason);
    }
    if let Some([prompt, completion]) = spec
        .get("usage")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let tokens = |v: &Value| v.as_u64().ok_or("usage must be two integers");
        reply = reply.usage(tokens(prompt)?, tokens(completion)?);
    }
    Ok(reply)
}
