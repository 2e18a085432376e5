//! Backend answers that are errors, as the API errors a client sees: the
//! status and the backend's own message, code and parameter are kept for
//! 4xx; 5xx become 502s.

use serde_json::Value;

use crate::error::ApiError;

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
            retry_after: None,
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
        retry_after: None,
    }
}

/// The error a 2xx answer carries instead of a completion, as some
/// gateways send (`{"error": {...}}` or vLLM's `{"object": "error", ...}`
/// with status 200); `None` when `body` is not such an error. A numeric
/// code in the 4xx range keeps its status, anything else is a 502.
pub fn embedded_error(body: &[u8]) -> Option<ApiError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let detail = match value.get("error") {
        Some(detail) if !detail.is_null() => detail,
        _ if value.get("object").and_then(Value::as_str) == Some("error") => &value,
        _ => return None,
    };
    let status = ["code", "status"]
        .iter()
        .filter_map(|key| detail.get(*key))
        .find_map(|code| {
            code.as_u64()
                .or_else(|| code.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (400..500).contains(code))
        .unwrap_or(502);
    Some(status_error(status, body))
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
    fn errors_in_a_successful_answer() {
        let limited = embedded_error(br#"{"error":{"message":"slow down","code":429}}"#).unwrap();
        assert_eq!(
            (limited.status, limited.message.as_str()),
            (429, "slow down")
        );
        let vllm = embedded_error(
            br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
        )
        .unwrap();
        assert_eq!(vllm.status, 400);
        let opaque = embedded_error(br#"{"error":"upstream exploded"}"#).unwrap();
        assert_eq!(opaque.status, 502);
        assert!(embedded_error(br#"{"choices":[]}"#).is_none());
        assert!(embedded_error(br#"{"error":null,"choices":[]}"#).is_none());
    }

    #[test]
    fn server_errors_are_502() {
        let e = status_error(500, b"boom");
        assert_eq!(e.status, 502);
        assert!(e.message.contains("500") && e.message.contains("boom"));
    }
}
