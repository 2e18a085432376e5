//! The event machine's side of the tools the server runs itself: the end of
//! a backend call that asked for them ([`EventStream::end_round`]), the
//! `mcp_list_tools` and `mcp_call` items the model loop opens and closes,
//! and their progress events.

use serde_json::Value;

use super::events::{Event, EventKind, Progress};
use super::EventStream;
use crate::api::hosted;
use crate::api::items::{Item, Status};
use crate::chat::{McpOffer, ToolKind};
use crate::error::ApiError;
use crate::search::Source;

/// A call of a tool the server runs itself, announced in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCall {
    /// Its position in the output.
    pub index: usize,
    pub item_id: String,
    pub tool: ServerTool,
    pub arguments: String,
    /// The approval request it runs for, if it waited for one.
    pub approval_request_id: Option<String>,
}

/// Which tool a [`ServerCall`] calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTool {
    /// Tool `name` of the MCP server labelled `server`.
    Mcp {
        server: String,
        name: String,
    },
    WebSearch,
}

/// What a backend call asked for, once its answer is read.
#[derive(Debug, Default)]
pub struct Round {
    /// MCP calls to run now.
    pub calls: Vec<ServerCall>,
    /// Whether it also called tools the client runs (they end the turn).
    pub client_calls: bool,
    /// Whether some of its MCP calls wait for approval (they end it too).
    pub approvals: bool,
}

/// An `mcp_list_tools` item in progress.
#[derive(Debug, Clone)]
pub struct ListingSlot {
    index: usize,
    item_id: String,
    server: String,
}

impl EventStream {
    /// Closes the items of the backend call just read and says what it
    /// asked for; the response goes on with another call or ends.
    pub fn end_round(&mut self) -> (Round, Vec<Event>) {
        self.flush_think_tags();
        let client_calls = self.calls.values().any(|call| {
            matches!(
                self.tools.lookup(&call.name),
                ToolKind::Function { .. } | ToolKind::Custom { .. }
            )
        });
        let approvals = self.calls.values().any(|call| {
            matches!(
                self.tools.lookup(&call.name),
                ToolKind::Mcp { approval: true, .. }
            )
        });
        self.close_all(Status::Completed);
        self.take_usage();
        let round = Round {
            calls: std::mem::take(&mut self.running),
            client_calls,
            approvals,
        };
        (round, self.take())
    }

    /// Readies the machine for the answer of another backend call.
    pub fn next_call(&mut self) {
        self.finish_reason = None;
        if self.think_tags.is_some() {
            self.think_tags = Some(crate::chat::ThinkTags::default());
        }
    }

    /// The output items from position `from` on.
    pub fn output_since(&self, from: usize) -> &[Item] {
        self.response.output.get(from..).unwrap_or_default()
    }

    /// Offers web search to the model; its definition for the backend.
    pub fn add_web_search(&mut self) -> Option<Value> {
        self.tools.add_web_search()
    }

    /// Offers the tools an MCP server listed to the model; returns their
    /// definitions for the backend.
    pub fn add_mcp_tools(&mut self, server: &str, tools: &[McpOffer<'_>]) -> Vec<Value> {
        self.tools.add_mcp(server, tools)
    }

    /// Checks a `tool_choice` that names a tool of MCP server `server`,
    /// once its tools are offered (see [`crate::chat::ToolMap::check_mcp_choice`]).
    pub fn check_mcp_choice(&mut self, server: &str, listed: bool) -> Result<(), ApiError> {
        self.tools.check_mcp_choice(server, listed)
    }

    /// Whether the model is offered tool `name` of MCP server `server`.
    pub fn offers_mcp(&self, server: &str, name: &str) -> bool {
        self.tools.offers_mcp(server, name)
    }

    /// `tool_choice` for the backend, as the tools now offered make it.
    pub fn chat_tool_choice(&self) -> Option<Value> {
        self.tools.chat_tool_choice()
    }

    /// Opens the `mcp_list_tools` item of `server`.
    pub fn listing_started(&mut self, server: &str) -> (ListingSlot, Vec<Event>) {
        let item_id = self.env.new_id("mcpl");
        let index = self.add_item(hosted::list_tools(&item_id, server, Vec::new(), None));
        self.progress(Progress::ListToolsInProgress, item_id.clone(), index);
        let slot = ListingSlot {
            index,
            item_id,
            server: server.to_owned(),
        };
        (slot, self.take())
    }

    /// Closes a listing with the tools listed, or why none could be.
    pub fn listing_done(
        &mut self,
        slot: ListingSlot,
        listed: Result<Vec<Value>, String>,
    ) -> Vec<Event> {
        let progress = match listed {
            Ok(_) => Progress::ListToolsCompleted,
            Err(_) => Progress::ListToolsFailed,
        };
        let (tools, error) = match listed {
            Ok(tools) => (tools, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let item = hosted::list_tools(&slot.item_id, &slot.server, tools, error);
        self.progress(progress, slot.item_id, slot.index);
        self.done_item(slot.index, item);
        self.take()
    }

    /// Opens the `mcp_call` of an approved request, before the model is
    /// called.
    pub fn approved_call(
        &mut self,
        request_id: &str,
        server: &str,
        name: &str,
        arguments: &str,
    ) -> (ServerCall, Vec<Event>) {
        let item_id = self.env.new_id("mcp");
        let item = hosted::call(&item_id, server, name, arguments, Some(request_id), None);
        let index = self.add_item(item);
        self.progress(Progress::CallInProgress, item_id.clone(), index);
        let call = ServerCall {
            index,
            item_id,
            tool: ServerTool::Mcp {
                server: server.to_owned(),
                name: name.to_owned(),
            },
            arguments: arguments.to_owned(),
            approval_request_id: Some(request_id.to_owned()),
        };
        (call, self.take())
    }

    /// Closes an MCP call with its output, or its error (an
    /// `McpToolCallError`).
    pub fn call_done(&mut self, call: &ServerCall, result: Result<String, Value>) -> Vec<Event> {
        let progress = match result {
            Ok(_) => Progress::CallCompleted,
            Err(_) => Progress::CallFailed,
        };
        let item = call_item(call, Some(result));
        self.progress(progress, call.item_id.clone(), call.index);
        self.done_item(call.index, item);
        self.take()
    }

    /// `response.web_search_call.searching`.
    pub fn searching(&mut self, call: &ServerCall) -> Vec<Event> {
        self.progress(Progress::SearchSearching, call.item_id.clone(), call.index);
        self.take()
    }

    /// Closes a search: `completed` with the sources it `found` (kept for
    /// the citations of the text that follows), or `failed`; the item's
    /// action lists their URLs when `show_sources`.
    pub fn search_done(
        &mut self,
        call: &ServerCall,
        query: &str,
        found: Option<Vec<Source>>,
        show_sources: bool,
    ) -> Vec<Event> {
        let status = if found.is_some() {
            "completed"
        } else {
            "failed"
        };
        let urls: Vec<String> = found.iter().flatten().map(|s| s.url.clone()).collect();
        let sources = show_sources.then_some(urls.as_slice());
        let item = hosted::web_search_call(&call.item_id, status, query, sources);
        self.sources.extend(found.into_iter().flatten());
        self.progress(Progress::SearchCompleted, call.item_id.clone(), call.index);
        self.done_item(call.index, item);
        self.take()
    }

    /// Calls still running when the response ends are closed unfinished.
    pub(super) fn close_running(&mut self) {
        for call in std::mem::take(&mut self.running) {
            let mut item = call_item(&call, None);
            if let Item::Other(Value::Object(fields)) = &mut item {
                fields.insert("status".into(), Value::from("incomplete"));
            }
            self.done_item(call.index, item);
        }
    }

    pub(super) fn progress(&mut self, progress: Progress, item_id: String, output_index: usize) {
        self.emit(EventKind::Progress {
            progress,
            item_id,
            output_index,
        });
    }
}

/// The item of a server call: in progress (`None`), or done.
fn call_item(call: &ServerCall, result: Option<Result<String, Value>>) -> Item {
    match &call.tool {
        ServerTool::Mcp { server, name } => hosted::call(
            &call.item_id,
            server,
            name,
            &call.arguments,
            call.approval_request_id.as_deref(),
            result,
        ),
        ServerTool::WebSearch => hosted::web_search_call(&call.item_id, "in_progress", "", None),
    }
}
