//! An MCP client on the Streamable HTTP transport: JSON-RPC requests
//! POSTed to the server's one URL, answered with JSON or with an event
//! stream that carries the answer; the `Mcp-Session-Id` a server hands out
//! at `initialize` sent with every later request, and the protocol version
//! it agreed to in `MCP-Protocol-Version`.
//!
//! Everything a server can get wrong (an HTTP error, a JSON-RPC error, an
//! answer that is not JSON-RPC, no answer) is an [`McpError`] for the
//! caller to show the model; none is an [`ApiError`] of the response.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::{Backend, BodyStream, Method, Outbound};
use crate::error::ApiError;
use crate::ids::Timer;
use crate::stream::sse::{SseData, SseReader};

/// The protocol version this client asks for; servers may answer with an
/// older one they support, which is then used.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Largest answer read from a server (JSON, or the event stream up to
/// and including the answer).
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Pages of `tools/list` followed, at most.
const MAX_TOOL_PAGES: usize = 20;

/// Most tools one listing may hold: a server that lists more has its
/// listing fail, and the model goes on without its tools.
pub const MAX_LISTED_TOOLS: usize = 512;

/// Largest listing, its tools counted as JSON as the server sent them
/// (every page's `tools`); past it the listing fails likewise.
pub const MAX_LISTING_BYTES: usize = 1 << 20;

/// Longest `output` of one call as it is stored and shown to the model
/// (before the note that says what was cut; see [`cut_output`]).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Most call output one response keeps, over all its calls: a call's
/// output is cut to what is left of it, and once none is left a call is
/// not run. With [`MAX_OUTPUT_BYTES`] this bounds what the stored items
/// and every later backend request carry.
pub const MAX_RESPONSE_OUTPUT_BYTES: usize = 8 << 20;

/// How long the rest of an event stream is waited for once it has
/// answered: a server closes it right after the answer, and a body read to
/// its end leaves the connection reusable; one that stays open is let go.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Why a call to an MCP server failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpError {
    /// The server could not be reached, or the connection failed.
    Unreachable(String),
    /// An HTTP status other than success.
    Http(u16),
    /// A JSON-RPC error.
    Rpc { code: i64, message: String },
    /// An answer that is not the JSON-RPC answer asked for.
    Malformed(String),
    /// An answer, or a listing, past this client's limits (the numbers
    /// in these texts are the constants').
    TooLarge(&'static str),
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpError::Unreachable(why) => write!(f, "the MCP server could not be reached: {why}"),
            McpError::Http(status) => write!(f, "the MCP server answered HTTP {status}"),
            McpError::Rpc { code, message } => write!(f, "MCP error {code}: {message}"),
            McpError::Malformed(why) => write!(f, "the MCP server's answer is malformed: {why}"),
            McpError::TooLarge(why) => write!(f, "the MCP server's answer is too large: {why}"),
        }
    }
}

/// A tool a server offers, as `mcp_list_tools` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename(deserialize = "inputSchema"), alias = "input_schema", default)]
    pub input_schema: Value,
    #[serde(default)]
    pub annotations: Option<Value>,
}

/// What a `tools/call` returned: its text, and whether the tool reported
/// an error (`isError`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub output: String,
    pub is_error: bool,
    /// The result's `content` blocks, as the server sent them.
    pub content: Value,
}

/// One MCP server, for the length of one response.
pub struct Server<'a, B: Backend> {
    backend: &'a B,
    url: String,
    headers: Vec<(String, String)>,
    session: Option<String>,
    protocol: Option<String>,
    next_id: u64,
    /// Reads answer streams to their end (within [`DRAIN_GRACE`]).
    drain: Option<Rc<dyn Timer>>,
}

impl<'a, B: Backend> Server<'a, B> {
    /// A server at `url`, sent `headers` (lowercase names) with every
    /// request.
    pub fn new(backend: &'a B, url: impl Into<String>, headers: Vec<(String, String)>) -> Self {
        Server {
            backend,
            url: url.into(),
            headers,
            session: None,
            protocol: None,
            next_id: 1,
            drain: None,
        }
    }

    /// Reads each event stream to its end after its answer, waiting at most
    /// [`DRAIN_GRACE`] on `timer` for it, so the connection can be reused.
    pub fn with_drain(mut self, timer: Rc<dyn Timer>) -> Self {
        self.drain = Some(timer);
        self
    }

    /// The `DELETE` that ends the session, when the server gave one: sent
    /// once the response no longer needs it, so sessions do not pile up on
    /// the server (one per response that called it).
    pub fn end_session(&self) -> Option<Outbound> {
        let session = self.session.as_ref()?;
        let mut headers = self.headers.clone();
        headers.push(("mcp-session-id".into(), session.clone()));
        if let Some(protocol) = &self.protocol {
            headers.push(("mcp-protocol-version".into(), protocol.clone()));
        }
        Some(Outbound {
            method: Method::Delete,
            url: self.url.clone(),
            headers,
            body: None,
        })
    }

    /// `initialize`, then the `notifications/initialized` notification.
    pub async fn initialize(&mut self) -> Result<(), McpError> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "edge-responses", "version": env!("CARGO_PKG_VERSION")},
        });
        let result = self.request("initialize", params).await?;
        let version = result["protocolVersion"]
            .as_str()
            .unwrap_or(PROTOCOL_VERSION);
        self.protocol = Some(version.to_owned());
        self.notify("notifications/initialized").await
    }

    /// Every tool the server offers (`tools/list`, following its pages);
    /// a listing past [`MAX_LISTED_TOOLS`] or [`MAX_LISTING_BYTES`] fails.
    pub async fn list_tools(&mut self) -> Result<Vec<Tool>, McpError> {
        let mut tools = Vec::new();
        let mut bytes = 0usize;
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let result = self.request("tools/list", params).await?;
            let page: Vec<Tool> = serde_json::from_value(result["tools"].clone())
                .map_err(|e| McpError::Malformed(format!("tools/list: {e}")))?;
            if tools.len().saturating_add(page.len()) > MAX_LISTED_TOOLS {
                return Err(McpError::TooLarge(
                    "it lists more than 512 tools, the most one listing may hold",
                ));
            }
            bytes = bytes.saturating_add(result["tools"].to_string().len());
            if bytes > MAX_LISTING_BYTES {
                return Err(McpError::TooLarge(
                    "its tools take more than 1048576 bytes as JSON, the most one listing may take",
                ));
            }
            tools.extend(page);
            cursor = result["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// Calls tool `name` with `arguments` (`tools/call`).
    pub async fn call_tool(
        &mut self,
        name: &str,
        arguments: Value,
    ) -> Result<CallResult, McpError> {
        let result = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        let texts: Vec<String> = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|part| match part["type"].as_str() {
                Some("text") => part["text"].as_str().unwrap_or_default().to_owned(),
                _ => part.to_string(),
            })
            .collect();
        let output = match (texts.is_empty(), result.get("structuredContent")) {
            (true, Some(structured)) => structured.to_string(),
            _ => texts.join("\n"),
        };
        Ok(CallResult {
            output,
            is_error: result["isError"].as_bool().unwrap_or(false),
            content: result.get("content").cloned().unwrap_or(Value::Null),
        })
    }

    fn outbound(&self, body: &Value) -> Outbound {
        let mut headers = self.headers.clone();
        headers.push(("content-type".into(), "application/json".into()));
        headers.push((
            "accept".into(),
            "application/json, text/event-stream".into(),
        ));
        if let Some(session) = &self.session {
            headers.push(("mcp-session-id".into(), session.clone()));
        }
        if let Some(protocol) = &self.protocol {
            headers.push(("mcp-protocol-version".into(), protocol.clone()));
        }
        Outbound {
            method: Method::Post,
            url: self.url.clone(),
            headers,
            body: Some(body.to_string().into_bytes()),
        }
    }

    /// A notification: no answer but an accepting status.
    async fn notify(&mut self, method: &str) -> Result<(), McpError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let answer = self
            .backend
            .send(self.outbound(&body))
            .await
            .map_err(unreachable)?;
        match answer.status {
            200..=299 => Ok(()),
            status => Err(McpError::Http(status)),
        }
    }

    /// A request and the `result` of its answer.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self
            .backend
            .send(self.outbound(&body))
            .await
            .map_err(unreachable)?;
        if !(200..300).contains(&answer.status) {
            return Err(McpError::Http(answer.status));
        }
        if let Some(session) = answer.session {
            self.session = Some(session);
        }
        let events = answer
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let mut body = answer.body;
        let message = match events {
            true => {
                let message = answer_event(&mut body, id).await?;
                if let Some(timer) = &self.drain {
                    drain(&mut body, &**timer).await;
                }
                message
            }
            false => serde_json::from_slice(&read_all(&mut body).await?)
                .map_err(|e| McpError::Malformed(e.to_string()))?,
        };
        result_of(message, id)
    }
}

fn unreachable(error: ApiError) -> McpError {
    McpError::Unreachable(error.message)
}

fn too_large() -> McpError {
    McpError::TooLarge("more than 8388608 bytes")
}

/// `text` cut to at most `max` bytes (at a character boundary), followed
/// by a note saying how many bytes were cut; unchanged when it fits.
pub fn cut_output(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        "\n[output cut: {} more bytes not shown; an MCP call's output is kept to 1048576 \
         bytes, and a response's to 8388608 bytes in all]",
        total - end
    ));
    text
}

/// A JSON body, at most [`MAX_ANSWER_BYTES`].
async fn read_all(body: &mut impl BodyStream) -> Result<Vec<u8>, McpError> {
    let mut bytes = Vec::new();
    while let Some(piece) = body.next().await {
        bytes.extend(piece.map_err(McpError::Unreachable)?);
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
    }
    Ok(bytes)
}

/// The message of an event stream that answers request `id` (servers may
/// send notifications and requests of their own first); a stream that
/// goes past [`MAX_ANSWER_BYTES`] before it answers is too large.
async fn answer_event(body: &mut impl BodyStream, id: u64) -> Result<Value, McpError> {
    let mut reader = SseReader::default();
    let mut read = 0usize;
    loop {
        let Some(piece) = body.next().await else {
            let last = reader.finish();
            return match last {
                Some(SseData::Data(data)) => parse_answer(&data, id).ok_or_else(|| {
                    McpError::Malformed("the stream ended without an answer".into())
                }),
                _ => Err(McpError::Malformed(
                    "the stream ended without an answer".into(),
                )),
            };
        };
        let piece = piece.map_err(McpError::Unreachable)?;
        read = read.saturating_add(piece.len());
        if read > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        for data in reader.push(&piece) {
            if let SseData::Data(data) = data {
                if let Some(message) = parse_answer(&data, id) {
                    return Ok(message);
                }
            }
        }
    }
}

/// Reads what is left of `body` while it keeps coming within
/// [`DRAIN_GRACE`], up to [`MAX_ANSWER_BYTES`].
async fn drain(body: &mut impl BodyStream, timer: &dyn Timer) {
    let mut read = 0usize;
    while read <= MAX_ANSWER_BYTES {
        let next = std::pin::pin!(body.next());
        match select(next, timer.sleep(DRAIN_GRACE)).await {
            Either::Left((Some(Ok(piece)), _)) => read = read.saturating_add(piece.len()),
            _ => return,
        }
    }
}

/// `data` if it is the answer to request `id`.
fn parse_answer(data: &str, id: u64) -> Option<Value> {
    let message: Value = serde_json::from_str(data).ok()?;
    (message["id"] == json!(id)).then_some(message)
}

/// The `result` of the answer to request `id`, or its error.
fn result_of(message: Value, id: u64) -> Result<Value, McpError> {
    if message["id"] != json!(id) {
        return Err(McpError::Malformed(format!(
            "an answer to another request: {}",
            message["id"]
        )));
    }
    if let Some(error) = message.get("error") {
        return Err(McpError::Rpc {
            code: error["code"].as_i64().unwrap_or(0),
            message: error["message"]
                .as_str()
                .unwrap_or("(no message)")
                .to_owned(),
        });
    }
    message
        .get("result")
        .cloned()
        .ok_or_else(|| McpError::Malformed("an answer without a result".into()))
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::backend::replay::ReplayBackend;

    fn answer(backend: &ReplayBackend, message: Value) {
        backend.push_body(200, "application/json", message.to_string());
    }

    fn block<F: std::future::Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    fn sent(backend: &ReplayBackend) -> Vec<(Value, Vec<(String, String)>)> {
        backend
            .sent
            .borrow()
            .iter()
            .map(|r| {
                let body = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap();
                (body, r.headers.clone())
            })
            .collect()
    }

    fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn initialize_list_and_call_over_json() {
        let backend = Rc::new(ReplayBackend::default());
        *backend.session.borrow_mut() = Some("session-1".into());
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-03-26", "capabilities": {}}}),
        );
        backend.push_body(202, "application/json", "");
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [
            {"name": "add", "description": "Adds", "inputSchema": {"type": "object"}}
        ], "nextCursor": "p2"}}),
        );
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
                {"name": "fail", "inputSchema": {"type": "object"}}
            ]}}),
        );
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 4, "result": {
            "content": [{"type": "text", "text": "5"}], "isError": false}}),
        );
        let mut server = Server::new(
            &backend,
            "http://127.0.0.1:9/mcp",
            vec![("authorization".into(), "Bearer t".into())],
        );
        block(server.initialize()).unwrap();
        let tools = block(server.list_tools()).unwrap();
        assert_eq!(
            tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["add", "fail"]
        );
        assert_eq!(tools[0].input_schema, json!({"type": "object"}));
        let result = block(server.call_tool("add", json!({"a": 2, "b": 3}))).unwrap();
        assert_eq!((result.output.as_str(), result.is_error), ("5", false));
        assert_eq!(result.content, json!([{"type": "text", "text": "5"}]));

        let sent = sent(&backend);
        assert_eq!(sent[0].0["method"], "initialize");
        assert_eq!(
            sent[1].0,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        );
        assert_eq!(sent[3].0["params"], json!({"cursor": "p2"}));
        assert_eq!(
            sent[4].0["params"],
            json!({"name": "add", "arguments": {"a": 2, "b": 3}})
        );
        assert_eq!(header(&sent[0].1, "mcp-session-id"), None);
        for (_, headers) in &sent[1..] {
            assert_eq!(header(headers, "mcp-session-id"), Some("session-1"));
            assert_eq!(header(headers, "mcp-protocol-version"), Some("2025-03-26"));
            assert_eq!(header(headers, "authorization"), Some("Bearer t"));
        }
        assert_eq!(
            header(&sent[0].1, "accept"),
            Some("application/json, text/event-stream")
        );
    }

    #[test]
    fn an_event_stream_answer_is_found_among_other_messages() {
        let backend = Rc::new(ReplayBackend::default());
        let stream = [
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [
                {"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}
            ], "isError": true}}),
        ]
        .iter()
        .map(|m| format!("event: message\ndata: {m}\n\n"))
        .collect::<String>();
        backend.push_body(200, "text/event-stream", stream);
        let mut server = Server::new(&backend, "http://127.0.0.1:9/mcp", Vec::new());
        let result = block(server.call_tool("x", json!({}))).unwrap();
        assert_eq!(result.output, "line one\nline two");
        assert!(result.is_error);
    }

    #[test]
    fn answers_past_the_limit_are_too_large() {
        let backend = Rc::new(ReplayBackend::default());
        let mut server = Server::new(&backend, "http://127.0.0.1:9/mcp", Vec::new());
        let text = "x".repeat(MAX_ANSWER_BYTES);
        let message = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [{"type": "text", "text": text}]}});
        backend.push_body(200, "text/event-stream", format!("data: {message}\n\n"));
        backend.push_body(200, "application/json", message.to_string());
        for _ in 0..2 {
            let error = block(server.call_tool("x", json!({}))).unwrap_err();
            assert!(matches!(error, McpError::TooLarge(_)), "{error:?}");
            assert!(error.to_string().contains("too large"), "{error}");
        }
    }

    #[test]
    fn listings_past_the_limits_fail() {
        let backend = Rc::new(ReplayBackend::default());
        let mut server = Server::new(&backend, "http://127.0.0.1:9/mcp", Vec::new());
        let tools = |n: usize, description: &str| -> Value {
            (0..n)
                .map(|i| json!({"name": format!("t{i}"), "description": description}))
                .collect()
        };
        // Across pages, one tool too many.
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools(500, ""), "nextCursor": "2"}}),
        );
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools(13, "")}}),
        );
        let error = block(server.list_tools()).unwrap_err();
        let more = format!("more than {MAX_LISTED_TOOLS} tools");
        assert!(error.to_string().contains(&more), "{error}");
        // Few tools, but too many bytes of them.
        let long = "d".repeat(MAX_LISTING_BYTES / 4);
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": tools(4, &long)}}),
        );
        let error = block(server.list_tools()).unwrap_err();
        let more = format!("more than {MAX_LISTING_BYTES} bytes");
        assert!(error.to_string().contains(&more), "{error}");
        // At the limits, the listing stands.
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 4, "result": {"tools": tools(MAX_LISTED_TOOLS, "")}}),
        );
        assert_eq!(block(server.list_tools()).unwrap().len(), MAX_LISTED_TOOLS);
    }

    #[test]
    fn output_is_cut_at_a_character_boundary_with_a_note() {
        assert_eq!(cut_output("short".into(), 5), "short");
        let cut = cut_output("aé".repeat(10), 4);
        assert!(cut.starts_with("aéa\n[output cut: 26 more bytes"), "{cut}");
        let cut = cut_output("é".into(), 0);
        assert!(cut.starts_with("\n[output cut: 2 more bytes"), "{cut}");
        // The texts name the limits as they are.
        let limits = [
            (MAX_OUTPUT_BYTES, cut.clone()),
            (MAX_RESPONSE_OUTPUT_BYTES, cut),
            (MAX_ANSWER_BYTES, too_large().to_string()),
        ];
        for (limit, text) in limits {
            assert!(text.contains(&format!(" {limit} bytes")), "{limit}: {text}");
        }
    }

    #[test]
    fn failures_are_mcp_errors() {
        let backend = Rc::new(ReplayBackend::default());
        let mut server = Server::new(&backend, "http://127.0.0.1:9/mcp", Vec::new());
        answer(
            &backend,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "Unknown tool: nope"}}),
        );
        assert_eq!(
            block(server.call_tool("nope", json!({}))).unwrap_err(),
            McpError::Rpc {
                code: -32602,
                message: "Unknown tool: nope".into()
            }
        );
        backend.push_body(404, "text/plain", "no");
        assert_eq!(block(server.list_tools()).unwrap_err(), McpError::Http(404));
        backend.push_body(200, "application/json", "not json");
        assert!(matches!(
            block(server.list_tools()).unwrap_err(),
            McpError::Malformed(_)
        ));
        answer(&backend, json!({"jsonrpc": "2.0", "id": 99, "result": {}}));
        assert!(matches!(
            block(server.list_tools()).unwrap_err(),
            McpError::Malformed(_)
        ));
        backend.push_body(
            200,
            "text/event-stream",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n",
        );
        assert!(matches!(
            block(server.list_tools()).unwrap_err(),
            McpError::Malformed(_)
        ));
        backend.push(Err(ApiError::backend("refused")));
        assert!(matches!(
            block(server.initialize()).unwrap_err(),
            McpError::Unreachable(_)
        ));
        let error = McpError::Rpc {
            code: -1,
            message: "m".into(),
        };
        assert_eq!(error.to_string(), "MCP error -1: m");
    }
}
