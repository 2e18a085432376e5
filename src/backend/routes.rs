//! Which backend serves a model, and how to call it.
//!
//! A [`Route`] is one backend: its base URL (which may carry a query string,
//! as Azure's `.../deployments/NAME?api-version=...` does: paths go before
//! the query), its key, fixed headers, and the model names it serves (exact
//! names, or globs with `*`). [`Routes`] tries the `backends` setting in
//! order, then the default backend (`backend_url`), which serves every model.
//! URLs and keys come only from configuration; a request picks among them by
//! its model name and nothing else.

use serde_json::Value;

use super::dialect::MaxTokensParam;
use crate::error::ApiError;

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Model names this backend serves; empty serves every model.
    pub models: Vec<String>,
    /// The base URL without its query, e.g. `http://127.0.0.1:8000/v1`.
    pub base: String,
    /// The base URL's query, without `?`.
    pub query: Option<String>,
    pub api_key: Option<String>,
    /// Fixed headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The name the backend takes the output-token limit under, when the
    /// operator fixed it.
    pub max_tokens_param: Option<MaxTokensParam>,
    /// Reasoning arrives in `<think>...</think>` at the start of content.
    pub think_tags: bool,
}

/// Every configured backend, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(pub Vec<Route>);

impl Routes {
    /// The backend for `model`, or 404 `model_not_found`.
    pub fn for_model(&self, model: &str) -> Result<&Route, ApiError> {
        self.0
            .iter()
            .find(|route| route.serves(model))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "The model '{model}' does not exist or you do not have access to it."
                ))
                .with_param("model")
                .with_code("model_not_found")
            })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }
}

impl Route {
    /// A route serving every model at `url`.
    pub fn new(url: &str) -> Route {
        let url = url.trim();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query).filter(|q| !q.is_empty())),
            None => (url, None),
        };
        Route {
            models: Vec::new(),
            base: base.trim_end_matches('/').to_owned(),
            query: query.map(str::to_owned),
            api_key: None,
            headers: Vec::new(),
            max_tokens_param: None,
            think_tags: false,
        }
    }

    /// Whether this backend serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| glob(pattern, model))
    }

    /// The URL of `path` (e.g. `chat/completions`) on this backend.
    pub fn url(&self, path: &str) -> String {
        let mut url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        if let Some(query) = &self.query {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The headers every call carries: the route's own, then the bearer
    /// key (the route's, else `client_key` when given).
    pub fn headers(&self, client_key: Option<&str>) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(key) = self.api_key.as_deref().or(client_key) {
            if !headers.iter().any(|(name, _)| name == "authorization") {
                headers.push(("authorization".to_owned(), format!("Bearer {key}")));
            }
        }
        headers
    }

    /// The URL without anything an operator would not want repeated: its
    /// scheme, host and port. For logs.
    pub fn origin(&self) -> &str {
        let after_scheme = self.base.find("://").map_or(0, |i| i + 3);
        let end = self.base[after_scheme..]
            .find('/')
            .map_or(self.base.len(), |i| after_scheme + i);
        &self.base[..end]
    }
}

/// The keys an entry of the `backends` setting may have.
const ROUTE_KEYS: [&str; 6] = [
    "url",
    "models",
    "api_key",
    "headers",
    "max_tokens_param",
    "think_tags",
];

/// The routes of the `backends` setting: a JSON array of
/// `{"models", "url", "api_key", "headers", "max_tokens_param", "think_tags"}`.
/// (Read from a [`Value`] rather than derived: serde's untagged and
/// unknown-field machinery would cost the component more than this.)
pub fn parse_routes(text: &str) -> Result<Vec<Route>, ApiError> {
    let invalid =
        |detail: String| ApiError::server(format!("The `backends` setting is not valid: {detail}"));
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let entries = value
        .as_array()
        .ok_or_else(|| invalid("it must be a JSON array of routes".to_owned()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| route(entry).map_err(|e| invalid(format!("entry {i}: {e}"))))
        .collect()
}

/// One entry of the `backends` setting.
fn route(entry: &Value) -> Result<Route, String> {
    let object = entry.as_object().ok_or("a route must be an object")?;
    if let Some(unknown) = object.keys().find(|k| !ROUTE_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key '{unknown}'"));
    }
    let text = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("'{key}' must be a string")),
        }
    };
    let url = text("url")?.ok_or("'url' is required")?;
    let mut route = Route::new(url);
    check_url(&route.base)?;
    route.models = match object.get("models") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(model)) => vec![model.clone()],
        Some(Value::Array(models)) => models
            .iter()
            .map(|m| m.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or("'models' must be a name or a list of names")?,
        Some(_) => return Err("'models' must be a name or a list of names".to_owned()),
    };
    route.api_key = text("api_key")?
        .filter(|k| !k.trim().is_empty())
        .map(str::to_owned);
    if let Some(headers) = object.get("headers").filter(|h| !h.is_null()) {
        route.headers = header_object(headers)?;
    }
    route.max_tokens_param = text("max_tokens_param")?
        .map(MaxTokensParam::parse)
        .transpose()?;
    route.think_tags = match object.get("think_tags") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(on)) => *on,
        Some(_) => return Err("'think_tags' must be true or false".to_owned()),
    };
    Ok(route)
}

/// `backend_headers`: a JSON object, or `Name: value` lines.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let invalid = |detail: String| {
        ApiError::server(format!(
            "The `backend_headers` setting is not valid: {detail}"
        ))
    };
    let text = text.trim();
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        return header_object(&value).map_err(invalid);
    }
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("line {} is not `Name: value`", i + 1)))?;
            header(name, value).map_err(invalid)
        })
        .collect()
}

fn header_object(value: &Value) -> Result<Vec<(String, String)>, String> {
    let object = value
        .as_object()
        .ok_or("headers must be an object of names to strings")?;
    object
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .ok_or_else(|| format!("the value of header '{name}' must be a string"))?;
            header(name, value)
        })
        .collect()
}

fn header(name: &str, value: &str) -> Result<(String, String), String> {
    let name = name.trim().to_ascii_lowercase();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("'{}' is not a header name", header_name(&name)));
    }
    if matches!(
        name.as_str(),
        "content-length" | "transfer-encoding" | "host" | "connection"
    ) {
        return Err(format!("the header '{name}' is set by the HTTP client"));
    }
    let value = value.trim();
    if value.chars().any(|c| c.is_control()) {
        return Err(format!(
            "the value of header '{name}' has control characters"
        ));
    }
    Ok((name, value.to_owned()))
}

/// A header name fit for an error message: never a value, which may be a
/// secret.
fn header_name(text: &str) -> String {
    text.split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .take(40)
        .collect()
}

/// An `http` or `https` URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("the URL must start with http:// or https://")?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("gpt-*", "gpt-4o"));
        assert!(glob("*", "anything"));
        assert!(glob("llama3.2", "llama3.2"));
        assert!(!glob("llama3.2", "llama3.2:1b"));
        assert!(glob("*:latest", "qwen3:latest"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(!glob("ab*ba", "aba"));
        assert!(!glob("gpt-*", "o3"));
    }

    #[test]
    fn paths_go_before_the_query() {
        let azure = Route::new(
            "https://x.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        );
        assert_eq!(
            azure.url("chat/completions"),
            "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(azure.origin(), "https://x.openai.azure.com");
        let plain = Route::new("http://127.0.0.1:8000/v1/");
        assert_eq!(plain.url("models"), "http://127.0.0.1:8000/v1/models");
        assert_eq!(plain.origin(), "http://127.0.0.1:8000");
    }

    #[test]
    fn routes_match_in_order_and_unknown_models_are_404() {
        let routes = parse_routes(
            r#"[{"models": ["gpt-*", "o3"], "url": "https://api.openai.com/v1", "api_key": "sk-1",
                 "max_tokens_param": "max_completion_tokens"},
                {"models": "llama*", "url": "http://127.0.0.1:8000/v1",
                 "headers": {"X-Tenant": "a"}}]"#,
        )
        .unwrap();
        let routes = Routes(routes);
        let openai = routes.for_model("gpt-4o").unwrap();
        assert_eq!(
            openai.max_tokens_param,
            Some(MaxTokensParam::MaxCompletionTokens)
        );
        assert_eq!(
            openai.headers(None),
            [("authorization".to_owned(), "Bearer sk-1".to_owned())]
        );
        let local = routes.for_model("llama3.2").unwrap();
        assert_eq!(
            local.headers(Some("client")),
            [
                ("x-tenant".to_owned(), "a".to_owned()),
                ("authorization".to_owned(), "Bearer client".to_owned())
            ]
        );
        let missing = routes.for_model("mistral").unwrap_err();
        assert_eq!(
            (missing.status, missing.code.as_deref()),
            (404, Some("model_not_found"))
        );
    }

    #[test]
    fn bad_settings_are_named_without_their_values() {
        let error = parse_routes(r#"[{"url": "ftp://x"}]"#).unwrap_err();
        assert!(error.message.contains("entry 0"), "{}", error.message);
        assert!(parse_routes(r#"[{"url": "http://x", "bogus": 1}]"#).is_err());
        let headers = parse_headers("api-key: s3cret\nHTTP-Referer: https://example.com").unwrap();
        assert_eq!(headers[0], ("api-key".to_owned(), "s3cret".to_owned()));
        assert_eq!(headers[1].0, "http-referer");
        let error = parse_headers("api-key s3cret").unwrap_err();
        assert!(!error.message.contains("s3cret"), "{}", error.message);
        assert!(parse_headers(r#"{"content-length": "1"}"#).is_err());
        assert_eq!(
            parse_headers(r#"{"api-key": "k"}"#).unwrap(),
            [("api-key".to_owned(), "k".to_owned())]
        );
    }
}
