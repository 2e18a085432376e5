//! The chat-completions backend as the service sees it: an HTTP exchange
//! whose answer body arrives in pieces, and how its failures map to API
//! errors.

use serde_json::Value;

use crate::error::ApiError;

/// A backend answer whose body is read piece by piece.
pub trait BodyStream {
    /// The next piece of the body; `None` at its end.
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>>;

    /// The whole (remaining) body.
    #[allow(async_fn_in_trait)]
    async fn collect(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        while let Some(piece) = self.next().await {
            body.extend(piece?);
        }
        Ok(body)
    }
}

/// An HTTP client for the backend.
pub trait Backend {
    type Body: BodyStream;

    /// Sends a request; transport failures (refused, timeout) are 502s.
    #[allow(async_fn_in_trait)]
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Self::Body), ApiError>;
}

/// The API error for a non-2xx backend answer with `body`.
pub fn status_error(status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let detail = parsed.as_ref().and_then(|v| v.get("error"));
    let message = detail
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(500)
                .collect()
        });
    let code = detail.and_then(|e| e.get("code")).and_then(|c| {
        c.as_str()
            .map(str::to_owned)
            .or_else(|| c.as_i64().map(|n| n.to_string()))
    });
    if status >= 500 || !(400..500).contains(&status) {
        return ApiError::backend(format!(
            "The backend failed with status {status}: {message}"
        ));
    }
    let mentions_model = message.to_ascii_lowercase().contains("model");
    if status == 404 && (mentions_model || code.as_deref() == Some("model_not_found")) {
        return ApiError {
            status: 404,
            kind: "invalid_request_error".into(),
            message,
            param: Some("model".into()),
            code: Some("model_not_found".into()),
        };
    }
    let kind = detail
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("invalid_request_error");
    ApiError {
        status,
        kind: kind.to_owned(),
        message,
        param: detail
            .and_then(|e| e.get("param"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_status_and_message() {
        let e = status_error(400, br#"{"error":{"message":"bad temp","type":"invalid_request_error","param":"temperature","code":null}}"#);
        assert_eq!(
            (e.status, e.message.as_str(), e.param.as_deref()),
            (400, "bad temp", Some("temperature"))
        );
    }

    #[test]
    fn unknown_model() {
        let e = status_error(404, br#"{"error":{"message":"model 'x' not found"}}"#);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (404, Some("model_not_found"))
        );
        let ollama = status_error(
            404,
            br#"{"error":"model \"x\" not found, try pulling it first"}"#,
        );
        assert_eq!(ollama.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn server_errors_are_502() {
        let e = status_error(500, b"boom");
        assert_eq!(e.status, 502);
        assert!(e.message.contains("500") && e.message.contains("boom"));
    }
}
