//! Settings, read from `wasi:config` once per request.
//!
//! | key | meaning |
//! | --- | --- |
//! | `backend_url` | base URL of the chat-completions backend, e.g. `http://127.0.0.1:11434/v1` |
//! | `backend_api_key` | bearer token sent to the backend (optional) |
//! | `api_keys` | keys clients must present, separated by commas or spaces; empty = open |
//! | `response_ttl_seconds` | how long stored responses live (default 30 days; 0 = forever) |
//! | `forward_client_key` | `true` to send the client's key to the backend when `backend_api_key` is unset |
//! | `backend_reasoning` | `true` to pass earlier reasoning to the backend as `reasoning_content` |
//! | `backend_timeout_seconds` | longest wait for the backend's first byte, and between two pieces of its answer (default 300) |

use crate::error::ApiError;

/// Default time-to-live of stored responses: 30 days, like OpenAI.
pub const DEFAULT_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// Default backend timeout: generous, as a large prompt can take minutes
/// before its first token.
pub const DEFAULT_BACKEND_TIMEOUT_SECONDS: u64 = 300;

/// Every configuration key the component reads.
pub const KEYS: &[&str] = &[
    "backend_url",
    "backend_api_key",
    "api_keys",
    "response_ttl_seconds",
    "forward_client_key",
    "backend_reasoning",
    "backend_timeout_seconds",
];

/// The component's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub backend_url: String,
    pub backend_api_key: Option<String>,
    pub api_keys: Vec<String>,
    /// `None`: responses never expire.
    pub response_ttl_seconds: Option<i64>,
    pub forward_client_key: bool,
    pub backend_reasoning: bool,
    pub backend_timeout_seconds: u64,
}

impl Settings {
    /// Settings from configuration pairs (what `wasi:config/store.get-all` returns).
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(
        pairs: I,
    ) -> Result<Self, ApiError> {
        let mut settings = Settings {
            response_ttl_seconds: Some(DEFAULT_TTL_SECONDS),
            backend_timeout_seconds: DEFAULT_BACKEND_TIMEOUT_SECONDS,
            ..Settings::default()
        };
        for (key, value) in pairs {
            let value = value.trim().to_owned();
            match key.as_str() {
                "backend_url" => settings.backend_url = value.trim_end_matches('/').to_owned(),
                "backend_api_key" => {
                    settings.backend_api_key = Some(value).filter(|v| !v.is_empty())
                }
                "api_keys" => {
                    settings.api_keys = value
                        .split([',', ' ', '\n'])
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "response_ttl_seconds" if !value.is_empty() => {
                    let ttl: i64 = value.parse().map_err(|_| {
                        ApiError::server(format!(
                            "response_ttl_seconds must be a number, got '{value}'"
                        ))
                    })?;
                    settings.response_ttl_seconds = (ttl > 0).then_some(ttl);
                }
                "backend_timeout_seconds" if !value.is_empty() => {
                    settings.backend_timeout_seconds = value.parse().map_err(|_| {
                        ApiError::server(format!(
                            "backend_timeout_seconds must be a number, got '{value}'"
                        ))
                    })?;
                }
                "forward_client_key" => settings.forward_client_key = truthy(&value),
                "backend_reasoning" => settings.backend_reasoning = truthy(&value),
                _ => {}
            }
        }
        if settings.backend_url.is_empty() {
            return Err(ApiError::server(
                "The server has no backend configured: set the `backend_url` variable.",
            ));
        }
        Ok(settings)
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_keys_and_defaults() {
        let s = Settings::from_pairs(pairs(&[
            ("backend_url", "http://127.0.0.1:8000/v1/"),
            ("api_keys", "a, b c"),
            ("backend_api_key", ""),
        ]))
        .unwrap();
        assert_eq!(s.backend_url, "http://127.0.0.1:8000/v1");
        assert_eq!(s.api_keys, ["a", "b", "c"]);
        assert_eq!(s.backend_api_key, None);
        assert_eq!(s.response_ttl_seconds, Some(DEFAULT_TTL_SECONDS));
    }

    #[test]
    fn missing_backend_is_an_error() {
        assert_eq!(Settings::from_pairs(pairs(&[])).unwrap_err().status, 500);
    }

    #[test]
    fn zero_ttl_means_forever() {
        let s = Settings::from_pairs(pairs(&[
            ("backend_url", "x"),
            ("response_ttl_seconds", "0"),
        ]))
        .unwrap();
        assert_eq!(s.response_ttl_seconds, None);
    }
}
