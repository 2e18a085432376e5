//! Items of the tools the server runs itself: for remote MCP servers
//! `mcp_list_tools`, `mcp_call`, `mcp_approval_request` in the output and
//! `mcp_approval_response` in the input; for web search `web_search_call`.
//!
//! They travel as [`Item::Other`], stored and listed exactly as made or
//! sent; [`HostedItem::read`] is the typed view of one. Accepted leniently,
//! produced with the fields of the official `openai` package's models.

use serde_json::{json, Map, Value};

use super::items::Item;

/// The item types, as on the wire.
pub const LIST_TOOLS: &str = "mcp_list_tools";
pub const CALL: &str = "mcp_call";
pub const APPROVAL_REQUEST: &str = "mcp_approval_request";
pub const APPROVAL_RESPONSE: &str = "mcp_approval_response";
pub const WEB_SEARCH_CALL: &str = "web_search_call";

/// The function name web search is offered to the model under.
pub const WEB_SEARCH_FUNCTION: &str = "web_search";

/// A typed view of an item of a server-side tool.
#[derive(Debug, Clone, PartialEq)]
pub enum HostedItem<'a> {
    /// A server's tools, as listed once per conversation.
    ListTools {
        server_label: &'a str,
        tools: &'a [Value],
        failed: bool,
    },
    /// A call the server made: `call_id` is the approval request it ran
    /// for, or its own id.
    Call {
        call_id: &'a str,
        server_label: &'a str,
        name: &'a str,
        arguments: &'a str,
        /// The text the model saw: the output, or the error.
        result: String,
    },
    ApprovalRequest {
        id: &'a str,
        server_label: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    ApprovalResponse {
        request_id: &'a str,
        approve: bool,
        reason: Option<&'a str>,
    },
    /// A search the server ran, and the sources it found when they were
    /// asked for (`include: ["web_search_call.action.sources"]`).
    WebSearch {
        id: &'a str,
        query: &'a str,
        sources: Vec<&'a str>,
    },
}

impl<'a> HostedItem<'a> {
    /// The view of `item`, when it is a well-formed item of a server-side
    /// tool.
    pub fn read(item: &'a Item) -> Option<HostedItem<'a>> {
        let Item::Other(Value::Object(fields)) = item else {
            return None;
        };
        let text = |key: &str| fields.get(key).and_then(Value::as_str);
        match text("type")? {
            LIST_TOOLS => Some(HostedItem::ListTools {
                server_label: text("server_label")?,
                tools: fields
                    .get("tools")
                    .and_then(Value::as_array)
                    .map_or(&[], Vec::as_slice),
                failed: fields.get("error").is_some_and(|e| !e.is_null()),
            }),
            CALL => Some(HostedItem::Call {
                call_id: text("approval_request_id").or_else(|| text("id"))?,
                server_label: text("server_label")?,
                name: text("name")?,
                arguments: text("arguments").unwrap_or("{}"),
                result: match (text("output"), fields.get("error")) {
                    (Some(output), _) => output.to_owned(),
                    (None, Some(error)) if !error.is_null() => error_text(error),
                    _ => String::new(),
                },
            }),
            APPROVAL_REQUEST => Some(HostedItem::ApprovalRequest {
                id: text("id")?,
                server_label: text("server_label")?,
                name: text("name")?,
                arguments: text("arguments").unwrap_or("{}"),
            }),
            APPROVAL_RESPONSE => Some(HostedItem::ApprovalResponse {
                request_id: text("approval_request_id")?,
                approve: fields.get("approve").and_then(Value::as_bool)?,
                reason: text("reason"),
            }),
            WEB_SEARCH_CALL => {
                let action = fields.get("action");
                let field = |key: &str| action.and_then(|a| a.get(key));
                Some(HostedItem::WebSearch {
                    id: text("id")?,
                    query: field("query").and_then(Value::as_str).unwrap_or_default(),
                    sources: field("sources")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.get("url").and_then(Value::as_str))
                        .collect(),
                })
            }
            _ => None,
        }
    }
}

/// What the model is shown for a call's `error`.
fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => format!("Error: {text}"),
        other => match other.get("message").and_then(Value::as_str) {
            Some(message) => format!("Error: {message}"),
            None => format!("Error: {}", other.get("content").unwrap_or(other)),
        },
    }
}

/// An `mcp_list_tools` item; `error` when the listing failed.
pub fn list_tools(id: &str, server_label: &str, tools: Vec<Value>, error: Option<String>) -> Item {
    object(json!({
        "type": LIST_TOOLS,
        "id": id,
        "server_label": server_label,
        "tools": tools,
        "error": error,
    }))
}

/// An `mcp_call` item: `in_progress` without output or error, `completed`
/// with output, `failed` with an error (an `McpToolCallError` object).
pub fn call(
    id: &str,
    server_label: &str,
    name: &str,
    arguments: &str,
    approval_request_id: Option<&str>,
    result: Option<Result<String, Value>>,
) -> Item {
    let (output, error, status) = match result {
        None => (None, Value::Null, "in_progress"),
        Some(Ok(output)) => (Some(output), Value::Null, "completed"),
        Some(Err(error)) => (None, error, "failed"),
    };
    object(json!({
        "type": CALL,
        "id": id,
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
        "approval_request_id": approval_request_id,
        "output": output,
        "error": error,
        "status": status,
    }))
}

/// An `mcp_approval_request` item.
pub fn approval_request(id: &str, server_label: &str, name: &str, arguments: &str) -> Item {
    object(json!({
        "type": APPROVAL_REQUEST,
        "id": id,
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
    }))
}

/// A `web_search_call` item: `in_progress` while it runs, then
/// `completed` or `failed`; its action's `sources` only when asked for.
pub fn web_search_call(id: &str, status: &str, query: &str, sources: Option<&[String]>) -> Item {
    let mut action = json!({"type": "search", "query": query});
    if let Some(sources) = sources {
        let sources: Vec<Value> = sources
            .iter()
            .map(|url| json!({"type": "url", "url": url}))
            .collect();
        action["sources"] = Value::Array(sources);
    }
    object(json!({"type": WEB_SEARCH_CALL, "id": id, "status": status, "action": action}))
}

fn object(value: Value) -> Item {
    match value {
        Value::Object(fields) => Item::Other(Value::Object(fields)),
        _ => Item::Other(Value::Object(Map::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_made() {
        let listed = list_tools("mcpl_1", "calc", vec![json!({"name": "add"})], None);
        assert!(matches!(
            HostedItem::read(&listed),
            Some(HostedItem::ListTools { server_label: "calc", failed: false, tools }) if tools.len() == 1
        ));
        let done = call(
            "mcp_1",
            "calc",
            "add",
            "{\"a\":1}",
            Some("mcpr_1"),
            Some(Ok("3".into())),
        );
        assert_eq!(
            HostedItem::read(&done),
            Some(HostedItem::Call {
                call_id: "mcpr_1",
                server_label: "calc",
                name: "add",
                arguments: "{\"a\":1}",
                result: "3".into()
            })
        );
        let failed = call(
            "mcp_2",
            "calc",
            "fail",
            "{}",
            None,
            Some(Err(
                json!({"type": "mcp_protocol_error", "code": -32602, "message": "bad"}),
            )),
        );
        assert!(matches!(
            HostedItem::read(&failed),
            Some(HostedItem::Call { call_id: "mcp_2", result, .. }) if result == "Error: bad"
        ));
        let answer: Item = serde_json::from_value(json!({
            "type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": false
        }))
        .unwrap();
        assert_eq!(
            HostedItem::read(&answer),
            Some(HostedItem::ApprovalResponse {
                request_id: "mcpr_1",
                approve: false,
                reason: None
            })
        );
        assert_eq!(HostedItem::read(&Item::user_text("hi")), None);
    }
}
