//! The tools a response runs on the server: the remote MCP servers its
//! request names, and web search when a provider is configured.
//!
//! Before the model is called, [`Hosted::prepare`] lists each server's
//! tools (or reuses the listing an earlier turn of the conversation made),
//! offers them and web search to the model, and runs the calls the
//! request's input approves. Only the approval answers of the input are
//! new: answers found in the history were acted on by their own turn, and
//! a declined call is rendered where its answer stands
//! ([`crate::chat::Rendered`]), so nothing runs or shows twice. During the
//! model loop, [`Hosted::run`] runs a call the model made; a call of a
//! tool this request does not offer (left out by `allowed_tools`, or on a
//! server whose listing failed) fails without reaching the server. A
//! server's or provider's failures (unreachable, HTTP errors, JSON-RPC
//! errors, tool errors, timeouts) become the item's `error` or `failed`
//! status, which the model sees; they never fail the response.

use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use serde_json::{json, Value};

use super::emit::{Emitter, EventSink};
use super::model::Ended;
use crate::api::hosted::HostedItem;
use crate::api::items::Item;
use crate::api::request::CreateRequest;
use crate::backend::{Backend, Outbound};
use crate::chat::{ChatContent, ChatMessage, McpOffer, Rendered};
use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::Timer;
use crate::mcp::client::{
    cut_output, CallResult, McpError, Server, Tool, MAX_OUTPUT_BYTES, MAX_RESPONSE_OUTPUT_BYTES,
};
use crate::mcp::tool::{McpTool, MAX_SERVERS};
use crate::search::tool::TOOL_TYPES;
use crate::search::{results_for_model, SearchConfig, SearchError, Source, WebSearchTool};
use crate::stream::{EventStream, ServerCall, ServerTool};

/// Most MCP calls one answer of the model runs; the rest fail, and the
/// model is told why.
pub const MAX_CALLS_PER_ANSWER: usize = 32;

/// The server-side tools of one response.
pub struct Hosted<'a, B: Backend> {
    backend: &'a B,
    servers: Vec<McpServer<'a, B>>,
    /// The MCP items of the conversation so far, input included.
    history: Vec<Item>,
    /// The approval requests the input approves, not yet run.
    approved: Vec<String>,
    timer: Rc<dyn Timer>,
    timeout: Duration,
    search: Option<WebSearch>,
    /// What the model is shown of each search, by call item id.
    search_results: Vec<(String, String)>,
    limits: Limits,
}

/// What the calls of one response may still do: the output it may still
/// keep ([`MAX_RESPONSE_OUTPUT_BYTES`]), and the calls of the current
/// answer ([`MAX_CALLS_PER_ANSWER`]).
struct Limits {
    output_left: usize,
    /// The length of the output when the current answer's first call
    /// ran: a call at or past it is the first of another answer.
    answer_mark: usize,
    answer_calls: usize,
}

/// The `web_search` tool of a request, on the configured provider.
struct WebSearch {
    config: SearchConfig,
    tool: WebSearchTool,
    /// `include: ["web_search_call.action.sources"]`.
    show_sources: bool,
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
        request: &CreateRequest,
        input: &[Item],
        history: Vec<Item>,
        settings: &Settings,
        backend: &'a B,
        timer: Rc<dyn Timer>,
    ) -> Result<Self, ApiError> {
        let tools = request.tools.as_deref().unwrap_or_default();
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
            let client = Server::new(backend, tool.url.clone(), tool.headers.clone())
                .with_drain(Rc::clone(&timer));
            servers.push(McpServer {
                tool,
                client,
                initialized: false,
                tools: Vec::new(),
            });
        }
        let mut all = history;
        let earlier = all.len();
        all.extend(
            input
                .iter()
                .filter(|i| HostedItem::read(i).is_some())
                .cloned(),
        );
        let hosted = Hosted {
            backend,
            servers,
            approved: approved(&all, earlier),
            history: all,
            timer,
            timeout: Duration::from_secs(settings.mcp_timeout_seconds),
            search: web_search(request, settings)?,
            search_results: Vec::new(),
            limits: Limits {
                output_left: MAX_RESPONSE_OUTPUT_BYTES,
                answer_mark: 0,
                answer_calls: 0,
            },
        };
        hosted.check_answers(input)?;
        Ok(hosted)
    }

    /// The requests that end the MCP sessions this response opened.
    pub fn end_sessions(&self) -> Vec<Outbound> {
        self.servers
            .iter()
            .filter_map(|server| server.client.end_session())
            .collect()
    }

    /// Whether the request names no server and searches nothing.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_none()
    }

    /// Lists or reuses each server's tools and offers them to the model,
    /// then runs the approved calls. Stops when the client has gone away,
    /// or with a 400 when `tool_choice` names a tool its server does not
    /// offer.
    pub async fn prepare<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Result<Prepared, Ended> {
        let mut prepared = Prepared::default();
        for i in 0..self.servers.len() {
            let label = self.servers[i].tool.label.clone();
            let (tools, listed) = match self.earlier_listing(&label) {
                Some(tools) => (tools, true),
                None => {
                    let (slot, events) = stream.listing_started(&label);
                    if !out.events(events).await {
                        return Err(Ended::ClientGone);
                    }
                    let listed = out.wait(self.list(i)).await.ok_or(Ended::ClientGone)?;
                    let item_tools = listed.as_ref().map(|tools| listed_values(tools));
                    let events = stream.listing_done(slot, item_tools.map_err(|e| e.to_string()));
                    if !out.events(events).await {
                        return Err(Ended::ClientGone);
                    }
                    let ok = listed.is_ok();
                    (listed.unwrap_or_default(), ok)
                }
            };
            prepared.tools.extend(self.offer(i, tools, stream));
            stream
                .check_mcp_choice(&label, listed)
                .map_err(Ended::Failed)?;
        }
        if self.search.is_some() {
            prepared.tools.extend(stream.add_web_search());
        }
        let results = self
            .run_answers(stream, out)
            .await
            .ok_or(Ended::ClientGone)?;
        prepared.messages = Rendered::new(&results, false).messages;
        Ok(prepared)
    }

    /// Offers the model the `tools` server `i` listed that its `mcp` tool
    /// lets through; their definitions for the backend.
    fn offer(&mut self, i: usize, tools: Vec<Tool>, stream: &mut EventStream) -> Vec<Value> {
        let server = &mut self.servers[i];
        server.tools = tools;
        let label = server.tool.label.as_str();
        // The model learns what the server is for with each of its tools.
        let descriptions: Vec<Option<String>> = server
            .tools
            .iter()
            .map(|tool| describe(tool, label, server.tool.description.as_deref()))
            .collect();
        let offers: Vec<McpOffer<'_>> = server
            .tools
            .iter()
            .zip(&descriptions)
            .filter(|(tool, _)| server.tool.offers(tool))
            .map(|(tool, description)| McpOffer {
                name: &tool.name,
                description: description.as_deref(),
                schema: &tool.input_schema,
                approval: server.tool.needs_approval(tool),
            })
            .collect();
        stream.add_mcp_tools(label, &offers)
    }

    /// Runs a call the model made and closes its item; `None` once the
    /// client has gone away.
    pub async fn run<S: EventSink>(
        &mut self,
        call: &ServerCall,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<()> {
        let events = match &call.tool {
            ServerTool::Mcp { server, name } => {
                let over = self
                    .limits
                    .admit(call.index, stream.response().output.len());
                let offered = stream.offers_mcp(server, name);
                let run = self.call(server, name, &call.arguments, offered, over);
                let result = out.wait(run).await?;
                stream.call_done(call, result)
            }
            ServerTool::WebSearch => {
                let query = search_query(&call.arguments);
                if !out.events(stream.searching(call)).await {
                    return None;
                }
                let found = out.wait(self.web_search(&query)).await?;
                let text = match &found {
                    Ok(sources) => results_for_model(&query, sources),
                    Err(error) => format!("Web search failed: {error}"),
                };
                self.search_results.push((call.item_id.clone(), text));
                let show = self.search.as_ref().is_some_and(|s| s.show_sources);
                stream.search_done(call, &query, found.ok(), show)
            }
        };
        out.events(events).await.then_some(())
    }

    /// Shows the model the whole results of the searches among `messages`
    /// (a `web_search_call` item alone renders as the query and sources).
    pub fn show_results(&self, messages: &mut [ChatMessage]) {
        for message in messages.iter_mut().filter(|m| m.role == "tool") {
            let id = message.tool_call_id.as_deref();
            if let Some((_, text)) = self
                .search_results
                .iter()
                .find(|(i, _)| Some(i.as_str()) == id)
            {
                message.content = Some(ChatContent::Text(text.clone()));
            }
        }
    }

    /// One search on the configured provider.
    async fn web_search(&self, query: &str) -> Result<Vec<Source>, SearchError> {
        let Some(search) = &self.search else {
            return Err(SearchError::Unreachable(
                "no search provider is configured".into(),
            ));
        };
        let run = crate::search::search(self.backend, &search.config, &search.tool, query);
        deadline(&*self.timer, search.timeout, run)
            .await
            .unwrap_or_else(|| {
                Err(SearchError::Unreachable(format!(
                    "no answer within {} s",
                    search.timeout.as_secs()
                )))
            })
    }

    /// Calls tool `name` of the server labelled `label`, if it is
    /// `offered` to the model and the limits let it run (`over` says why
    /// they do not).
    async fn call(
        &mut self,
        label: &str,
        name: &str,
        arguments: &str,
        offered: bool,
        over: Option<&str>,
    ) -> Result<String, Value> {
        if let Some(refusal) = over.or_else(|| self.limits.spent()) {
            return Err(refused(refusal));
        }
        if !offered {
            return Err(json!({"type": "mcp_protocol_error", "code": -32602,
                "message": format!("Tool '{name}' is not available: MCP server '{label}' \
                    does not offer it to this response.")}));
        }
        let Some(i) = self.servers.iter().position(|s| s.tool.label == label) else {
            return Err(json!({"type": "mcp_protocol_error", "code": -32601,
                "message": format!("No MCP server is labelled '{label}'.")}));
        };
        let arguments = match arguments.trim() {
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
            server.client.call_tool(name, arguments).await
        };
        let result = deadline(&*timer, self.timeout, run)
            .await
            .unwrap_or_else(|| timed_out(self.timeout));
        self.limits.keep(result)
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
        deadline(&*timer, self.timeout, run)
            .await
            .unwrap_or_else(|| timed_out(self.timeout))
    }

    /// The tools an earlier turn listed for `label`, if one did.
    fn earlier_listing(&self, label: &str) -> Option<Vec<Tool>> {
        self.history
            .iter()
            .rev()
            .find_map(|item| match HostedItem::read(item) {
                Some(HostedItem::ListTools {
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

    /// The approval request `id` answers: server label, tool, arguments.
    fn request(&self, id: &str) -> Option<(&str, &str, &str)> {
        self.history
            .iter()
            .find_map(|item| match HostedItem::read(item) {
                Some(HostedItem::ApprovalRequest {
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
            let Some(HostedItem::ApprovalResponse { request_id, .. }) = HostedItem::read(item)
            else {
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

    /// Runs the approved calls: their `mcp_call` items, whose rendering
    /// tells the model what became of each. (A declined call is rendered
    /// from its answer, where the input has it.)
    async fn run_answers<S: EventSink>(
        &mut self,
        stream: &mut EventStream,
        out: &mut Emitter<'_, S>,
    ) -> Option<Vec<Item>> {
        let mut results = Vec::new();
        for id in std::mem::take(&mut self.approved) {
            let Some((label, name, arguments)) = self
                .request(&id)
                .map(|(l, n, a)| (l.to_owned(), n.to_owned(), a.to_owned()))
            else {
                continue;
            };
            let (call, events) = stream.approved_call(&id, &label, &name, &arguments);
            if !out.events(events).await {
                return None;
            }
            self.run(&call, stream, out).await?;
            results.extend(stream.output_since(call.index).first().cloned());
        }
        Some(results)
    }
}

impl Limits {
    /// Counts a call at `index` of the output, which holds `len` items;
    /// why it may not run, when the answer has made too many.
    fn admit(&mut self, index: usize, len: usize) -> Option<&'static str> {
        // The calls of one answer come in a row, before the output holds
        // anything of the next answer.
        if index >= self.answer_mark {
            self.answer_mark = len.max(index + 1);
            self.answer_calls = 0;
        }
        self.answer_calls += 1;
        (self.answer_calls > MAX_CALLS_PER_ANSWER).then_some(
            "Not run: one answer may make at most 32 calls of MCP tools; make the rest in \
             another answer.",
        )
    }

    /// Why no call may run any more, once the output is spent.
    fn spent(&self) -> Option<&'static str> {
        (self.output_left == 0).then_some(
            "Not run: this response already holds 8388608 bytes of tool output, the most it \
             may keep; answer with what it has.",
        )
    }

    /// The result of a call as its item holds it: the output, or the
    /// tool's error content, cut to what the response may still keep.
    fn keep(&mut self, result: Result<CallResult, McpError>) -> Result<String, Value> {
        let limit = self.output_left.min(MAX_OUTPUT_BYTES);
        let (kept, size) = match result {
            Err(error) => return Err(error_value(&error)),
            // The output holds the text of each block, and any other
            // block as JSON: past the limit, the cut text stands for them.
            Ok(result) if result.is_error => {
                let size = result.output.len();
                let content = match size > limit {
                    true => json!([{"type": "text", "text": cut_output(result.output, limit)}]),
                    false => result.content,
                };
                let error = json!({"type": "mcp_tool_execution_error", "content": content});
                (Err(error), size.min(limit))
            }
            Ok(result) => {
                let output = cut_output(result.output, limit);
                let size = output.len();
                (Ok(output), size)
            }
        };
        self.output_left = self.output_left.saturating_sub(size);
        kept
    }
}

/// The error of a call past the limits: not run, or its answer too large.
fn refused(message: &str) -> Value {
    json!({"type": "mcp_protocol_error", "code": -32000, "message": message})
}

/// The approval requests the answers among `items[earlier..]` (the
/// input's) approve, in order: each once, and only when no call ran for it
/// and no earlier item answered it already.
fn approved(items: &[Item], earlier: usize) -> Vec<String> {
    let mut approved: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate().skip(earlier) {
        let Some(HostedItem::ApprovalResponse {
            request_id,
            approve: true,
            ..
        }) = HostedItem::read(item)
        else {
            continue;
        };
        let settled = items
            .iter()
            .enumerate()
            .any(|(j, other)| match HostedItem::read(other) {
                Some(HostedItem::Call { call_id, .. }) => call_id == request_id,
                Some(HostedItem::ApprovalResponse { request_id: r, .. }) => {
                    j < i && r == request_id
                }
                _ => false,
            });
        if !settled {
            approved.push(request_id.to_owned());
        }
    }
    approved
}

/// What `future` gives, or `None` once `timeout` has passed.
async fn deadline<F: std::future::Future>(
    timer: &dyn Timer,
    timeout: Duration,
    future: F,
) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match select(future, timer.sleep(timeout)).await {
        Either::Left((result, _)) => Some(result),
        Either::Right(_) => None,
    }
}

fn timed_out<T>(timeout: Duration) -> Result<T, McpError> {
    Err(McpError::Unreachable(format!(
        "no answer within {} s",
        timeout.as_secs()
    )))
}

/// The `web_search` tool of `request`, when a provider is configured to
/// run it; without one a `tool_choice` that forces it is a 400.
fn web_search(request: &CreateRequest, settings: &Settings) -> Result<Option<WebSearch>, ApiError> {
    let tools = request.tools.as_deref().unwrap_or_default();
    let is_search = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| TOOL_TYPES.contains(&t))
    };
    let Some(config) = &settings.web_search else {
        if request.tool_choice.as_ref().is_some_and(is_search) {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice names a hosted tool this server cannot run: no web search provider is configured.",
            ));
        }
        return Ok(None);
    };
    let Some((i, tool)) = tools.iter().enumerate().find(|(_, t)| is_search(t)) else {
        return Ok(None);
    };
    let tool = WebSearchTool::parse(tool, &format!("tools[{i}]"))?;
    // `external_web_access: false` asks for cached results only; every
    // search here is live, so the tool is not offered.
    if tool.cached_only {
        if request.tool_choice.as_ref().is_some_and(is_search) {
            return Err(ApiError::invalid_param(
                "tool_choice",
                format!(
                    "tool_choice forces web search, but tools[{i}] has external_web_access \
                     false, and this server only searches the live web."
                ),
            ));
        }
        return Ok(None);
    }
    let include = request.include.as_deref().unwrap_or_default();
    Ok(Some(WebSearch {
        config: config.clone(),
        tool,
        show_sources: include
            .iter()
            .any(|i| i == "web_search_call.action.sources"),
        timeout: Duration::from_secs(settings.web_search_timeout_seconds),
    }))
}

/// The query of a search call: its `query` argument, or the arguments as
/// they are when they are not the JSON object asked for.
fn search_query(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => match map.get("query") {
            Some(Value::String(query)) => query.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// The description the model reads for `tool` of server `label`: the
/// tool's own, followed by the request's `server_description`, if any.
fn describe(tool: &Tool, label: &str, server: Option<&str>) -> Option<String> {
    match (tool.description.as_deref(), server) {
        (own, Some(server)) => Some(format!(
            "{}(A tool of the MCP server '{label}': {server})",
            own.map_or(String::new(), |d| format!("{d}\n\n"))
        )),
        (own, None) => own.map(str::to_owned),
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
        McpError::TooLarge(_) => refused(&error.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            output_left: MAX_RESPONSE_OUTPUT_BYTES,
            answer_mark: 0,
            answer_calls: 0,
        }
    }

    fn result(output: &str, is_error: bool) -> Result<CallResult, McpError> {
        Ok(CallResult {
            output: output.to_owned(),
            is_error,
            content: json!([{"type": "text", "text": output}]),
        })
    }

    #[test]
    fn an_answer_runs_at_most_its_share_of_calls() {
        let mut limits = limits();
        // An answer's calls at 1..=40 of an output of 41 items.
        let refused: Vec<bool> = (1..=40).map(|i| limits.admit(i, 41).is_some()).collect();
        assert_eq!(
            refused.iter().filter(|r| !**r).count(),
            MAX_CALLS_PER_ANSWER
        );
        assert!(refused[MAX_CALLS_PER_ANSWER]);
        let why = limits.admit(40, 41).unwrap();
        assert!(why.contains(&format!("at most {MAX_CALLS_PER_ANSWER} calls")));
        // The next answer's calls come after them: counted afresh.
        assert!(limits.admit(43, 45).is_none());
        assert!(limits.admit(44, 45).is_none());
        // Approved calls, one item each, are an answer each.
        for index in 46..100 {
            assert!(limits.admit(index, index + 1).is_none());
        }
    }

    #[test]
    fn output_is_kept_within_the_call_and_response_limits() {
        let mut limits = limits();
        let big = "x".repeat(MAX_OUTPUT_BYTES + 10);
        let mut kept = 0;
        for _ in 0..MAX_RESPONSE_OUTPUT_BYTES / MAX_OUTPUT_BYTES - 2 {
            let output = limits.keep(result(&big, false)).unwrap();
            assert!(output.starts_with(&big[..MAX_OUTPUT_BYTES]));
            assert!(output[MAX_OUTPUT_BYTES..].starts_with("\n[output cut: 10 more bytes"));
            kept += output.len();
        }
        // A tool's error content is cut the same way.
        let error = limits.keep(result(&big, true)).unwrap_err();
        assert_eq!(error["type"], "mcp_tool_execution_error");
        let text = error["content"][0]["text"].as_str().unwrap();
        assert!(text[MAX_OUTPUT_BYTES..].starts_with("\n[output cut: 10 more bytes"));
        kept += text.len();
        assert!(kept <= MAX_RESPONSE_OUTPUT_BYTES + 8 * 200, "{kept}");
        // Small results stand as they are while there is room.
        assert_eq!(limits.keep(result("ok", false)), Ok("ok".into()));
        while limits.spent().is_none() {
            let _ = limits.keep(result(&big, false));
        }
        let why = limits.spent().unwrap();
        assert!(
            why.contains(&format!("{MAX_RESPONSE_OUTPUT_BYTES} bytes")),
            "{why}"
        );
        let refusal = refused(why);
        assert_eq!(refusal["type"], "mcp_protocol_error");
        // A failure is no output.
        let too_large = limits.keep(Err(McpError::TooLarge("more than 8388608 bytes")));
        assert_eq!(too_large.unwrap_err()["code"], -32000);
    }
}
