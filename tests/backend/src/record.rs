//! The request log: what clients sent, kept so tests can assert on it, and
//! its JSON form on the control endpoints (`GET /_scripted/requests`), which
//! both backends serve and [`Backend`](crate::Backend) reads back from an
//! out-of-process one.

use std::collections::BTreeMap;

use hyper::http::request::Parts;
use serde_json::{json, Map, Value};

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
    /// The `content-length` header as sent; `None` when absent.
    pub content_length: Option<u64>,
    /// Whether the body came with `transfer-encoding: chunked`.
    pub chunked: bool,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &Parts, raw_body: Vec<u8>) -> Self {
        let headers = header_map(&parts.headers);
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            content_length: headers
                .get("content-length")
                .and_then(|value| value.trim().parse().ok()),
            chunked: headers
                .get("transfer-encoding")
                .is_some_and(|value| value.to_ascii_lowercase().contains("chunked")),
            headers,
            body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
            raw_body,
        }
    }

    /// The log entry served by `GET /_scripted/requests`: `method`, `path`,
    /// `query`, `headers`, `body_base64`, `content_length`, `chunked`.
    pub(crate) fn to_log(&self) -> Value {
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body_base64": base64_encode(&self.raw_body),
            "content_length": self.content_length,
            "chunked": self.chunked,
        })
    }

    /// Reads a log entry back (see [`RecordedRequest::to_log`]).
    pub(crate) fn from_log(entry: &Value) -> Result<Self, String> {
        let text = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("log entry without `{key}`"))
        };
        let headers = match entry.get("headers") {
            Some(Value::Object(headers)) => string_map(headers)?,
            _ => return Err("log entry without `headers`".to_string()),
        };
        let raw_body = base64_decode(&text("body_base64")?)?;
        Ok(RecordedRequest {
            method: text("method")?,
            path: text("path")?,
            query: entry
                .get("query")
                .and_then(Value::as_str)
                .map(str::to_string),
            headers,
            body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
            raw_body,
            content_length: entry.get("content_length").and_then(Value::as_u64),
            chunked: entry.get("chunked").and_then(Value::as_bool) == Some(true),
        })
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

fn string_map(object: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    object
        .iter()
        .map(|(name, value)| match value.as_str() {
            Some(value) => Ok((name.to_ascii_lowercase(), value.to_string())),
            None => Err(format!("header `{name}` is not a string")),
        })
        .collect()
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let mut buffer = [0u8; 3];
        buffer[..group.len()].copy_from_slice(group);
        let bits = u32::from(buffer[0]) << 16 | u32::from(buffer[1]) << 8 | u32::from(buffer[2]);
        for position in 0..4 {
            if position <= group.len() {
                let index = (bits >> (18 - 6 * position)) & 0x3f;
                encoded.push(char::from(BASE64_ALPHABET[index as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// Decodes standard base64 (padding optional, whitespace ignored).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut decoded = Vec::with_capacity(text.len() / 4 * 3);
    let mut bits: u32 = 0;
    let mut count = 0;
    for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace()) {
        if byte == b'=' {
            break;
        }
        let value = BASE64_ALPHABET
            .iter()
            .position(|candidate| *candidate == byte)
            .ok_or_else(|| format!("invalid base64 byte {byte:#04x}"))?;
        bits = bits << 6 | value as u32;
        count += 1;
        if count == 4 {
            decoded.extend_from_slice(&bits.to_be_bytes()[1..]);
            bits = 0;
            count = 0;
        }
    }
    match count {
        0 => {}
        2 => decoded.push((bits >> 4) as u8),
        3 => decoded.extend_from_slice(&((bits >> 2) as u16).to_be_bytes()),
        _ => return Err("truncated base64".to_string()),
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::{base64_decode, base64_encode};

    #[test]
    fn base64_round_trips() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).unwrap(), text.as_bytes());
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Z").is_err());
        assert!(base64_decode("Zm9*").is_err());
    }
}
