//! Which search provider the `web_search` tool calls, from three settings:
//!
//! | setting | meaning |
//! | --- | --- |
//! | `web_search_provider` | `searxng`, `brave` or `tavily` |
//! | `web_search_url` | the provider's base URL: required for `searxng` (the instance, e.g. `http://127.0.0.1:8888`, whose settings need `search.formats: [json]`); defaults to `https://api.search.brave.com` and `https://api.tavily.com` |
//! | `web_search_api_key` | required for `brave` (sent as `x-subscription-token`) and `tavily` (`authorization: Bearer`); with `searxng`, optional, sent as `authorization: Bearer` for an instance behind an authenticating proxy |
//!
//! The key appears in no error message and no `Debug` output.

use crate::backend::routes::check_url;

/// The search APIs the tool can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Searxng,
    Brave,
    Tavily,
}

impl ProviderKind {
    /// The name `web_search_provider` gives it.
    pub const fn name(self) -> &'static str {
        match self {
            ProviderKind::Searxng => "searxng",
            ProviderKind::Brave => "brave",
            ProviderKind::Tavily => "tavily",
        }
    }

    const fn default_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Searxng => None,
            ProviderKind::Brave => Some("https://api.search.brave.com"),
            ProviderKind::Tavily => Some("https://api.tavily.com"),
        }
    }
}

/// A provider and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct SearchConfig {
    pub kind: ProviderKind,
    /// The base URL: http(s), no trailing slash, no query or fragment.
    pub url: String,
    pub api_key: Option<String>,
}

impl std::fmt::Debug for SearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SearchConfig {
    /// The settings `web_search_provider`, `web_search_url` and
    /// `web_search_api_key` (empty values count as unset); an error names
    /// the setting at fault.
    pub fn parse(
        provider: &str,
        url: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<SearchConfig, String> {
        let kind = match provider.trim().to_ascii_lowercase().as_str() {
            "searxng" => ProviderKind::Searxng,
            "brave" => ProviderKind::Brave,
            "tavily" => ProviderKind::Tavily,
            other => {
                return Err(format!(
                    "web_search_provider must be searxng, brave or tavily, got '{other}'"
                ))
            }
        };
        let url = match (
            url.map(str::trim).filter(|u| !u.is_empty()),
            kind.default_url(),
        ) {
            (Some(url), _) | (None, Some(url)) => url.trim_end_matches('/'),
            (None, None) => {
                return Err(format!(
                    "web_search_url is required with web_search_provider {}: the instance's \
                     base URL, e.g. http://127.0.0.1:8888",
                    kind.name()
                ))
            }
        };
        check_url(url).map_err(|e| format!("web_search_url is not valid: {e}"))?;
        if url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(
                "web_search_url is not valid: it must be a base URL, without spaces, \
                 a query or a fragment"
                    .into(),
            );
        }
        let api_key = api_key.map(str::trim).filter(|k| !k.is_empty());
        if api_key.is_some_and(|k| k.chars().any(char::is_control)) {
            return Err("web_search_api_key is not valid: it contains control characters".into());
        }
        if api_key.is_none() && kind != ProviderKind::Searxng {
            return Err(format!(
                "web_search_api_key is required with web_search_provider {}",
                kind.name()
            ));
        }
        Ok(SearchConfig {
            kind,
            url: url.to_owned(),
            api_key: api_key.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_with_their_urls_and_keys() {
        let searxng =
            SearchConfig::parse(" SearXNG ", Some("http://127.0.0.1:8888/"), None).unwrap();
        assert_eq!(
            searxng,
            SearchConfig {
                kind: ProviderKind::Searxng,
                url: "http://127.0.0.1:8888".into(),
                api_key: None
            }
        );
        let brave = SearchConfig::parse("brave", Some(""), Some(" k1 ")).unwrap();
        assert_eq!(brave.url, "https://api.search.brave.com");
        assert_eq!(brave.api_key.as_deref(), Some("k1"));
        let tavily = SearchConfig::parse("tavily", None, Some("tvly-k")).unwrap();
        assert_eq!(tavily.kind, ProviderKind::Tavily);
        assert_eq!(tavily.url, "https://api.tavily.com");
        let proxied =
            SearchConfig::parse("tavily", Some("https://proxy.test/tavily//"), Some("k")).unwrap();
        assert_eq!(proxied.url, "https://proxy.test/tavily");
        assert!(!format!("{tavily:?}").contains("tvly-k"));
    }

    #[test]
    fn errors_name_the_setting_and_never_the_key() {
        let cases = [
            ("bing", None, None, "web_search_provider"),
            ("", None, None, "web_search_provider"),
            ("searxng", None, None, "web_search_url"),
            ("searxng", Some("  "), None, "web_search_url"),
            ("searxng", Some("127.0.0.1:8888"), None, "web_search_url"),
            ("searxng", Some("ftp://x"), None, "web_search_url"),
            ("searxng", Some("http://"), None, "web_search_url"),
            (
                "searxng",
                Some("http://x/search?q=1"),
                None,
                "web_search_url",
            ),
            ("searxng", Some("http://x y"), None, "web_search_url"),
            (
                "brave",
                Some("https://x.test"),
                Some("secret\nx"),
                "web_search_api_key",
            ),
            ("brave", None, None, "web_search_api_key"),
            ("tavily", None, Some(" "), "web_search_api_key"),
        ];
        for (provider, url, key, setting) in cases {
            let error = SearchConfig::parse(provider, url, key).unwrap_err();
            assert!(error.starts_with(setting), "{provider} {url:?}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
