//! Which MCP servers a request may name: only those an operator allowed,
//! so that no client can make the service call an address of its choosing
//! (an internal network, a cloud metadata service, the store's host).
//!
//! An allow-list is origins, `scheme://host[:port]`, where `*` stands for
//! any run of characters (`https://*.example.com`, `http://127.0.0.1:*`).
//! A server URL is allowed when its origin matches one of them. URLs that
//! could read as another host than they seem (credentials before the host,
//! a backslash, spaces or control characters) never are.

use crate::backend::routes::glob;

/// The origins MCP servers may have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<String>);

impl AllowList {
    /// Entries separated by commas or spaces; an entry that is not an
    /// origin pattern is refused, with the reason.
    pub fn parse(value: &str) -> Result<AllowList, String> {
        let mut origins = Vec::new();
        for entry in value.split([',', ' ', '\n']).filter(|e| !e.is_empty()) {
            let entry = entry.trim_end_matches('/');
            match origin(entry) {
                Some(origin) if origin == entry.to_ascii_lowercase() => origins.push(origin),
                _ => {
                    return Err(format!(
                        "'{entry}' is not an origin like https://mcp.example.com"
                    ))
                }
            }
        }
        Ok(AllowList(origins))
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the server at `url` may be called.
    pub fn allows(&self, url: &str) -> bool {
        let Some(origin) = origin(url) else {
            return false;
        };
        self.0.iter().any(|pattern| glob(pattern, &origin))
    }
}

/// The lowercase `scheme://host[:port]` of an http(s) URL; `None` for
/// anything else or anything ambiguous.
fn origin(url: &str) -> Option<String> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_patterns_allow_their_servers_only() {
        let list = AllowList::parse(
            "https://mcp.example.com, https://*.tools.example.com http://127.0.0.1:*",
        )
        .unwrap();
        for url in [
            "https://mcp.example.com/mcp",
            "https://MCP.example.com",
            "https://a.tools.example.com/v1/mcp?x=1",
            "http://127.0.0.1:8931/mcp",
        ] {
            assert!(list.allows(url), "{url}");
        }
        for url in [
            "http://mcp.example.com/mcp",
            "https://mcp.example.com.evil.test/mcp",
            "https://mcp.example.com@169.254.169.254/",
            "https://evil.test/https://mcp.example.com",
            "https://tools.example.com/",
            "http://127.0.0.2:80/",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "https://mcp.example.com\\@evil.test/",
            "mcp.example.com",
            "",
        ] {
            assert!(!list.allows(url), "{url}");
        }
        assert!(!AllowList::default().allows("https://mcp.example.com"));
        assert!(AllowList::default().is_empty());
    }

    #[test]
    fn entries_must_be_origins() {
        assert_eq!(
            AllowList::parse("https://mcp.example.com/").unwrap(),
            AllowList(vec!["https://mcp.example.com".into()])
        );
        for bad in [
            "mcp.example.com",
            "https://mcp.example.com/path",
            "ftp://x",
            "https://u@x",
        ] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
    }
}
