//! The `mcp` tool of a request: which server, with which headers, which of
//! its tools the model may use, and which need the client's approval.
//!
//! Parsed as the official `openai` package shapes it (`server_label`,
//! `server_url`, `headers`, `authorization`, `allowed_tools`,
//! `require_approval`, `server_description`), and checked against the
//! operator's [`AllowList`] before anything is sent anywhere.
//!
//! `headers` may not set what the transport sets itself (`content-type`,
//! `accept`, the MCP protocol's own headers, the framing and hop-by-hop
//! headers): such a name, or a name or value HTTP does not allow, is a 400
//! on `tools[i].headers`.

use serde_json::Value;

use super::allow::AllowList;
use super::client::Tool;
use crate::error::ApiError;

/// Longest `server_label`: it prefixes the names the backend sees, and
/// chat-completions function names stop at 64 characters.
const MAX_LABEL: usize = 32;

/// Largest number of MCP servers one request may name.
pub const MAX_SERVERS: usize = 16;

/// Headers the client may not set: the transport's own, and those that
/// belong to one connection (hop-by-hop) rather than to the request.
const RESERVED_HEADERS: [&str; 15] = [
    "host",
    "content-type",
    "content-length",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// One `mcp` tool of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    pub label: String,
    pub url: String,
    /// Header names in lowercase; `authorization` from its own field.
    pub headers: Vec<(String, String)>,
    pub description: Option<String>,
    allowed: Option<ToolFilter>,
    approval: Approval,
}

/// Tools picked by name and by their `readOnlyHint` annotation.
#[derive(Debug, Clone, Default, PartialEq)]
struct ToolFilter {
    names: Option<Vec<String>>,
    read_only: Option<bool>,
}

/// `require_approval`.
#[derive(Debug, Clone, PartialEq)]
enum Approval {
    Always,
    Never,
    /// Tools matching `always` need it, those matching `never` do not, the
    /// rest do.
    Filter {
        always: Option<ToolFilter>,
        never: Option<ToolFilter>,
    },
}

impl McpTool {
    /// The tool at `param` (`tools[i]`), if `allowed` lets its server be
    /// called.
    pub fn parse(tool: &Value, param: &str, allowed: &AllowList) -> Result<McpTool, ApiError> {
        let label = tool
            .get("server_label")
            .and_then(Value::as_str)
            .filter(|l| valid_label(l))
            .ok_or_else(|| {
                ApiError::invalid_param(
                    &format!("{param}.server_label"),
                    format!(
                        "An mcp tool needs a 'server_label' of 1 to {MAX_LABEL} letters, digits, '_' or '-'."
                    ),
                )
            })?;
        let text = |key: &str| tool.get(key).and_then(Value::as_str);
        let url = match (text("server_url"), text("connector_id"), text("tunnel_id")) {
            (Some(url), _, _) => url.to_owned(),
            (_, Some(_), _) => return Err(ApiError::invalid_param(
                &format!("{param}.connector_id"),
                "Connectors are not available on this server; give the MCP server's 'server_url'.",
            )),
            (_, _, Some(_)) => return Err(ApiError::invalid_param(
                &format!("{param}.tunnel_id"),
                "MCP tunnels are not available on this server; give the MCP server's 'server_url'.",
            )),
            _ => {
                return Err(ApiError::invalid_param(
                    &format!("{param}.server_url"),
                    "An mcp tool needs a 'server_url'.",
                ))
            }
        };
        if !allowed.allows(&url) {
            return Err(ApiError::invalid_param(
                &format!("{param}.server_url"),
                format!(
                    "The MCP server '{label}' is not in this server's allow-list \
                     (the mcp_allowed_servers setting, mcp_servers under Spin); \
                     ask its operator to add its origin."
                ),
            ));
        }
        Ok(McpTool {
            label: label.to_owned(),
            url,
            headers: headers(tool, param)?,
            description: tool
                .get("server_description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            allowed: match tool.get("allowed_tools") {
                None | Some(Value::Null) => None,
                Some(v) => Some(ToolFilter::parse(v, &format!("{param}.allowed_tools"))?),
            },
            approval: Approval::parse(
                tool.get("require_approval"),
                &format!("{param}.require_approval"),
            )?,
        })
    }

    /// Whether the model may be offered `tool`.
    pub fn offers(&self, tool: &Tool) -> bool {
        self.allowed.as_ref().is_none_or(|f| f.matches(tool))
    }

    /// Whether a call of `tool` waits for the client's approval.
    pub fn needs_approval(&self, tool: &Tool) -> bool {
        match &self.approval {
            Approval::Always => true,
            Approval::Never => false,
            Approval::Filter { always, never } => {
                if always.as_ref().is_some_and(|f| f.matches(tool)) {
                    return true;
                }
                !never.as_ref().is_some_and(|f| f.matches(tool))
            }
        }
    }
}

fn valid_label(label: &str) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `headers` (string values only) and `authorization` as a bearer token.
fn headers(tool: &Value, param: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    match tool.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let value = header(name, value)
                    .map_err(|why| ApiError::invalid_param(&format!("{param}.headers"), why))?;
                out.push((name.to_ascii_lowercase(), value.to_owned()));
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                &format!("{param}.headers"),
                "'headers' must be an object of strings.",
            ))
        }
    }
    let token = match tool.get("authorization") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if value_safe(token) => Some(token),
        Some(_) => {
            return Err(ApiError::invalid_param(
                &format!("{param}.authorization"),
                "'authorization' must be a string, the token sent as 'Authorization: Bearer \
                 ...', without control characters such as line breaks.",
            ))
        }
    };
    if let Some(token) = token {
        out.retain(|(name, _)| name != "authorization");
        out.push(("authorization".into(), format!("Bearer {token}")));
    }
    Ok(out)
}

/// The value of client header `name`, when HTTP allows the pair and the
/// transport leaves the name to the client; else why not (never quoting
/// the value, which may be a secret).
fn header<'v>(name: &str, value: &'v Value) -> Result<&'v str, String> {
    let why = match value.as_str() {
        None => "must be a string",
        Some(_) if !name_safe(name) => "is not a header name HTTP allows",
        Some(_) if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => {
            "is set by the MCP transport itself and cannot be given"
        }
        Some(value) if !value_safe(value) => {
            "has control characters (such as line breaks) in its value"
        }
        Some(value) => return Ok(value),
    };
    Err(format!("Header '{name}' {why}."))
}

/// An HTTP field name: one or more token characters (RFC 9110).
fn name_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP field value: no control characters but tabs.
fn value_safe(value: &str) -> bool {
    !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

impl ToolFilter {
    /// A list of names, or `{"tool_names": [...], "read_only": bool}`.
    fn parse(value: &Value, param: &str) -> Result<ToolFilter, ApiError> {
        let names = |v: &Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect()
        };
        let wrong = || {
            ApiError::invalid_param(
                param,
                "Expected a list of tool names or an object with 'tool_names' and 'read_only'.",
            )
        };
        match value {
            Value::Array(_) => Ok(ToolFilter {
                names: Some(names(value).ok_or_else(wrong)?),
                read_only: None,
            }),
            Value::Object(map) => Ok(ToolFilter {
                names: match map.get("tool_names") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(names(v).ok_or_else(wrong)?),
                },
                read_only: match map.get("read_only") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => return Err(wrong()),
                },
            }),
            _ => Err(wrong()),
        }
    }

    fn matches(&self, tool: &Tool) -> bool {
        let named = self.names.as_ref().is_none_or(|n| n.contains(&tool.name));
        let read_only = tool
            .annotations
            .as_ref()
            .and_then(|a| a.get("readOnlyHint"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        named && self.read_only.is_none_or(|want| want == read_only)
    }
}

impl Approval {
    /// Absent means `always`, as at OpenAI.
    fn parse(value: Option<&Value>, param: &str) -> Result<Approval, ApiError> {
        let filter = |v: Option<&Value>| match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => ToolFilter::parse(v, param).map(Some),
        };
        match value {
            None | Some(Value::Null) => Ok(Approval::Always),
            Some(Value::String(s)) if s == "always" => Ok(Approval::Always),
            Some(Value::String(s)) if s == "never" => Ok(Approval::Never),
            Some(Value::Object(map)) => Ok(Approval::Filter {
                always: filter(map.get("always"))?,
                never: filter(map.get("never"))?,
            }),
            Some(_) => Err(ApiError::invalid_param(
                param,
                "'require_approval' must be 'always', 'never' or an object with 'always' and 'never' filters.",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allow() -> AllowList {
        AllowList::parse("http://127.0.0.1:*, https://mcp.example.com").unwrap()
    }

    fn tool(name: &str, read_only: bool) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            input_schema: json!({"type": "object"}),
            annotations: Some(json!({"readOnlyHint": read_only})),
        }
    }

    #[test]
    fn parses_the_openai_shape() {
        let t = McpTool::parse(
            &json!({"type": "mcp", "server_label": "calc", "server_url": "http://127.0.0.1:9/mcp",
                    "headers": {"X-Team": "a"}, "authorization": "tok",
                    "allowed_tools": ["add", "fail"], "require_approval": "never",
                    "server_description": "numbers"}),
            "tools[0]",
            &allow(),
        )
        .unwrap();
        assert_eq!(t.label, "calc");
        assert_eq!(
            t.headers,
            [
                ("x-team".to_owned(), "a".to_owned()),
                ("authorization".to_owned(), "Bearer tok".to_owned())
            ]
        );
        assert!(t.offers(&tool("add", false)));
        assert!(!t.offers(&tool("mul", false)));
        assert!(!t.needs_approval(&tool("add", false)));
        assert_eq!(t.description.as_deref(), Some("numbers"));
    }

    #[test]
    fn the_transport_headers_are_not_the_clients() {
        let with = |name: &str| {
            McpTool::parse(
                &json!({"server_label": "s", "server_url": "https://mcp.example.com",
                        "headers": {name: "v"}}),
                "tools[1]",
                &allow(),
            )
        };
        for name in [
            "Host",
            "content-type",
            "Content-Length",
            "ACCEPT",
            "Mcp-Session-Id",
            "mcp-protocol-version",
            "Transfer-Encoding",
            "connection",
            "keep-alive",
            "TE",
            "upgrade",
        ] {
            let err = with(name).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("tools[1].headers"), "{name}");
            assert!(err.message.contains("transport"), "{}", err.message);
        }
        for name in ["X-Api-Key", "x_team", "Authorization", "If-Match"] {
            assert!(with(name).is_ok(), "{name}");
        }
        // A refused value is never quoted.
        let err = McpTool::parse(
            &json!({"server_label": "s", "server_url": "https://mcp.example.com",
                    "headers": {"x-key": "secret\r\nx: y"}}),
            "tools[0]",
            &allow(),
        )
        .unwrap_err();
        assert!(!err.message.contains("secret"), "{}", err.message);
    }

    #[test]
    fn approval_filters_and_default() {
        let parse = |approval: Value| {
            McpTool::parse(
                &json!({"server_label": "s", "server_url": "https://mcp.example.com/x",
                        "require_approval": approval}),
                "tools[0]",
                &allow(),
            )
            .unwrap()
        };
        assert!(parse(Value::Null).needs_approval(&tool("a", true)));
        let filtered = parse(json!({"never": {"read_only": true}}));
        assert!(!filtered.needs_approval(&tool("look", true)));
        assert!(filtered.needs_approval(&tool("write", false)));
        let named =
            parse(json!({"always": {"tool_names": ["rm"]}, "never": {"tool_names": ["rm", "ls"]}}));
        assert!(named.needs_approval(&tool("rm", false)));
        assert!(!named.needs_approval(&tool("ls", false)));
        let read_only = McpTool::parse(
            &json!({"server_label": "s", "server_url": "https://mcp.example.com",
                    "allowed_tools": {"read_only": true}}),
            "tools[0]",
            &allow(),
        )
        .unwrap();
        assert!(read_only.offers(&tool("look", true)));
        assert!(!read_only.offers(&tool("write", false)));
    }

    #[test]
    fn refusals_name_their_param() {
        let cases = [
            (
                json!({"server_url": "http://127.0.0.1:1"}),
                "tools[3].server_label",
            ),
            (
                json!({"server_label": "a b", "server_url": "http://127.0.0.1:1"}),
                "tools[3].server_label",
            ),
            (json!({"server_label": "a"}), "tools[3].server_url"),
            (
                json!({"server_label": "a", "connector_id": "connector_gmail"}),
                "tools[3].connector_id",
            ),
            (
                json!({"server_label": "a", "server_url": "http://169.254.169.254/"}),
                "tools[3].server_url",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "headers": {"x": 1}}),
                "tools[3].headers",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "headers": {"x": "a\r\nb: c"}}),
                "tools[3].headers",
            ),
            (
                json!({"server_label": "a", "tunnel_id": "tunnel_1"}),
                "tools[3].tunnel_id",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "headers": {"x y": "1"}}),
                "tools[3].headers",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "headers": {"x": "a\u{7f}"}}),
                "tools[3].headers",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "authorization": "t\nX: y"}),
                "tools[3].authorization",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "authorization": 5}),
                "tools[3].authorization",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "authorization": {"token": "t"}}),
                "tools[3].authorization",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "allowed_tools": "add"}),
                "tools[3].allowed_tools",
            ),
            (
                json!({"server_label": "a", "server_url": "http://127.0.0.1:1", "require_approval": "sometimes"}),
                "tools[3].require_approval",
            ),
        ];
        for (tool, param) in cases {
            let err = McpTool::parse(&tool, "tools[3]", &allow()).unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some(param)),
                "{tool}"
            );
        }
        let err = McpTool::parse(
            &json!({"server_label": "a", "server_url": "http://10.0.0.1/"}),
            "tools[0]",
            &allow(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("mcp_allowed_servers"),
            "{}",
            err.message
        );
        assert!(err.message.contains("mcp_servers under Spin"));
        // Nothing is allowed until an operator says so.
        assert!(McpTool::parse(
            &json!({"server_label": "a", "server_url": "http://127.0.0.1:1"}),
            "tools[0]",
            &AllowList::default()
        )
        .is_err());
    }
}
