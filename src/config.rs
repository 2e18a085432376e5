//! Settings, read from `wasi:config` once per request.
//!
//! | key | meaning |
//! | --- | --- |
//! | `backend_url` | base URL of the chat-completions backend, e.g. `http://127.0.0.1:11434/v1` |
//! | `backend_api_key` | bearer token sent to the backend (optional) |
//! | `api_keys` | keys clients must present, separated by commas or spaces: `name:key` (keys sharing a name share data) or a bare `key`; empty = open |
//! | `tenant_secret` | secret the tenant ids of stored data are derived with (HMAC-SHA256); see [`crate::auth`] |
//! | `response_ttl_seconds` | how long stored responses live (default 30 days; 0 = forever) |
//! | `forward_client_key` | `true` to send the client's key to the backend when `backend_api_key` is unset |
//! | `backend_reasoning` | `true` to pass earlier reasoning to the backend as `reasoning_content` |
//! | `backend_timeout_seconds` | longest wait for the backend's first byte, and between two pieces of its answer (default 300) |
//! | `retention_grace_seconds` | how long past its expiry stored data waits for removal (default 60) |
//! | `model_context_windows` | context windows by model, `pattern=tokens` pairs (`llama3*=8192, *=32768`): what `truncation: "auto"` fits a request into |
//! | `admin_key` | the key of `/v1/admin/...` (retention status, a sweep step now); unset = no admin routes |
//! | `retention_sweep_every` | one create in this many runs a bounded removal step after answering (default 8; 0 never) |
//! | `stream_keepalive_seconds` | a stream silent this long gets an SSE comment, `: keep-alive` (default 15; 0 never) |
//! | `max_request_bytes` | largest request body, answered 413 before more is read (default 32 MiB) |
//! | `backend_headers` | fixed headers for the backend: a JSON object, or `Name: value` lines |
//! | `backend_max_tokens_param` | `max_tokens` (default) or `max_completion_tokens` |
//! | `backend_think_tags` | `true` when the backend's models put reasoning in `<think>` tags |
//! | `backends` | more backends, chosen by model name: a JSON array of routes |
//! | `mcp_allowed_servers` | origins of the MCP servers requests may name (`https://mcp.example.com`, `https://*.example.com`, `http://127.0.0.1:*`), separated by commas or spaces; unset = none |
//! | `mcp_timeout_seconds` | longest wait for an MCP server's listing or tool call (default 60) |
//! | `web_search_provider` | `searxng`, `brave` or `tavily`: runs `web_search` tools; unset = they are echoed, not run |
//! | `web_search_url` | the provider's base URL (required for `searxng`; Brave's and Tavily's public APIs by default) |
//! | `web_search_api_key` | the provider's key (required for `brave` and `tavily`) |
//! | `web_search_timeout_seconds` | longest wait for one search (default 30) |
//! | `usage_tracking` | `false` to keep no usage totals (default `true`: each create adds its tokens after answering) |
//! | `tenant_requests_per_minute` | creates a tenant may make per minute; past it a 429 (unset = no limit) |
//! | `tenant_tokens_per_day` | tokens (input and output) a tenant may use per UTC day; past it a 429 (unset = no limit) |
//!
//! `backend_url` and its companions make the default backend, which serves
//! every model no entry of `backends` claims; either may be left out, not
//! both.

use crate::auth::{parse_api_keys, ApiKey};
use crate::backend::dialect::MaxTokensParam;
use crate::backend::routes::{check_url, parse_headers, parse_routes, Route, Routes};
use crate::error::ApiError;

/// Default time-to-live of stored responses: 30 days, like OpenAI.
pub const DEFAULT_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// Default backend timeout: generous, as a large prompt can take minutes
/// before its first token.
pub const DEFAULT_BACKEND_TIMEOUT_SECONDS: u64 = 300;
/// Default for `retention_sweep_every`: a removal step costs one read
/// when there is nothing to remove.
pub const DEFAULT_RETENTION_SWEEP_EVERY: u32 = 8;
/// Default for `stream_keepalive_seconds`: well inside the 60 s idle
/// timeout of common proxies and load balancers.
pub const DEFAULT_STREAM_KEEPALIVE_SECONDS: u64 = 15;
/// Default for `max_request_bytes`: 32 MiB, room for a few images sent as
/// data URLs (OpenAI takes images up to 20 MB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 32 << 20;
/// Default for `mcp_timeout_seconds`.
pub const DEFAULT_MCP_TIMEOUT_SECONDS: u64 = 60;
/// Default for `web_search_timeout_seconds`.
pub const DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS: u64 = 30;

/// A configuration key the component reads. Values are parsed by an
/// exhaustive `match` on this, and [`KEYS`] lists its names, so the two
/// cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    BackendUrl,
    BackendApiKey,
    BackendHeaders,
    BackendMaxTokensParam,
    BackendThinkTags,
    Backends,
    ApiKeys,
    TenantSecret,
    ResponseTtlSeconds,
    ForwardClientKey,
    BackendReasoning,
    BackendTimeoutSeconds,
    StreamKeepaliveSeconds,
    MaxRequestBytes,
    RetentionGraceSeconds,
    RetentionSweepEvery,
    AdminKey,
    ModelContextWindows,
    McpAllowedServers,
    McpTimeoutSeconds,
    WebSearchProvider,
    WebSearchUrl,
    WebSearchApiKey,
    WebSearchTimeoutSeconds,
    TenantRequestsPerMinute,
    TenantTokensPerDay,
    UsageTracking,
}

impl Setting {
    const ALL: [Setting; 27] = [
        Setting::BackendUrl,
        Setting::BackendApiKey,
        Setting::BackendHeaders,
        Setting::BackendMaxTokensParam,
        Setting::BackendThinkTags,
        Setting::Backends,
        Setting::ApiKeys,
        Setting::TenantSecret,
        Setting::ResponseTtlSeconds,
        Setting::ForwardClientKey,
        Setting::BackendReasoning,
        Setting::BackendTimeoutSeconds,
        Setting::StreamKeepaliveSeconds,
        Setting::MaxRequestBytes,
        Setting::RetentionGraceSeconds,
        Setting::RetentionSweepEvery,
        Setting::AdminKey,
        Setting::ModelContextWindows,
        Setting::McpAllowedServers,
        Setting::McpTimeoutSeconds,
        Setting::WebSearchProvider,
        Setting::WebSearchUrl,
        Setting::WebSearchApiKey,
        Setting::WebSearchTimeoutSeconds,
        Setting::TenantRequestsPerMinute,
        Setting::TenantTokensPerDay,
        Setting::UsageTracking,
    ];

    const fn name(self) -> &'static str {
        match self {
            Setting::BackendUrl => "backend_url",
            Setting::BackendApiKey => "backend_api_key",
            Setting::BackendHeaders => "backend_headers",
            Setting::BackendMaxTokensParam => "backend_max_tokens_param",
            Setting::BackendThinkTags => "backend_think_tags",
            Setting::Backends => "backends",
            Setting::ApiKeys => "api_keys",
            Setting::TenantSecret => "tenant_secret",
            Setting::ResponseTtlSeconds => "response_ttl_seconds",
            Setting::ForwardClientKey => "forward_client_key",
            Setting::BackendReasoning => "backend_reasoning",
            Setting::BackendTimeoutSeconds => "backend_timeout_seconds",
            Setting::StreamKeepaliveSeconds => "stream_keepalive_seconds",
            Setting::MaxRequestBytes => "max_request_bytes",
            Setting::RetentionGraceSeconds => "retention_grace_seconds",
            Setting::RetentionSweepEvery => "retention_sweep_every",
            Setting::AdminKey => "admin_key",
            Setting::ModelContextWindows => "model_context_windows",
            Setting::McpAllowedServers => "mcp_allowed_servers",
            Setting::McpTimeoutSeconds => "mcp_timeout_seconds",
            Setting::WebSearchProvider => "web_search_provider",
            Setting::WebSearchUrl => "web_search_url",
            Setting::WebSearchApiKey => "web_search_api_key",
            Setting::WebSearchTimeoutSeconds => "web_search_timeout_seconds",
            Setting::TenantRequestsPerMinute => "tenant_requests_per_minute",
            Setting::TenantTokensPerDay => "tenant_tokens_per_day",
            Setting::UsageTracking => "usage_tracking",
        }
    }

    fn parse(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|key| key.name() == name)
    }
}

/// Every configuration key the component reads.
pub const KEYS: [&str; Setting::ALL.len()] = {
    let mut names = [""; Setting::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Setting::ALL[i].name();
        i += 1;
    }
    names
};

/// The component's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The backends, in the order they are tried for a model.
    pub routes: Routes,
    /// Keys clients may present; empty: the service is open.
    pub api_keys: Vec<ApiKey>,
    /// Keys the HMAC that derives tenant ids (see [`crate::auth`]).
    pub tenant_secret: Option<String>,
    /// `None`: responses never expire.
    pub response_ttl_seconds: Option<i64>,
    pub forward_client_key: bool,
    pub backend_reasoning: bool,
    pub backend_timeout_seconds: u64,
    /// Seconds of silence before a stream gets a keep-alive comment; 0 never.
    pub stream_keepalive_seconds: u64,
    /// Largest request body, in bytes; larger ones are answered 413.
    pub max_request_bytes: u64,
    /// How long past its expiry stored data is kept before removal.
    pub retention_grace_seconds: i64,
    /// One create in this many runs a removal step after answering; 0 never.
    pub retention_sweep_every: u32,
    /// The key of the admin routes; `None`: they are off.
    pub admin_key: Option<String>,
    /// Context windows in tokens by model name pattern (`*` globs), first
    /// match wins: what `truncation: "auto"` fits a request into.
    pub model_context_windows: Vec<(String, u64)>,
    /// The MCP servers requests may name; empty: none.
    pub mcp_allowed_servers: crate::mcp::allow::AllowList,
    /// Longest wait for an MCP server's listing or call.
    pub mcp_timeout_seconds: u64,
    /// The provider `web_search` tools run on; `None`: they are echoed.
    pub web_search: Option<crate::search::SearchConfig>,
    /// Longest wait for one search.
    pub web_search_timeout_seconds: u64,
    /// Creates per tenant per minute; `None`: no limit.
    pub tenant_requests_per_minute: Option<u64>,
    /// Tokens per tenant per UTC day; `None`: no limit.
    pub tenant_tokens_per_day: Option<u64>,
    /// Whether creates add to the usage totals (a tokens-per-day limit
    /// needs them, so it keeps them on).
    pub usage_tracking: bool,
}

impl Settings {
    /// The context window of `model`, if one is configured.
    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.model_context_windows
            .iter()
            .find(|(pattern, _)| crate::backend::routes::glob(pattern, model))
            .map(|(_, tokens)| *tokens)
    }

    /// How long a stream may stay silent before a keep-alive; `None` never.
    pub fn stream_keepalive(&self) -> Option<std::time::Duration> {
        (self.stream_keepalive_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.stream_keepalive_seconds))
    }

    /// Settings from configuration pairs (what `wasi:config/store.get-all` returns).
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(
        pairs: I,
    ) -> Result<Self, ApiError> {
        let mut settings = Settings {
            response_ttl_seconds: Some(DEFAULT_TTL_SECONDS),
            backend_timeout_seconds: DEFAULT_BACKEND_TIMEOUT_SECONDS,
            stream_keepalive_seconds: DEFAULT_STREAM_KEEPALIVE_SECONDS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            retention_grace_seconds: crate::store::retention::DEFAULT_GRACE_SECONDS,
            retention_sweep_every: DEFAULT_RETENTION_SWEEP_EVERY,
            mcp_timeout_seconds: DEFAULT_MCP_TIMEOUT_SECONDS,
            web_search_timeout_seconds: DEFAULT_WEB_SEARCH_TIMEOUT_SECONDS,
            usage_tracking: true,
            ..Settings::default()
        };
        let mut default = DefaultBackend::default();
        let mut search: [Option<String>; 3] = Default::default();
        let mut routes = Vec::new();
        for (name, value) in pairs {
            let Some(key) = Setting::parse(&name) else {
                continue;
            };
            let value = value.trim().to_owned();
            if value.is_empty() && key != Setting::BackendUrl && key != Setting::ApiKeys {
                continue;
            }
            match key {
                Setting::BackendUrl => default.url = value,
                Setting::BackendApiKey => default.api_key = Some(value),
                Setting::BackendHeaders => default.headers = parse_headers(&value)?,
                Setting::BackendMaxTokensParam => {
                    default.max_tokens_param =
                        Some(MaxTokensParam::parse(&value).map_err(ApiError::server)?)
                }
                Setting::BackendThinkTags => default.think_tags = truthy(&value),
                Setting::Backends => routes = parse_routes(&value)?,
                Setting::ApiKeys => settings.api_keys = parse_api_keys(&value)?,
                Setting::TenantSecret => settings.tenant_secret = Some(value),
                Setting::ResponseTtlSeconds => {
                    let ttl: i64 = number(key, &value)?;
                    settings.response_ttl_seconds = (ttl > 0).then_some(ttl);
                }
                Setting::BackendTimeoutSeconds => {
                    settings.backend_timeout_seconds = number(key, &value)?
                }
                Setting::StreamKeepaliveSeconds => {
                    settings.stream_keepalive_seconds = number(key, &value)?
                }
                Setting::RetentionGraceSeconds => {
                    settings.retention_grace_seconds = number(key, &value)?;
                    if settings.retention_grace_seconds < 0 {
                        return Err(ApiError::server(
                            "retention_grace_seconds must not be negative",
                        ));
                    }
                }
                Setting::RetentionSweepEvery => {
                    settings.retention_sweep_every = number(key, &value)?
                }
                Setting::AdminKey => settings.admin_key = Some(value),
                Setting::ModelContextWindows => {
                    settings.model_context_windows = parse_windows(&value)?
                }
                Setting::MaxRequestBytes => {
                    settings.max_request_bytes = number(key, &value)?;
                    if settings.max_request_bytes == 0 {
                        return Err(ApiError::server("max_request_bytes must be at least 1"));
                    }
                }
                Setting::McpAllowedServers => {
                    settings.mcp_allowed_servers = crate::mcp::allow::AllowList::parse(&value)
                        .map_err(|e| ApiError::server(format!("mcp_allowed_servers: {e}")))?
                }
                Setting::McpTimeoutSeconds => {
                    settings.mcp_timeout_seconds = number(key, &value)?;
                    if settings.mcp_timeout_seconds == 0 {
                        return Err(ApiError::server("mcp_timeout_seconds must be at least 1"));
                    }
                }
                Setting::WebSearchProvider => search[0] = Some(value),
                Setting::WebSearchUrl => search[1] = Some(value),
                Setting::WebSearchApiKey => search[2] = Some(value),
                Setting::WebSearchTimeoutSeconds => {
                    settings.web_search_timeout_seconds = number(key, &value)?;
                    if settings.web_search_timeout_seconds == 0 {
                        return Err(ApiError::server(
                            "web_search_timeout_seconds must be at least 1",
                        ));
                    }
                }
                Setting::TenantRequestsPerMinute => {
                    let limit: u64 = number(key, &value)?;
                    settings.tenant_requests_per_minute = (limit > 0).then_some(limit);
                }
                Setting::TenantTokensPerDay => {
                    let limit: u64 = number(key, &value)?;
                    settings.tenant_tokens_per_day = (limit > 0).then_some(limit);
                }
                Setting::UsageTracking => settings.usage_tracking = truthy(&value),
                Setting::ForwardClientKey => settings.forward_client_key = truthy(&value),
                Setting::BackendReasoning => settings.backend_reasoning = truthy(&value),
            }
        }
        if let [Some(provider), url, key] = &search {
            let config =
                crate::search::SearchConfig::parse(provider, url.as_deref(), key.as_deref())
                    .map_err(ApiError::server)?;
            settings.web_search = Some(config);
        }
        routes.extend(default.into_route()?);
        if routes.is_empty() {
            return Err(ApiError::server(
                "The server has no backend configured: set the `backend_url` variable.",
            ));
        }
        settings.routes = Routes(routes);
        Ok(settings)
    }
}

/// The settings of the default backend, which serves every model.
#[derive(Default)]
struct DefaultBackend {
    url: String,
    api_key: Option<String>,
    headers: Vec<(String, String)>,
    max_tokens_param: Option<MaxTokensParam>,
    think_tags: bool,
}

impl DefaultBackend {
    fn into_route(self) -> Result<Option<Route>, ApiError> {
        if self.url.is_empty() {
            return Ok(None);
        }
        let mut route = Route::new(&self.url);
        check_url(&route.base).map_err(|e| {
            ApiError::server(format!("The `backend_url` setting is not valid: {e}"))
        })?;
        route.api_key = self.api_key;
        route.headers = self.headers;
        route.max_tokens_param = self.max_tokens_param;
        route.think_tags = self.think_tags;
        Ok(Some(route))
    }
}

fn number<T: std::str::FromStr>(key: Setting, value: &str) -> Result<T, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::server(format!("{} must be a number, got '{value}'", key.name())))
}

/// `model_context_windows`: `pattern=tokens` pairs separated by commas,
/// e.g. `gpt-4o*=128000, llama3*=8192`.
fn parse_windows(value: &str) -> Result<Vec<(String, u64)>, ApiError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let invalid = || {
                ApiError::server(format!(
                    "model_context_windows: '{pair}' is not model=tokens (e.g. llama3*=8192)"
                ))
            };
            let (pattern, tokens) = pair.split_once('=').ok_or_else(invalid)?;
            let tokens: u64 = tokens.trim().parse().map_err(|_| invalid())?;
            let pattern = pattern.trim();
            if pattern.is_empty() || tokens == 0 {
                return Err(invalid());
            }
            Ok((pattern.to_owned(), tokens))
        })
        .collect()
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
        let route = s.routes.for_model("any").unwrap();
        assert_eq!(route.url("models"), "http://127.0.0.1:8000/v1/models");
        assert_eq!(s.api_keys, ["a", "b", "c"].map(ApiKey::bare));
        assert_eq!(route.api_key, None);
        assert_eq!(s.response_ttl_seconds, Some(DEFAULT_TTL_SECONDS));
    }

    #[test]
    fn missing_backend_is_an_error() {
        assert_eq!(Settings::from_pairs(pairs(&[])).unwrap_err().status, 500);
    }

    #[test]
    fn backends_come_before_the_default_one() {
        let s = Settings::from_pairs(pairs(&[
            ("backend_url", "http://127.0.0.1:8000/v1?x=1"),
            ("backend_headers", "X-Tenant: t1"),
            ("backend_max_tokens_param", "max_completion_tokens"),
            (
                "backends",
                r#"[{"models": "gpt-*", "url": "https://api.openai.com/v1"}]"#,
            ),
        ]))
        .unwrap();
        assert_eq!(
            s.routes.for_model("gpt-4o").unwrap().base,
            "https://api.openai.com/v1"
        );
        let local = s.routes.for_model("llama").unwrap();
        assert_eq!(local.query.as_deref(), Some("x=1"));
        assert_eq!(
            local.headers(None),
            [("x-tenant".to_owned(), "t1".to_owned())]
        );
        assert_eq!(
            local.max_tokens_param,
            Some(MaxTokensParam::MaxCompletionTokens)
        );
        let only_routes = Settings::from_pairs(pairs(&[(
            "backends",
            r#"[{"models": ["a"], "url": "http://127.0.0.1:1/v1"}]"#,
        )]))
        .unwrap();
        assert_eq!(only_routes.routes.for_model("b").unwrap_err().status, 404);
        assert!(Settings::from_pairs(pairs(&[("backend_url", "127.0.0.1:8000")])).is_err());
    }

    #[test]
    fn zero_ttl_means_forever() {
        let s = Settings::from_pairs(pairs(&[
            ("backend_url", "http://x"),
            ("response_ttl_seconds", "0"),
        ]))
        .unwrap();
        assert_eq!(s.response_ttl_seconds, None);
    }
}
