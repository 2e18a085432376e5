//! The API error: an HTTP status plus OpenAI's error envelope
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Every failure a client can see goes through [`ApiError`], so the HTTP
//! routes, the typed `responses` export and the `error` events of a stream all
//! report the same thing in the same shape.

use serde::Serialize;
use serde_json::json;

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status of the answer.
    #[serde(skip)]
    pub status: u16,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`), for 429s.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: kind.to_owned(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 429: a tenant's limit is reached; `kind` is OpenAI's `requests` or
    /// `tokens`, `retry_after` the seconds until it resets.
    pub fn rate_limited(kind: &str, message: impl Into<String>, retry_after: u64) -> Self {
        let mut error = Self::new(429, kind, message).with_code("rate_limit_exceeded");
        error.retry_after = Some(retry_after);
        error
    }

    /// Attaches the request field the error is about.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Attaches a machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// 400: the request is malformed or a field is invalid.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    /// 400 about one request field.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid_request(message)
            .with_param(param)
            .with_code("invalid_value")
    }

    /// 404: a response (or another object) that does not exist for this caller.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", message).with_code("not_found")
    }

    /// 404 for an unknown route.
    pub fn unknown_route(method: &str, path: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
        .with_code("unknown_url")
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            format!("Method {method} is not allowed on {path}"),
        )
        .with_code("method_not_allowed")
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "invalid_request_error", message).with_code("invalid_api_key")
    }

    /// 413: the request body is larger than `limit` bytes (the
    /// `max_request_bytes` setting).
    pub fn request_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            format!(
                "The request body is too large: the limit is {}.",
                human_bytes(limit)
            ),
        )
        .with_code("request_too_large")
    }

    /// 502: the backend failed (5xx, refused connection, timeout, bad answer).
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(502, "server_error", message).with_code("backend_error")
    }

    /// 500: something failed on our side (the key-value store, configuration).
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message).with_code("server_error")
    }

    /// The JSON body of an error answer to request `request_id`: OpenAI's
    /// envelope, and beside it the id the answer's `x-request-id` header
    /// also carries, so a pasted error body names its request.
    pub fn to_body(&self, request_id: &str) -> Vec<u8> {
        json!({ "error": self, "request_id": request_id })
            .to_string()
            .into_bytes()
    }
}

/// `bytes`, also in the largest binary unit it is a whole number of:
/// `33554432 bytes (32 MiB)`, `1000 bytes`.
fn human_bytes(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{bytes} bytes ({} {unit})", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_envelope() {
        let err = ApiError::invalid_param("temperature", "too hot");
        let body: serde_json::Value = serde_json::from_slice(&err.to_body("req_1")).unwrap();
        assert_eq!(
            body,
            json!({"error": {"message": "too hot", "type": "invalid_request_error",
                             "param": "temperature", "code": "invalid_value"},
                   "request_id": "req_1"})
        );
        assert_eq!(err.status, 400);
    }

    #[test]
    fn too_large_names_the_limit() {
        let err = ApiError::request_too_large(32 << 20);
        assert_eq!(err.status, 413);
        let body: serde_json::Value = serde_json::from_slice(&err.to_body("req_1")).unwrap();
        assert_eq!(body["error"]["code"], "request_too_large");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
        assert!(
            err.message.contains("33554432 bytes (32 MiB)"),
            "{}",
            err.message
        );
        assert!(ApiError::request_too_large(1000)
            .message
            .ends_with("the limit is 1000 bytes."));
    }
}
