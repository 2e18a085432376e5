//! The tools a response runs on the server: the remote MCP servers its
//! request names.
//!
//! Before the model is called, [`Hosted::prepare`] lists each server's
//! tools (or reuses the listing an earlier turn of the conversation made),
//! offers them to the model, and runs or declines the calls the client
//! answered approval requests for. During the model loop, [`Hosted::call`]
//! runs a call the model made. A server's failures (unreachable, HTTP
//! errors, JSON-RPC errors, tool errors, timeouts) become the item's
//! `error`, which the model sees; they never fail the response.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use serde_json::{json, Value};

use super::emit::{Emitter, EventSink};
use crate::api::hosted::{self, McpItem};
use crate::api::items::Item;
use crate::backend::Backend;
use crate::chat::{ChatMessage, McpOffer, Rendered};
use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::Timer;
use crate::mcp::client::{McpError, Server, Tool};
use crate::mcp::tool::{McpTool, MAX_SERVERS};
use crate::stream::{EventStream, ServerCall};

/// The server-side tools of one response.
pub struct Hosted<'a, B: Backend> {
    servers: Vec<McpServer<'a, B>>,
    /// The MCP items of the conversation so far, input included.
    history: Vec<Item>,
    timer: Rc<dyn Timer>,
    timeout: Duration,
}

/// One MCP server, with its session for the length of the response.
struct McpServer<'a, B: Backend> {
    tool: McpTool,
    client: Server<'a, B>,
    initialized: bool,
    tools: Vec<Tool>,
}

/// What preparing added to the first chat request.
#[derive(Default)]
pub struct Prepared {
    /// Tool definitions for the backend.
    pub tools: Vec<Value>,
    /// Approved and declined calls, with their results, after the input.
    pub messages: Vec<ChatMessage>,
}

impl<'a, B: Backend> Hosted<'a, B> {
    /// The `mcp` tools of `tools`, each checked against the allow-list; the
    /// approval answers of `input` checked against the requests they answer
    /// (in `input` or `history`). Nothing is sent yet.
    pub fn new(
        tools: &[Value],
        input: &[Item],
        history: Vec<Item>,
        settings: &Settings,
        backend: &'a B,
        timer: Rc<dyn Timer>,
    ) -> Result<Self, ApiError> {
        let mut servers: Vec<McpServer<'a, B>> = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            if tool.get("type").and_then(Value::as_str) != Some("mcp") {
                continue;
            }
            let param = format!("tools[{i}]");
            let tool = McpTool::parse(tool, &param, &settings.mcp_allowed_servers)?;
            if servers.iter().any(|s| s.tool.label == tool.label) {
                return Err(ApiError::invalid_param(
                    &format!("{param}.server_label"),
                    format!("Two mcp tools are labelled '{}'.", tool.label),
                ));
            }
            if servers.len() == MAX_SERVERS {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("At most {MAX_SERVERS} mcp tools are allowed."),
                ));
            }
            let client = Server::new(backend, tool.url.clone(), tool.headers.clone());
            servers.push(McpServer {
                tool,
                client,
                initialized: false,
                tools: Vec::new(),
            });
        }
        let mut all = history;
        all.extend(input.iter().filter(|i| McpItem::read(i).is_some()).cloned());
        let hosted = Hosted {
            servers,
            history: all,
            timer,
            timeout: Duration::from_secs(settings.mcp_timeout_seconds),
        };
        hosted.check_answers(input)?;
        Ok(hosted)
    }

    /// Whether the request names no server and answers no approval.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.answers().next().is_none()
    }

    /// Lists or reuses each server's tools and offers them to the model,
    /// then runs the approved calls; `None` once the client has gone away.
    pub async fn prepare<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<Prepared> {
        let mut prepared = Prepared::default();
        for i in 0..self.servers.len() {
            let label = self.servers[i].tool.label.clone();
            let tools = match self.earlier_listing(&label) {
                Some(tools) => tools,
                None => {
                    let (slot, events) = stream.listing_started(&label);
                    if !out.events(events).await {
                        return None;
                    }
                    let listed = out.wait(self.list(i)).await?;
                    let item_tools = listed.as_ref().map(|tools| listed_values(tools));
                    let events = stream.listing_done(slot, item_tools.map_err(|e| e.to_string()));
                    if !out.events(events).await {
                        return None;
                    }
                    listed.unwrap_or_default()
                }
            };
            let server = &mut self.servers[i];
            server.tools = tools;
            let offers: Vec<McpOffer<'_>> = server
                .tools
                .iter()
                .filter(|tool| server.tool.offers(tool))
                .map(|tool| McpOffer {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    schema: &tool.input_schema,
                    approval: server.tool.needs_approval(tool),
                })
                .collect();
            prepared.tools.extend(stream.add_mcp_tools(&label, &offers));
        }
        let results = self.run_answers(stream, out).await?;
        prepared.messages = Rendered::new(&results, false).messages;
        Some(prepared)
    }

    /// Runs a call the model made.
    pub async fn call(&mut self, call: &ServerCall) -> Result<String, Value> {
        let Some(i) = self
            .servers
            .iter()
            .position(|s| s.tool.label == call.server)
        else {
            return Err(json!({"type": "mcp_protocol_error", "code": -32601,
                "message": format!("No MCP server is labelled '{}'.", call.server)}));
        };
        let arguments = match call.arguments.trim() {
            "" => json!({}),
            text => serde_json::from_str::<Value>(text).map_err(|e| {
                json!({"type": "mcp_protocol_error", "code": -32602,
                    "message": format!("The arguments are not JSON: {e}")})
            })?,
        };
        let server = &mut self.servers[i];
        let timer = Rc::clone(&self.timer);
        let run = async {
            if !server.initialized {
                server.client.initialize().await?;
                server.initialized = true;
            }
            server.client.call_tool(&call.name, arguments).await
        };
        match deadline(&*timer, self.timeout, run).await {
            Ok(result) if result.is_error => Err(json!({
                "type": "mcp_tool_execution_error",
                "content": result.content,
            })),
            Ok(result) => Ok(result.output),
            Err(error) => Err(error_value(&error)),
        }
    }

    /// `initialize` and `tools/list` on server `i`.
    async fn list(&mut self, i: usize) -> Result<Vec<Tool>, McpError> {
        let timer = Rc::clone(&self.timer);
        let server = &mut self.servers[i];
        let run = async {
            server.client.initialize().await?;
            server.initialized = true;
            server.client.list_tools().await
        };
        deadline(&*timer, self.timeout, run).await
    }

    /// The tools an earlier turn listed for `label`, if one did.
    fn earlier_listing(&self, label: &str) -> Option<Vec<Tool>> {
        self.history
            .iter()
            .rev()
            .find_map(|item| match McpItem::read(item) {
                Some(McpItem::ListTools {
                    server_label,
                    tools,
                    failed: false,
                }) if server_label == label => {
                    let tools = tools
                        .iter()
                        .filter_map(|t| serde_json::from_value(t.clone()).ok())
                        .collect();
                    Some(tools)
                }
                _ => None,
            })
    }

    /// The approval answers of the input, in order.
    fn answers(&self) -> impl Iterator<Item = (&str, bool, Option<&str>)> {
        self.history
            .iter()
            .filter_map(|item| match McpItem::read(item) {
                Some(McpItem::ApprovalResponse {
                    request_id,
                    approve,
                    reason,
                }) if !self.ran(request_id) => Some((request_id, approve, reason)),
                _ => None,
            })
    }

    /// Whether a call already ran for approval request `id`.
    fn ran(&self, id: &str) -> bool {
        self.history.iter().any(|item| {
            matches!(McpItem::read(item), Some(McpItem::Call { call_id, .. }) if call_id == id)
        })
    }

    /// The approval request `id` answers: server label, tool, arguments.
    fn request(&self, id: &str) -> Option<(&str, &str, &str)> {
        self.history
            .iter()
            .find_map(|item| match McpItem::read(item) {
                Some(McpItem::ApprovalRequest {
                    id: request_id,
                    server_label,
                    name,
                    arguments,
                }) if request_id == id => Some((server_label, name, arguments)),
                _ => None,
            })
    }

    /// Every answer names a request of this conversation, on a server the
    /// request still names.
    fn check_answers(&self, input: &[Item]) -> Result<(), ApiError> {
        for (i, item) in input.iter().enumerate() {
            let Some(McpItem::ApprovalResponse { request_id, .. }) = McpItem::read(item) else {
                continue;
            };
            let param = format!("input[{i}].approval_request_id");
            let Some((label, _, _)) = self.request(request_id) else {
                return Err(ApiError::invalid_param(
                    &param,
                    format!("No mcp_approval_request '{request_id}' in this conversation."),
                ));
            };
            if !self.servers.iter().any(|s| s.tool.label == label) {
                return Err(ApiError::invalid_param(
                    &param,
                    format!(
                        "The approved call is on MCP server '{label}', which this request's \
                         tools do not name."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs the approved calls and declines the others: the items whose
    /// rendering tells the model what became of each.
    async fn run_answers<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<Vec<Item>> {
        let answers: Vec<(String, bool, Option<String>)> = self
            .answers()
            .map(|(id, approve, reason)| (id.to_owned(), approve, reason.map(str::to_owned)))
            .collect();
        let mut results = Vec::new();
        for (id, approve, reason) in answers {
            let Some((label, name, arguments)) = self
                .request(&id)
                .map(|(l, n, a)| (l.to_owned(), n.to_owned(), a.to_owned()))
            else {
                continue;
            };
            if !approve {
                let why = reason.map_or(String::new(), |r| format!(" Their reason: {r}"));
                let output = format!("The user declined this call.{why}");
                let declined = hosted::call(&id, &label, &name, &arguments, None, Some(Ok(output)));
                results.push(declined);
                continue;
            }
            let (call, events) = stream.approved_call(&id, &label, &name, &arguments);
            if !out.events(events).await {
                return None;
            }
            let result = out.wait(self.call(&call)).await?;
            let events = stream.call_done(&call, result);
            if !out.events(events).await {
                return None;
            }
            results.extend(stream.output_since(call.index).first().cloned());
        }
        Some(results)
    }
}

/// `future`, or [`McpError::Unreachable`] once `timeout` has passed.
async fn deadline<T>(
    timer: &dyn Timer,
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    let future = std::pin::pin!(future);
    match select(future, timer.sleep(timeout)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(McpError::Unreachable(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// A listing as `mcp_list_tools` items show it.
fn listed_values(tools: &[Tool]) -> Vec<Value> {
    tools
        .iter()
        .map(|tool| {
            json!({
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
                "annotations": tool.annotations,
            })
        })
        .collect()
}

/// An `McpToolCallError` for a failure to get an answer.
fn error_value(error: &McpError) -> Value {
    match error {
        McpError::Rpc { code, message } => {
            json!({"type": "mcp_protocol_error", "code": code, "message": message})
        }
        McpError::Malformed(_) => {
            json!({"type": "mcp_protocol_error", "code": -32700, "message": error.to_string()})
        }
        McpError::Http(status) => {
            json!({"type": "http_error", "code": status, "message": error.to_string()})
        }
        McpError::Unreachable(why) => {
            let code = if why.contains("within") || why.contains("timed out") {
                504
            } else {
                502
            };
            json!({"type": "http_error", "code": code, "message": error.to_string()})
        }
    }
}
