//! The request log: what clients sent, kept so tests can assert on it.

use std::collections::BTreeMap;

use hyper::http::request::Parts;
use serde_json::Value;

/// One request as the backend received it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string, if any, without the `?`.
    pub query: Option<String>,
    /// Headers by lowercase name; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON.
    pub body: Value,
    /// The body exactly as received.
    pub raw_body: Vec<u8>,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &Parts, raw_body: Vec<u8>) -> Self {
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: header_map(&parts.headers),
            body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
            raw_body,
        }
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as (lossy) UTF-8 text.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_body).into_owned()
    }

    /// Whether the body asked for a stream (`"stream": true`).
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The body's `model`.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// The body's `messages` (empty when absent).
    pub fn messages(&self) -> &[Value] {
        self.array("messages")
    }

    /// The body's `tools` (empty when absent).
    pub fn tools(&self) -> &[Value] {
        self.array("tools")
    }

    fn array(&self, field: &str) -> &[Value] {
        self.body
            .get(field)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn header_map(headers: &hyper::HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    map
}
