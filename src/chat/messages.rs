//! Conversation items as chat-completions messages.
//!
//! Function calls that follow an assistant message (or each other) are merged
//! into that assistant message's `tool_calls`, which is the shape chat
//! templates expect; tool outputs become `tool` messages; reasoning belongs
//! to the next assistant message, as its `reasoning_content` when the
//! backend takes it, and is dropped otherwise. A `compaction` item becomes
//! a `user` message with the summary it carries; an `mcp_call` or a
//! `web_search_call` the server ran, a tool call and its `tool` message.
//! An `mcp_approval_response` that declines a call is that call and a
//! `tool` message saying it was declined, where the answer stands (once per
//! request); an approved call shows as the `mcp_call` that ran it.
//!
//! [`Rendered`] also says whether a run of items renders the same on its own
//! as among other items, which lets a stored turn keep its messages ready.

use serde_json::{json, Value};

use super::tools::{flat_name, mcp_function_name};
use super::{ChatContent, ChatFunction, ChatMessage, ChatToolCall};
use crate::api::hosted::{HostedItem, WEB_SEARCH_FUNCTION};
use crate::api::items::{ContentPart, Item, Message, Role};
use crate::compact::replayed_summary;

/// The version of the rendering below. Stored turns keep the messages they
/// rendered to with this number; bump it whenever what items render to
/// changes, and turns kept by an older version are rendered again from
/// their items.
pub const RENDERING: u32 = 3;

/// The chat messages for `instructions` followed by `history`.
pub fn to_messages(
    instructions: Option<&str>,
    history: &[Item],
    send_reasoning: bool,
) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(history.len() + 1);
    out.extend(system_message(instructions));
    out.extend(Rendered::new(history, send_reasoning).messages);
    out
}

/// The `system` message for a request's instructions, if it has any.
pub fn system_message(instructions: Option<&str>) -> Option<ChatMessage> {
    instructions
        .filter(|t| !t.is_empty())
        .map(|text| text_message("system", text.to_owned()))
}

/// Items rendered as chat messages, with what decides whether the messages
/// can be joined to the messages of neighbouring items unchanged.
#[derive(Debug, Default)]
pub struct Rendered {
    pub messages: Vec<ChatMessage>,
    /// A tool call opens the items; after an assistant message it would
    /// have joined that message's `tool_calls`.
    pub leading_call: bool,
    /// Reasoning closes the items; it would have gone to the next
    /// assistant message.
    pub trailing_reasoning: bool,
    /// A declined approval whose request is not among the items: rendered
    /// with the items before it, it would be the declined call.
    pub detached_answer: bool,
}

impl Rendered {
    /// Renders `items` on their own.
    pub fn new<'i>(items: impl IntoIterator<Item = &'i Item>, send_reasoning: bool) -> Self {
        let mut state = Transcript {
            send_reasoning,
            ..Transcript::default()
        };
        for item in items {
            state.push(item);
        }
        Rendered {
            trailing_reasoning: state.reasoning.is_some(),
            leading_call: state.leading_call,
            detached_answer: state.detached_answer,
            messages: state.out,
        }
    }

    /// Whether these messages read the same on their own as after and
    /// before any other rendered items.
    pub fn self_contained(&self) -> bool {
        !self.leading_call && !self.trailing_reasoning && !self.detached_answer
    }
}

/// The rendering state: messages so far, and reasoning waiting for the
/// assistant message it belongs to.
#[derive(Default)]
struct Transcript<'i> {
    out: Vec<ChatMessage>,
    reasoning: Option<String>,
    send_reasoning: bool,
    leading_call: bool,
    /// The MCP approval requests so far: id, server label, tool, arguments.
    requests: Vec<(&'i str, &'i str, &'i str, &'i str)>,
    /// The approval requests whose decline is rendered.
    declined: Vec<&'i str>,
    detached_answer: bool,
}

impl<'i> Transcript<'i> {
    fn push(&mut self, item: &'i Item) {
        match item {
            Item::Message(message) => {
                let mut chat = message_to_chat(message);
                if chat.role == "assistant" {
                    chat.reasoning_content = self.reasoning.take().filter(|_| self.send_reasoning);
                }
                self.out.push(chat);
            }
            Item::FunctionCall(call) => {
                let name = match &call.namespace {
                    Some(ns) => flat_name(ns, &call.name),
                    None => call.name.clone(),
                };
                let arguments = if call.arguments.is_empty() {
                    "{}".to_owned()
                } else {
                    call.arguments.clone()
                };
                self.push_tool_call(&call.call_id, name, arguments);
            }
            Item::CustomToolCall(call) => {
                let arguments = json!({ "input": call.input }).to_string();
                self.push_tool_call(&call.call_id, call.name.clone(), arguments);
            }
            Item::FunctionCallOutput(output) => self
                .out
                .push(tool_message(&output.call_id, output.output.to_text())),
            Item::CustomToolCallOutput(output) => self
                .out
                .push(tool_message(&output.call_id, output.output.to_text())),
            Item::Reasoning(r) => {
                let text = r.text();
                if !text.is_empty() {
                    self.reasoning = Some(match self.reasoning.take() {
                        Some(prev) => format!("{prev}\n{text}"),
                        None => text,
                    });
                }
            }
            // A compaction item is replayed as the summary it carries, as
            // a `user` message: the client holds it, so it has no more
            // authority than what the client says itself. Its blob was
            // checked when the item came in (`crate::compact`).
            Item::Other(_) if item.is_compaction() => {
                if let Some(text) = item.compaction_content().and_then(replayed_summary) {
                    self.out.push(text_message("user", text));
                }
            }
            // A call the server ran (MCP, web search) is the model's tool
            // call and its result; listings and approvals are the server's
            // business.
            Item::Other(_) => match HostedItem::read(item) {
                Some(HostedItem::Call {
                    call_id,
                    server_label,
                    name,
                    arguments,
                    result,
                }) => {
                    self.push_tool_call(
                        call_id,
                        mcp_function_name(server_label, name),
                        arguments.into(),
                    );
                    self.out.push(tool_message(call_id, result));
                }
                Some(HostedItem::ApprovalRequest {
                    id,
                    server_label,
                    name,
                    arguments,
                }) => self.requests.push((id, server_label, name, arguments)),
                Some(HostedItem::ApprovalResponse {
                    request_id,
                    approve: false,
                    reason,
                }) => self.push_declined(request_id, reason),
                // Without its query (another server's item may lack it) there
                // is nothing to tell the model.
                Some(HostedItem::WebSearch { id, query, sources }) if !query.is_empty() => {
                    let arguments = json!({ "query": query }).to_string();
                    self.push_tool_call(id, WEB_SEARCH_FUNCTION.to_owned(), arguments);
                    let mut result = format!("Searched the web for \"{query}\".");
                    for url in sources {
                        result.push_str("\n- ");
                        result.push_str(url);
                    }
                    self.out.push(tool_message(id, result));
                }
                _ => {}
            },
            // References are resolved before translation.
            Item::ItemReference(_) => {}
        }
    }

    /// The call approval request `id` asked for, declined: once, and only
    /// when the request is among the items.
    fn push_declined(&mut self, id: &'i str, reason: Option<&str>) {
        if self.declined.contains(&id) {
            return;
        }
        let Some(&(_, label, name, arguments)) = self.requests.iter().find(|r| r.0 == id) else {
            self.detached_answer = true;
            return;
        };
        self.push_tool_call(id, mcp_function_name(label, name), arguments.to_owned());
        self.out.push(tool_message(id, declined_text(reason)));
        self.declined.push(id);
    }

    fn push_tool_call(&mut self, call_id: &str, name: String, arguments: String) {
        let call = ChatToolCall {
            id: call_id.to_owned(),
            kind: "function",
            function: ChatFunction { name, arguments },
        };
        if self.out.is_empty() && self.reasoning.is_none() {
            self.leading_call = true;
        }
        match self.out.last_mut() {
            Some(last) if last.role == "assistant" && self.reasoning.is_none() => {
                last.tool_calls.push(call)
            }
            _ => {
                let reasoning = self.reasoning.take();
                self.out.push(ChatMessage {
                    role: "assistant",
                    content: None,
                    tool_calls: vec![call],
                    tool_call_id: None,
                    reasoning_content: reasoning.filter(|_| self.send_reasoning),
                });
            }
        }
    }
}

/// What the model is told of a call the user declined.
fn declined_text(reason: Option<&str>) -> String {
    match reason.filter(|r| !r.is_empty()) {
        Some(reason) => format!("The user declined this call. Their reason: {reason}"),
        None => "The user declined this call.".to_owned(),
    }
}

pub(crate) fn text_message(role: &'static str, text: String) -> ChatMessage {
    ChatMessage {
        role,
        content: Some(ChatContent::Text(text)),
        tool_calls: Vec::new(),
        tool_call_id: None,
        reasoning_content: None,
    }
}

fn tool_message(call_id: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: "tool",
        content: Some(ChatContent::Text(text)),
        tool_calls: Vec::new(),
        tool_call_id: Some(call_id.to_owned()),
        reasoning_content: None,
    }
}

fn message_to_chat(message: &Message) -> ChatMessage {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        // Most open backends know only `system`; `developer` means the same.
        Role::System | Role::Developer => "system",
    };
    let all_text = message.content.iter().all(|p| p.text().is_some());
    let content = if all_text || role != "user" {
        ChatContent::Text(message.text())
    } else {
        ChatContent::Parts(message.content.iter().filter_map(part_to_chat).collect())
    };
    ChatMessage {
        content: Some(content),
        ..text_message(role, String::new())
    }
}

fn part_to_chat(part: &ContentPart) -> Option<Value> {
    match part {
        ContentPart::InputText { text } | ContentPart::OutputText { text, .. } => {
            Some(json!({"type": "text", "text": text}))
        }
        ContentPart::Refusal { refusal } => Some(json!({"type": "text", "text": refusal})),
        ContentPart::InputImage {
            image_url: Some(url),
            detail,
            ..
        } => Some(json!({"type": "image_url", "image_url": {"url": url, "detail": detail}})),
        ContentPart::InputFile {
            file_data: Some(data),
            filename,
            ..
        } => {
            let mut file = json!({"file_data": data});
            if let Some(name) = filename {
                file["filename"] = json!(name);
            }
            Some(json!({"type": "file", "file": file}))
        }
        // Files and images by id live in OpenAI's file store, which we do not have.
        ContentPart::InputImage { .. } | ContentPart::InputFile { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: Value) -> Vec<Item> {
        serde_json::from_value(v).unwrap()
    }

    fn chat(history: &[Item], send_reasoning: bool) -> Value {
        serde_json::to_value(to_messages(None, history, send_reasoning)).unwrap()
    }

    #[test]
    fn tool_round_trip_shape() {
        let history = items(json!([
            {"role": "user", "content": "weather?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "create_issue", "namespace": "mcp__github__", "arguments": ""},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "ok"}]},
        ]));
        assert_eq!(
            chat(&history, false),
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "mcp__github__create_issue", "arguments": "{}"}}]},
                {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                {"role": "tool", "content": "ok", "tool_call_id": "c2"},
            ])
        );
    }

    #[test]
    fn reasoning_is_attached_or_dropped() {
        let history = items(json!([
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "think"}]},
            {"type": "message", "role": "assistant", "content": "a"},
        ]));
        assert_eq!(chat(&history, true)[1]["reasoning_content"], "think");
        assert!(chat(&history, false)[1].get("reasoning_content").is_none());
    }

    #[test]
    fn media_parts_and_developer_role() {
        let history = items(json!([
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAA"}]},
        ]));
        let v = chat(&history, false);
        assert_eq!(v[0], json!({"role": "system", "content": "rules"}));
        assert_eq!(
            v[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAA"
        );
    }

    #[test]
    fn custom_tool_call_and_output() {
        let history = items(json!([
            {"type": "custom_tool_call", "call_id": "c9", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c9", "output": "done"},
        ]));
        let v = chat(&history, false);
        assert_eq!(
            v[0]["tool_calls"][0]["function"]["arguments"],
            "{\"input\":\"*** Begin Patch\"}"
        );
        assert_eq!(v[1]["role"], "tool");
    }

    #[test]
    fn reasoning_before_a_message_does_not_split_its_tool_calls() {
        let history = items(json!([
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
            {"type": "message", "role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]));
        for send_reasoning in [false, true] {
            let v = chat(&history, send_reasoning);
            assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
            assert_eq!(v[0]["tool_calls"][0]["id"], "c1");
        }
    }

    #[test]
    fn compaction_items_replay_their_summary() {
        use crate::compact::seal::{Seal, Sealed};
        let blob = Seal::new(None, "t").seal(&Sealed {
            summary: "Goal: x.".into(),
            model: "m".into(),
            created_at: 0,
        });
        let history = items(json!([
            {"role": "user", "content": "q"},
            {"type": "compaction", "id": "cmp_1", "encrypted_content": blob},
            {"type": "compaction", "encrypted_content": "gAAAAAB-not-ours"},
            {"type": "compaction"},
            {"role": "user", "content": "next"},
        ]));
        let v = chat(&history, false);
        assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
        assert_eq!(v[1]["role"], "user");
        let text = v[1]["content"].as_str().unwrap();
        assert!(
            text.starts_with("Summary of the conversation so far"),
            "{text}"
        );
        assert!(text.ends_with("\n\nGoal: x."), "{text}");
        assert!(Rendered::new(&history[1..2], true).self_contained());
    }

    /// Splitting a conversation into runs whose renderings are each
    /// self-contained (the last one only needs no leading call) and joining
    /// those renderings gives the rendering of the whole.
    #[test]
    fn self_contained_runs_join_into_the_whole() {
        let conversation = items(json!([
            {"role": "user", "content": "q1"},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r1"}]},
            {"type": "message", "role": "assistant", "content": "a1"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "o1"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r2"}]},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c2", "output": "o2"},
            {"type": "message", "role": "assistant", "content": "a2"},
            {"type": "custom_tool_call", "call_id": "c3", "name": "h", "input": "x"},
            {"type": "custom_tool_call_output", "call_id": "c3", "output": "o3"},
            {"type": "web_search_call", "id": "ws"},
            {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "s", "name": "t", "arguments": "{}"},
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": false},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r3"}]},
            {"role": "user", "content": "q2"},
            {"type": "message", "role": "assistant", "content": "a3"},
        ]));
        let mut joined_checks = 0;
        for send_reasoning in [false, true] {
            let whole = to_messages(None, &conversation, send_reasoning);
            // Every way of cutting the conversation in three.
            for i in 0..=conversation.len() {
                for j in i..=conversation.len() {
                    let runs = [&conversation[..i], &conversation[i..j], &conversation[j..]];
                    let rendered: Vec<Rendered> = runs
                        .iter()
                        .map(|run| Rendered::new(*run, send_reasoning))
                        .collect();
                    let joinable = rendered[..2].iter().all(Rendered::self_contained)
                        && !rendered[2].leading_call
                        && !rendered[2].detached_answer;
                    if joinable {
                        let joined: Vec<ChatMessage> =
                            rendered.into_iter().flat_map(|r| r.messages).collect();
                        assert_eq!(joined, whole, "cut at {i} and {j}");
                        joined_checks += 1;
                    }
                }
            }
        }
        assert!(joined_checks > 20, "only {joined_checks} joinable cuts");
    }

    #[test]
    fn a_declined_approval_is_its_call_where_the_answer_stands() {
        let history = items(json!([
            {"role": "user", "content": "add"},
            {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "calc", "tools": []},
            {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "calc",
             "name": "add", "arguments": "{\"a\":1}"},
            {"type": "mcp_approval_response", "id": "mcpa_1", "approval_request_id": "mcpr_1",
             "approve": false, "reason": "not now"},
            {"type": "message", "role": "assistant", "content": "Fine."},
            // Answered again (a client passing its items back): shown once.
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": false},
            {"role": "user", "content": "next"},
        ]));
        assert_eq!(
            chat(&history, false),
            json!([
                {"role": "user", "content": "add"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "mcpr_1", "type": "function",
                    "function": {"name": "calc__add", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "content": "The user declined this call. Their reason: not now",
                 "tool_call_id": "mcpr_1"},
                {"role": "assistant", "content": "Fine."},
                {"role": "user", "content": "next"},
            ])
        );
        // Without its request the answer renders nothing, and says so.
        let alone = Rendered::new(&history[3..], false);
        assert!(alone.detached_answer && !alone.self_contained());
        assert_eq!(alone.messages.len(), 2);
        assert!(Rendered::new(&history[..5], false).self_contained());
    }

    #[test]
    fn an_approved_call_shows_once_as_its_mcp_call() {
        let history = items(json!([
            {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "calc",
             "name": "add", "arguments": "{}"},
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": true},
            {"type": "mcp_call", "id": "mcp_1", "approval_request_id": "mcpr_1", "server_label": "calc",
             "name": "add", "arguments": "{}", "output": "2", "status": "completed"},
        ]));
        let v = chat(&history, false);
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(v[0]["tool_calls"][0]["id"], "mcpr_1");
        assert_eq!(
            v[1],
            json!({"role": "tool", "content": "2", "tool_call_id": "mcpr_1"})
        );
    }
}
