//! Conversation items as chat-completions messages.
//!
//! Function calls that follow an assistant message (or each other) are merged
//! into that assistant message's `tool_calls`, which is the shape chat
//! templates expect; tool outputs become `tool` messages; reasoning is passed
//! on as `reasoning_content` of the next assistant message when the backend
//! takes it, and dropped otherwise.

use serde_json::{json, Value};

use super::tools::flat_name;
use super::{ChatContent, ChatFunction, ChatMessage, ChatToolCall};
use crate::api::items::{ContentPart, Item, Message, Role};

/// The chat messages for `instructions` followed by `history`.
pub fn to_messages(
    instructions: Option<&str>,
    history: &[Item],
    send_reasoning: bool,
) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(history.len() + 1);
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        out.push(text_message("system", text.to_owned()));
    }
    let mut reasoning: Option<String> = None;
    for item in history {
        match item {
            Item::Message(message) => {
                let mut chat = message_to_chat(message);
                if chat.role == "assistant" && send_reasoning {
                    chat.reasoning_content = reasoning.take();
                }
                out.push(chat);
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
                push_tool_call(
                    &mut out,
                    &mut reasoning,
                    send_reasoning,
                    &call.call_id,
                    name,
                    arguments,
                );
            }
            Item::CustomToolCall(call) => {
                let arguments = json!({ "input": call.input }).to_string();
                push_tool_call(
                    &mut out,
                    &mut reasoning,
                    send_reasoning,
                    &call.call_id,
                    call.name.clone(),
                    arguments,
                );
            }
            Item::FunctionCallOutput(output) => {
                out.push(tool_message(&output.call_id, output.output.to_text()))
            }
            Item::CustomToolCallOutput(output) => {
                out.push(tool_message(&output.call_id, output.output.to_text()))
            }
            Item::Reasoning(r) => {
                let text = r.text();
                if !text.is_empty() {
                    reasoning = Some(match reasoning.take() {
                        Some(prev) => format!("{prev}\n{text}"),
                        None => text,
                    });
                }
            }
            // References are resolved before translation; other kinds are
            // hosted-tool items the backend knows nothing about.
            Item::ItemReference(_) | Item::Other(_) => {}
        }
    }
    out
}

fn push_tool_call(
    out: &mut Vec<ChatMessage>,
    reasoning: &mut Option<String>,
    send_reasoning: bool,
    call_id: &str,
    name: String,
    arguments: String,
) {
    let call = ChatToolCall {
        id: call_id.to_owned(),
        kind: "function",
        function: ChatFunction { name, arguments },
    };
    match out.last_mut() {
        Some(last) if last.role == "assistant" && reasoning.is_none() => last.tool_calls.push(call),
        _ => {
            let mut message = ChatMessage {
                role: "assistant",
                content: None,
                tool_calls: vec![call],
                tool_call_id: None,
                reasoning_content: None,
            };
            if send_reasoning {
                message.reasoning_content = reasoning.take();
            } else {
                reasoning.take();
            }
            out.push(message);
        }
    }
}

fn text_message(role: &'static str, text: String) -> ChatMessage {
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
}
