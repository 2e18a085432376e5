//! One search on the configured provider.
//!
//! | provider | request | results |
//! | --- | --- | --- |
//! | SearXNG | `GET {url}/search?q=..&format=json` | `results[].{title,url,content}` |
//! | Brave | `GET {url}/res/v1/web/search?q=..&count=..&result_filter=web&text_decorations=false[&country=..]`, `x-subscription-token` | `web.results[].{title,url,description}` |
//! | Tavily | `POST {url}/search` `{query, max_results, include_domains, topic: "general", search_depth: "basic"}`, `authorization: Bearer` | `results[].{title,url,content}` |
//!
//! Allowed domains go to SearXNG and Brave as `site:` terms OR'ed onto the
//! query, and to Tavily as `include_domains`; whatever a provider makes of
//! them, results outside the domains are dropped here, as are results whose
//! URL is not http(s), repeats of a URL, and results past the tool's count.
//! Brave's query is limited to 400 characters and 50 words: `site:` terms
//! that would not fit are left out of it (the filter here still applies),
//! and with allowed domains Brave is asked for its maximum of 20 results to
//! have some left after the filter.
//!
//! The user's country goes to Brave as `country` when Brave supports it.
//! It goes nowhere else: SearXNG takes a language rather than a country,
//! and Tavily takes full country names.
//!
//! A SearXNG instance answers 403 to `format=json` unless its settings list
//! `json` in `search.formats`.

use serde_json::{json, Value};

use super::config::{ProviderKind, SearchConfig};
use super::tool::WebSearchTool;
use super::{http_host, Source};
use crate::backend::{Backend, BodyStream, Method, Outbound};

/// Largest answer read from a provider.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Longest snippet kept, in characters (an ellipsis marks a cut).
pub const MAX_SNIPPET_CHARS: usize = 1000;

/// Longest title kept, in characters.
const MAX_TITLE_CHARS: usize = 300;

/// Longest query sent, in characters (Brave's limit; the others have
/// none worth reaching).
const MAX_QUERY_CHARS: usize = 400;

/// Longest result URL kept, in bytes.
const MAX_URL_BYTES: usize = 2048;

/// Brave's other query limit, in words.
const BRAVE_MAX_WORDS: usize = 50;

/// Brave's largest `count`.
const BRAVE_MAX_COUNT: usize = 20;

/// The `country` codes Brave's web search accepts; others are left out
/// rather than failing the search.
const BRAVE_COUNTRIES: &str = "AR AU AT BE BR CA CL DK FI FR DE GR HK IN ID IT JP KR MY MX \
                               NL NZ NO CN PL PT PH RU SA ZA ES SE CH TW TR GB US";

/// Why a search failed. The `Display` text is written for the model to
/// read, and never contains the API key or the provider's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchError {
    /// The query was empty.
    EmptyQuery,
    /// The provider could not be reached, or its answer broke off.
    Unreachable(String),
    /// An HTTP status other than success.
    Http(u16),
    /// An answer that is not the provider's JSON.
    Malformed(String),
}

impl std::fmt::Display for SearchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SearchError::EmptyQuery => f.write_str("the search query is empty"),
            SearchError::Unreachable(why) => {
                write!(f, "the search provider could not be reached: {why}")
            }
            SearchError::Http(status @ (401 | 403)) => {
                write!(f, "the search provider refused the request (HTTP {status})")
            }
            SearchError::Http(429) => f.write_str(
                "the search provider's rate limit was reached (HTTP 429); try again later",
            ),
            SearchError::Http(status) => write!(f, "the search provider answered HTTP {status}"),
            SearchError::Malformed(why) => {
                write!(f, "the search provider's answer is malformed: {why}")
            }
        }
    }
}

/// Searches for `query` with the provider of `config`, within the limits
/// of `tool`: at most `tool.context_size.results()` sources, in the
/// provider's order.
pub async fn search<B: Backend>(
    backend: &B,
    config: &SearchConfig,
    tool: &WebSearchTool,
    query: &str,
) -> Result<Vec<Source>, SearchError> {
    let query = truncate(query.trim(), MAX_QUERY_CHARS);
    if query.is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    let answer = backend
        .send(request(config, tool, query))
        .await
        .map_err(|e| SearchError::Unreachable(e.message))?;
    if !(200..300).contains(&answer.status) {
        return Err(SearchError::Http(answer.status));
    }
    let mut body = answer.body;
    let body = read_all(&mut body).await?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| SearchError::Malformed(e.to_string()))?;
    sources(config.kind, tool, &answer)
}

/// The provider's request for `query`.
fn request(config: &SearchConfig, tool: &WebSearchTool, query: &str) -> Outbound {
    let count = tool.context_size.results();
    let domains = &tool.allowed_domains;
    let key = config.api_key.clone().unwrap_or_default();
    let mut headers = vec![
        ("accept".to_owned(), "application/json".to_owned()),
        (
            "user-agent".to_owned(),
            concat!("edge-responses/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ];
    let encode =
        |value: &str| -> String { form_urlencoded::byte_serialize(value.as_bytes()).collect() };
    let (method, url, body) = match config.kind {
        ProviderKind::Searxng => {
            if config.api_key.is_some() {
                headers.push(("authorization".into(), format!("Bearer {key}")));
            }
            let q = encode(&with_sites(query, domains, usize::MAX, usize::MAX));
            let url = format!("{}/search?q={q}&format=json", config.url);
            (Method::Get, url, None)
        }
        ProviderKind::Brave => {
            headers.push(("x-subscription-token".into(), key));
            let q = encode(&with_sites(
                query,
                domains,
                MAX_QUERY_CHARS,
                BRAVE_MAX_WORDS,
            ));
            let count = if domains.is_empty() {
                count
            } else {
                BRAVE_MAX_COUNT
            };
            let mut url = format!(
                "{}/res/v1/web/search?q={q}&count={count}&result_filter=web&text_decorations=false",
                config.url
            );
            let country = tool.location.as_ref().and_then(|l| l.country.as_deref());
            let supported = |c: &&str| {
                c.len() == 2
                    && c.bytes().all(|b| b.is_ascii_uppercase())
                    && BRAVE_COUNTRIES.contains(*c)
            };
            if let Some(country) = country.filter(supported) {
                url.push_str("&country=");
                url.push_str(country);
            }
            (Method::Get, url, None)
        }
        ProviderKind::Tavily => {
            headers.push(("content-type".into(), "application/json".into()));
            headers.push(("authorization".into(), format!("Bearer {key}")));
            let body = json!({
                "query": query,
                "max_results": count,
                "include_domains": domains,
                "topic": "general",
                "search_depth": "basic",
            });
            let url = format!("{}/search", config.url);
            (Method::Post, url, Some(body.to_string().into_bytes()))
        }
    };
    Outbound {
        method,
        url,
        headers,
        body,
    }
}

/// `query` with `site:` terms for `domains` OR'ed onto it, as many as keep
/// it within `max_chars` characters and `max_words` words.
fn with_sites(query: &str, domains: &[String], max_chars: usize, max_words: usize) -> String {
    let mut sites = String::new();
    let mut chars = query.chars().count() + " ()".len();
    let mut words = query.split_whitespace().count();
    let mut included = 0;
    for domain in domains {
        let separator = if included == 0 { "" } else { " OR " };
        let term_words = if included == 0 { 1 } else { 2 };
        let term_chars = separator.len() + "site:".len() + domain.len();
        if chars + term_chars > max_chars || words + term_words > max_words {
            break;
        }
        sites.push_str(separator);
        sites.push_str("site:");
        sites.push_str(domain);
        chars += term_chars;
        words += term_words;
        included += 1;
    }
    match included {
        0 => query.to_owned(),
        1 => format!("{query} {sites}"),
        _ => format!("{query} ({sites})"),
    }
}

/// A body, at most [`MAX_ANSWER_BYTES`].
async fn read_all(body: &mut impl BodyStream) -> Result<Vec<u8>, SearchError> {
    let mut bytes = Vec::new();
    while let Some(piece) = body.next().await {
        bytes.extend(piece.map_err(SearchError::Unreachable)?);
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(SearchError::Malformed(
                "the answer is larger than 4 MiB".into(),
            ));
        }
    }
    Ok(bytes)
}

/// The sources of a provider's answer that `tool` allows.
fn sources(
    kind: ProviderKind,
    tool: &WebSearchTool,
    answer: &Value,
) -> Result<Vec<Source>, SearchError> {
    if !answer.is_object() {
        return Err(SearchError::Malformed(
            "the answer is not a JSON object".into(),
        ));
    }
    let (results, snippet) = match kind {
        ProviderKind::Searxng | ProviderKind::Tavily => (&answer["results"], "content"),
        // Brave leaves `web` out when it found nothing.
        ProviderKind::Brave => (&answer["web"]["results"], "description"),
    };
    let results = match results {
        Value::Array(results) => &results[..],
        Value::Null if kind == ProviderKind::Brave => &[],
        _ => {
            return Err(SearchError::Malformed(
                "the answer has no list of results".into(),
            ))
        }
    };
    let html = kind == ProviderKind::Brave;
    let max = tool.context_size.results();
    let mut sources: Vec<Source> = Vec::with_capacity(max);
    for result in results {
        if sources.len() == max {
            break;
        }
        let Some(url) = result["url"].as_str().map(str::trim) else {
            continue;
        };
        let allowed = url.len() <= MAX_URL_BYTES
            && http_host(url).is_some_and(|host| tool.allows_host(&host))
            && !sources.iter().any(|s| s.url == url);
        if !allowed {
            continue;
        }
        let text =
            |key: &str, max: usize| clean(result[key].as_str().unwrap_or_default(), max, html);
        let title = text("title", MAX_TITLE_CHARS);
        sources.push(Source {
            title: if title.is_empty() {
                url.to_owned()
            } else {
                title
            },
            url: url.to_owned(),
            snippet: text(snippet, MAX_SNIPPET_CHARS),
        });
    }
    Ok(sources)
}

/// `text` on one line (runs of whitespace made one space), without HTML
/// tags and entities when `html`, cut to `max` characters with an
/// ellipsis.
fn clean(text: &str, max: usize, html: bool) -> String {
    let text = if html { unhtml(text) } else { text.to_owned() };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text,
    }
}

/// `text` cut to `max` characters.
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Brave's display strings are HTML: `<strong>` around matches (without
/// `text_decorations=false`) and entities such as `&#x27;`.
fn unhtml(text: &str) -> String {
    const TAGS: [&str; 4] = ["<strong>", "</strong>", "<b>", "</b>"];
    const ENTITIES: [(&str, &str); 7] = [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#x27;", "'"),
        ("&#39;", "'"),
        ("&nbsp;", " "),
        ("&amp;", "&"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(tag) = TAGS.iter().find(|tag| rest.starts_with(**tag)) {
            rest = &rest[tag.len()..];
        } else if let Some((entity, plain)) = ENTITIES.iter().find(|(e, _)| rest.starts_with(*e)) {
            out.push_str(plain);
            rest = &rest[entity.len()..];
        } else {
            // `<` and `&` are one byte each.
            out.push_str(&rest[..1]);
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::backend::replay::ReplayBackend;
    use crate::error::ApiError;
    use crate::search::tool::{ContextSize, UserLocation};

    fn block<F: std::future::Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    fn config(kind: &str, url: Option<&str>, key: Option<&str>) -> SearchConfig {
        SearchConfig::parse(kind, url, key).unwrap()
    }

    fn searxng() -> SearchConfig {
        config("searxng", Some("http://127.0.0.1:8888/"), None)
    }

    fn tool(domains: &[&str], country: Option<&str>, size: ContextSize) -> WebSearchTool {
        WebSearchTool {
            allowed_domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            location: country.map(|c| UserLocation {
                country: Some(c.to_owned()),
                ..UserLocation::default()
            }),
            context_size: size,
            cached_only: false,
        }
    }

    fn header<'h>(request: &'h Outbound, name: &str) -> Option<&'h str> {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_pairs(url: &str) -> Vec<(String, String)> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// Runs one search against `answer` (status, JSON body), returning its
    /// result and the request sent.
    fn run(
        config: &SearchConfig,
        tool: &WebSearchTool,
        query: &str,
        status: u16,
        answer: &str,
    ) -> (Result<Vec<Source>, SearchError>, Outbound) {
        let backend = Rc::new(ReplayBackend::default());
        backend.push_body(status, "application/json", answer.to_owned());
        let result = block(search(&backend, config, tool, query));
        let sent = backend.sent.borrow().first().cloned().unwrap();
        (result, sent)
    }

    fn titles(sources: &[Source]) -> Vec<&str> {
        sources.iter().map(|s| s.title.as_str()).collect()
    }

    #[test]
    fn searxng_request_and_results() {
        let answer = json!({"query": "rust wasm", "results": [
            {"title": "One", "url": "https://docs.example.org/1", "content": "First\n  result.", "engine": "x"},
            {"title": "Gopher", "url": "gopher://example.org/2", "content": "no"},
            {"title": "Two", "url": "https://news.example.com/2", "content": null},
            {"title": "Dup", "url": "https://docs.example.org/1"},
            {"title": "", "url": "https://docs.example.org/3"},
            {"title": "No URL"},
            "not an object",
            {"title": "Four", "url": "http://docs.example.org/4", "content": "4"},
        ]});
        let (result, sent) = run(
            &searxng(),
            &tool(&[], Some("DE"), ContextSize::Low),
            "  rust wasm ",
            200,
            &answer.to_string(),
        );
        assert_eq!(sent.method, Method::Get);
        assert!(
            sent.url.starts_with("http://127.0.0.1:8888/search?"),
            "{}",
            sent.url
        );
        assert_eq!(
            query_pairs(&sent.url),
            [
                ("q".into(), "rust wasm".into()),
                ("format".into(), "json".into())
            ]
        );
        assert_eq!(header(&sent, "accept"), Some("application/json"));
        assert_eq!(header(&sent, "authorization"), None);
        assert!(sent.body.is_none());
        assert!(sent
            .headers
            .iter()
            .all(|(n, _)| *n == n.to_ascii_lowercase()));
        let sources = result.unwrap();
        assert_eq!(
            sources,
            [
                Source {
                    title: "One".into(),
                    url: "https://docs.example.org/1".into(),
                    snippet: "First result.".into()
                },
                Source {
                    title: "Two".into(),
                    url: "https://news.example.com/2".into(),
                    snippet: String::new()
                },
                Source {
                    title: "https://docs.example.org/3".into(),
                    url: "https://docs.example.org/3".into(),
                    snippet: String::new()
                },
            ]
        );
    }

    #[test]
    fn searxng_sites_and_domain_filter() {
        let answer = json!({"results": [
            {"title": "A", "url": "https://example.com/a", "content": ""},
            {"title": "B", "url": "https://evil.test/b", "content": ""},
            {"title": "C", "url": "https://sub.docs.rs/c", "content": ""},
            {"title": "D", "url": "https://notexample.com/d", "content": ""},
            {"title": "E", "url": "https://user@example.com/e", "content": ""},
        ]});
        let keyed = config("searxng", Some("https://search.test"), Some("proxy-key"));
        let (result, sent) = run(
            &keyed,
            &tool(&["example.com", "docs.rs"], None, ContextSize::High),
            "q",
            200,
            &answer.to_string(),
        );
        assert_eq!(
            query_pairs(&sent.url)[0].1,
            "q (site:example.com OR site:docs.rs)"
        );
        assert_eq!(header(&sent, "authorization"), Some("Bearer proxy-key"));
        assert_eq!(titles(&result.unwrap()), ["A", "C"]);
        let (_, sent) = run(
            &searxng(),
            &tool(&["docs.rs"], None, ContextSize::Low),
            "q",
            200,
            "{}",
        );
        assert_eq!(query_pairs(&sent.url)[0].1, "q site:docs.rs");
    }

    #[test]
    fn brave_request_and_results() {
        let brave = config("brave", None, Some("brave-key"));
        let answer = json!({"type": "search", "web": {"results": [
            {"title": "It&#x27;s <strong>Rust</strong>", "url": "https://www.rust-lang.org/",
             "description": "A &lt;fast&gt; &amp; safe <b>language</b> &unknown; a < b"},
            {"title": "Local", "url": "file:///etc/passwd", "description": ""},
        ]}});
        let (result, sent) = run(
            &brave,
            &tool(&[], Some("GB"), ContextSize::Medium),
            "rust",
            200,
            &answer.to_string(),
        );
        assert_eq!(sent.method, Method::Get);
        assert!(sent
            .url
            .starts_with("https://api.search.brave.com/res/v1/web/search?"));
        assert_eq!(
            query_pairs(&sent.url),
            [
                ("q".into(), "rust".into()),
                ("count".into(), "5".into()),
                ("result_filter".into(), "web".into()),
                ("text_decorations".into(), "false".into()),
                ("country".into(), "GB".into()),
            ]
        );
        assert_eq!(header(&sent, "x-subscription-token"), Some("brave-key"));
        assert_eq!(header(&sent, "accept"), Some("application/json"));
        assert_eq!(
            result.unwrap(),
            [Source {
                title: "It's Rust".into(),
                url: "https://www.rust-lang.org/".into(),
                snippet: "A <fast> & safe language &unknown; a < b".into()
            }]
        );

        // No `web`: nothing found. Unsupported countries stay home.
        let (result, sent) = run(
            &brave,
            &tool(&["rust-lang.org"], Some("VN"), ContextSize::Low),
            "a b",
            200,
            r#"{"type": "search", "query": {"original": "a b"}}"#,
        );
        assert_eq!(result.unwrap(), []);
        let pairs = query_pairs(&sent.url);
        assert_eq!(pairs[0].1, "a b site:rust-lang.org");
        assert_eq!(pairs[1], ("count".into(), "20".into()));
        assert!(!pairs.iter().any(|(k, _)| k == "country"));
    }

    #[test]
    fn brave_site_terms_stay_within_its_query_limits() {
        let many: Vec<String> = (0..100).map(|i| format!("d{i}.example.com")).collect();
        let query = with_sites("q", &many, MAX_QUERY_CHARS, BRAVE_MAX_WORDS);
        assert!(query.chars().count() <= MAX_QUERY_CHARS, "{query}");
        assert!(query.split_whitespace().count() <= BRAVE_MAX_WORDS);
        assert!(query.starts_with("q (site:d0.example.com OR site:d1.example.com OR "));
        assert!(query.ends_with(')'));
        let long = "x".repeat(399);
        assert_eq!(
            with_sites(&long, &many, MAX_QUERY_CHARS, BRAVE_MAX_WORDS),
            long
        );
        let words = vec!["w"; 50].join(" ");
        assert_eq!(
            with_sites(&words, &many, MAX_QUERY_CHARS, BRAVE_MAX_WORDS),
            words
        );
    }

    #[test]
    fn tavily_request_and_results() {
        let tavily = config("tavily", None, Some("tvly-key"));
        let answer = json!({"query": "q", "response_time": 1.2, "results": [
            {"title": "T1", "url": "https://docs.example.org/1", "content": "c1", "score": 0.9},
            {"title": "T2", "url": "https://elsewhere.test/2", "content": "c2", "score": 0.8},
        ]});
        let (result, sent) = run(
            &tavily,
            &tool(&["docs.example.org"], Some("US"), ContextSize::Low),
            "q",
            200,
            &answer.to_string(),
        );
        assert_eq!(sent.method, Method::Post);
        assert_eq!(sent.url, "https://api.tavily.com/search");
        assert_eq!(header(&sent, "authorization"), Some("Bearer tvly-key"));
        assert_eq!(header(&sent, "content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(sent.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"query": "q", "max_results": 3, "include_domains": ["docs.example.org"],
                   "topic": "general", "search_depth": "basic"})
        );
        assert_eq!(titles(&result.unwrap()), ["T1"]);
    }

    #[test]
    fn failures_are_search_errors_without_the_key() {
        let tavily = config("tavily", None, Some("tvly-secret"));
        let any = WebSearchTool::default();
        for status in [401, 403, 429, 500] {
            let (result, _) = run(&tavily, &any, "q", status, r#"{"detail": "tvly-secret"}"#);
            let error = result.unwrap_err();
            assert_eq!(error, SearchError::Http(status));
            assert!(error.to_string().contains(&status.to_string()));
            assert!(!error.to_string().contains("secret"));
        }
        assert!(SearchError::Http(429).to_string().contains("rate limit"));
        for body in [
            "not json",
            "[]",
            r#"{"results": "x"}"#,
            r#"{"answer": "a"}"#,
            "",
        ] {
            let (result, _) = run(&tavily, &any, "q", 200, body);
            assert!(matches!(result, Err(SearchError::Malformed(_))), "{body}");
        }
        let brave = config("brave", None, Some("k"));
        let (result, _) = run(&brave, &any, "q", 200, r#"{"web": {"results": {}}}"#);
        assert!(matches!(result, Err(SearchError::Malformed(_))));

        let backend = Rc::new(ReplayBackend::default());
        backend.push(Err(ApiError::backend("connection refused")));
        let error = block(search(&backend, &tavily, &any, "q")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the search provider could not be reached: connection refused"
        );
        backend.push(Ok((
            200,
            "application/json",
            vec![vec![b' '; MAX_ANSWER_BYTES], b"{}".to_vec()],
        )));
        let error = block(search(&backend, &tavily, &any, "q")).unwrap_err();
        assert_eq!(
            error,
            SearchError::Malformed("the answer is larger than 4 MiB".into())
        );

        let sent = backend.sent.borrow().len();
        assert_eq!(
            block(search(&backend, &tavily, &any, " \n ")),
            Err(SearchError::EmptyQuery)
        );
        assert_eq!(
            backend.sent.borrow().len(),
            sent,
            "no request for an empty query"
        );
    }

    #[test]
    fn long_fields_are_cut_on_character_boundaries() {
        let huge = "é".repeat(5000) + "\n" + &"x".repeat(10_000);
        let long_url = format!("https://docs.example.org/{}", "a".repeat(MAX_URL_BYTES));
        let answer = json!({"results": [
            {"title": "ü".repeat(1000), "url": "https://docs.example.org/1", "content": huge},
            {"title": "long", "url": long_url, "content": ""},
        ]});
        let (result, sent) = run(
            &searxng(),
            &WebSearchTool::default(),
            &"q".repeat(1000),
            200,
            &answer.to_string(),
        );
        assert_eq!(query_pairs(&sent.url)[0].1.len(), MAX_QUERY_CHARS);
        let sources = result.unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].snippet.chars().count(), MAX_SNIPPET_CHARS);
        assert!(sources[0].snippet.ends_with("éé…"));
        assert_eq!(sources[0].title.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(clean("exactly", 7, false), "exactly");
        assert_eq!(clean("exactly8", 7, false), "exactl…");
        assert_eq!(truncate("日本語", 2), "日本");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256, failure_persistence: None, ..Default::default()
        })]

        #[test]
        fn cleaning_keeps_to_its_limits(text in "(.|<strong>|&amp;|&#x27;|[<&;])*", max in 0usize..40) {
            let cleaned = clean(&text, max, true);
            proptest::prop_assert!(cleaned.chars().count() <= max.max(1));
            proptest::prop_assert!(!cleaned.contains("<strong>"));
            proptest::prop_assert!(truncate(&text, max).chars().count() <= max);
        }
    }
}
