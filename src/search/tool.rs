//! The `web_search` tool of a request, as OpenAI defines it:
//!
//! ```json
//! {"type": "web_search",
//!  "filters": {"allowed_domains": ["pubmed.ncbi.nlm.nih.gov"]},
//!  "user_location": {"type": "approximate", "country": "GB", "city": "London",
//!                    "region": "London", "timezone": "Europe/London"},
//!  "search_context_size": "medium"}
//! ```
//!
//! Every field is optional and `null` counts as absent; fields this
//! service does not use are ignored. A field of the wrong type or value is
//! a 400 naming it. `external_web_access: false` (cached results only,
//! which no provider here has) is [`WebSearchTool::cached_only`]: such a
//! tool is not offered to the model.
//!
//! `search_context_size` is how many sources one search gives the model:
//! `low` 3, `medium` (the default) 5, `high` 8.
//!
//! Allowed domains are compared as host names: lowercase, without a scheme,
//! path, port, leading `www.` or `*.`, or trailing dot. A domain allows
//! itself and its subdomains, so `www.example.com` and `example.com` both
//! allow `example.com`, `www.example.com` and `docs.example.com`.

use serde_json::Value;

use crate::api::limits::array_too_long;
use crate::error::ApiError;

/// Most allowed domains a tool can list (OpenAI's limit).
pub const MAX_ALLOWED_DOMAINS: usize = 100;

/// The `type`s a web search tool can have.
pub const TOOL_TYPES: [&str; 4] = [
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
];

/// `search_context_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextSize {
    Low,
    #[default]
    Medium,
    High,
}

impl ContextSize {
    /// How many sources one search returns: 3, 5 or 8.
    pub const fn results(self) -> usize {
        match self {
            ContextSize::Low => 3,
            ContextSize::Medium => 5,
            ContextSize::High => 8,
        }
    }
}

/// `user_location` (always `approximate`); empty strings count as absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserLocation {
    pub city: Option<String>,
    /// The ISO 3166-1 alpha-2 code, uppercase.
    pub country: Option<String>,
    pub region: Option<String>,
    pub timezone: Option<String>,
}

/// A request's web search tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebSearchTool {
    /// Normalised domains (see the module documentation); empty allows any.
    pub allowed_domains: Vec<String>,
    pub location: Option<UserLocation>,
    pub context_size: ContextSize,
    /// `external_web_access: false`: no live searches.
    pub cached_only: bool,
}

impl WebSearchTool {
    /// The tool `tool`, which the request has at `param` (`tools[2]`).
    pub fn parse(tool: &Value, param: &str) -> Result<WebSearchTool, ApiError> {
        let Some(fields) = tool.as_object() else {
            return Err(wrong_type(param, "an object", tool));
        };
        let kind = fields.get("type").and_then(Value::as_str);
        if !kind.is_some_and(|kind| TOOL_TYPES.contains(&kind)) {
            let expected = format!("one of {}", TOOL_TYPES.join(", "));
            return Err(invalid_value(&format!("{param}.type"), &expected));
        }
        let mut parsed = WebSearchTool::default();
        if let Some(filters) = present(fields, "filters") {
            let param = format!("{param}.filters");
            let Some(filters) = filters.as_object() else {
                return Err(wrong_type(&param, "an object", filters));
            };
            if let Some(domains) = present(filters, "allowed_domains") {
                parsed.allowed_domains =
                    allowed_domains(domains, &format!("{param}.allowed_domains"))?;
            }
        }
        if let Some(access) = present(fields, "external_web_access") {
            let Some(live) = access.as_bool() else {
                return Err(wrong_type(
                    &format!("{param}.external_web_access"),
                    "a boolean",
                    access,
                ));
            };
            parsed.cached_only = !live;
        }
        if let Some(location) = present(fields, "user_location") {
            parsed.location = Some(user_location(location, &format!("{param}.user_location"))?);
        }
        if let Some(size) = present(fields, "search_context_size") {
            parsed.context_size = match size.as_str() {
                Some("low") => ContextSize::Low,
                Some("medium") => ContextSize::Medium,
                Some("high") => ContextSize::High,
                _ => {
                    return Err(invalid_value(
                        &format!("{param}.search_context_size"),
                        "one of 'low', 'medium' or 'high'",
                    ))
                }
            };
        }
        Ok(parsed)
    }

    /// Whether a result on `host` (lowercase, as [`super::http_host`]
    /// gives it) may be shown.
    pub fn allows_host(&self, host: &str) -> bool {
        self.allowed_domains.is_empty()
            || self.allowed_domains.iter().any(|domain| {
                host.strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
            })
    }
}

/// `domain` as allowed domains are compared (see the module
/// documentation); `None` when it is not an ASCII host name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let domain = domain.trim().to_ascii_lowercase();
    let rest = domain
        .strip_prefix("https://")
        .or_else(|| domain.strip_prefix("http://"))
        .unwrap_or(&domain);
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    let host = host.trim_end_matches('.');
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host = host.strip_prefix("www.").unwrap_or(host);
    let valid = host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| host.to_owned())
}

/// `fields[key]` unless absent or `null`.
fn present<'v>(fields: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    fields.get(key).filter(|value| !value.is_null())
}

fn allowed_domains(value: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    let Some(list) = value.as_array() else {
        return Err(wrong_type(param, "an array", value));
    };
    if list.len() > MAX_ALLOWED_DOMAINS {
        return Err(ApiError::invalid_request(array_too_long(
            param,
            MAX_ALLOWED_DOMAINS,
            list.len(),
        ))
        .with_param(param)
        .with_code("array_above_max_length"));
    }
    let mut domains: Vec<String> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let param = format!("{param}[{i}]");
        let Some(entry) = entry.as_str() else {
            return Err(wrong_type(&param, "a string", entry));
        };
        let Some(domain) = normalize_domain(entry) else {
            return Err(invalid_value(
                &param,
                "a domain name like example.com (internationalised names in their \
                 ASCII form, xn--...)",
            ));
        };
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

fn user_location(value: &Value, param: &str) -> Result<UserLocation, ApiError> {
    let Some(fields) = value.as_object() else {
        return Err(wrong_type(param, "an object", value));
    };
    if let Some(kind) = present(fields, "type") {
        if kind.as_str() != Some("approximate") {
            return Err(invalid_value(&format!("{param}.type"), "'approximate'"));
        }
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match present(fields, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
            Some(other) => Err(wrong_type(&format!("{param}.{key}"), "a string", other)),
        }
    };
    let country = text("country")?;
    if let Some(code) = &country {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid_value(
                &format!("{param}.country"),
                "a two-letter ISO country code like 'US'",
            ));
        }
    }
    Ok(UserLocation {
        city: text("city")?,
        country: country.map(|code| code.to_ascii_uppercase()),
        region: text("region")?,
        timezone: text("timezone")?,
    })
}

/// 400 for a field with a value it cannot have.
fn invalid_value(param: &str, expected: &str) -> ApiError {
    ApiError::invalid_param(
        param,
        format!("Invalid value for '{param}': expected {expected}."),
    )
}

/// 400 for a field of the wrong JSON type, in OpenAI's words.
fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid_param(
        param,
        format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
    )
    .with_code("invalid_type")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_full_tool_and_a_bare_one() {
        let tool = json!({
            "type": "web_search_2025_08_26",
            "filters": {"allowed_domains": [
                "https://www.Example.com/docs", "docs.rs", "example.com", "*.wikipedia.org."
            ]},
            "user_location": {"type": "approximate", "country": "gb", "city": " London ",
                              "region": "", "timezone": null},
            "search_context_size": "high",
            "external_web_access": true,
        });
        let parsed = WebSearchTool::parse(&tool, "tools[0]").unwrap();
        assert_eq!(
            parsed,
            WebSearchTool {
                allowed_domains: vec![
                    "example.com".into(),
                    "docs.rs".into(),
                    "wikipedia.org".into()
                ],
                location: Some(UserLocation {
                    city: Some("London".into()),
                    country: Some("GB".into()),
                    region: None,
                    timezone: None,
                }),
                context_size: ContextSize::High,
                cached_only: false,
            }
        );
        assert_eq!(parsed.context_size.results(), 8);
        let cached = json!({"type": "web_search", "external_web_access": false});
        assert!(WebSearchTool::parse(&cached, "t").unwrap().cached_only);
        for kind in TOOL_TYPES {
            let bare = WebSearchTool::parse(&json!({"type": kind, "filters": null}), "t").unwrap();
            assert_eq!(bare, WebSearchTool::default());
            assert_eq!(bare.context_size.results(), 5);
        }
        let low = json!({"type": "web_search", "search_context_size": "low", "filters": {}});
        assert_eq!(
            WebSearchTool::parse(&low, "t")
                .unwrap()
                .context_size
                .results(),
            3
        );
    }

    #[test]
    fn each_malformed_field_is_a_400_naming_it() {
        let many: Vec<String> = (0..101).map(|i| format!("d{i}.example.com")).collect();
        let cases = [
            (json!("web_search"), "tools[2]", "invalid_type"),
            (
                json!({"type": "file_search"}),
                "tools[2].type",
                "invalid_value",
            ),
            (json!({}), "tools[2].type", "invalid_value"),
            (
                json!({"type": "web_search", "filters": []}),
                "tools[2].filters",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "external_web_access": "no"}),
                "tools[2].external_web_access",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": "example.com"}}),
                "tools[2].filters.allowed_domains",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": ["a.com", 7]}}),
                "tools[2].filters.allowed_domains[1]",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": ["not a domain"]}}),
                "tools[2].filters.allowed_domains[0]",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": ["bücher.de"]}}),
                "tools[2].filters.allowed_domains[0]",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": ["https://"]}}),
                "tools[2].filters.allowed_domains[0]",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "filters": {"allowed_domains": many}}),
                "tools[2].filters.allowed_domains",
                "array_above_max_length",
            ),
            (
                json!({"type": "web_search", "user_location": "GB"}),
                "tools[2].user_location",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "user_location": {"type": "exact"}}),
                "tools[2].user_location.type",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "user_location": {"city": 3}}),
                "tools[2].user_location.city",
                "invalid_type",
            ),
            (
                json!({"type": "web_search", "user_location": {"country": "United Kingdom"}}),
                "tools[2].user_location.country",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "search_context_size": "huge"}),
                "tools[2].search_context_size",
                "invalid_value",
            ),
            (
                json!({"type": "web_search", "search_context_size": 3}),
                "tools[2].search_context_size",
                "invalid_value",
            ),
        ];
        for (tool, param, code) in cases {
            let error = WebSearchTool::parse(&tool, "tools[2]").unwrap_err();
            assert_eq!(error.status, 400, "{tool}");
            assert_eq!(error.param.as_deref(), Some(param), "{tool}");
            assert_eq!(error.code.as_deref(), Some(code), "{tool}");
            assert!(error.message.contains(param), "{}", error.message);
        }
        let hundred: Vec<String> = (0..100).map(|i| format!("d{i}.example.com")).collect();
        let tool = json!({"type": "web_search", "filters": {"allowed_domains": hundred}});
        assert_eq!(
            WebSearchTool::parse(&tool, "t")
                .unwrap()
                .allowed_domains
                .len(),
            100
        );
    }

    #[test]
    fn a_domain_allows_itself_and_its_subdomains() {
        let tool = WebSearchTool {
            allowed_domains: vec!["example.com".into(), "docs.rs".into()],
            ..WebSearchTool::default()
        };
        for host in [
            "example.com",
            "www.example.com",
            "a.b.example.com",
            "docs.rs",
        ] {
            assert!(tool.allows_host(host), "{host}");
        }
        for host in ["badexample.com", "example.com.evil.test", "rs", "com", ""] {
            assert!(!tool.allows_host(host), "{host}");
        }
        assert!(WebSearchTool::default().allows_host("anything.test"));
    }
}
