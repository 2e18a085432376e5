//! The output items and usage the event machine writes into the Response,
//! in their final form.

use serde_json::Value;

use super::OpenCall;
use crate::api::hosted;
use crate::api::items::{
    ContentPart, CustomToolCall, FunctionCall, Item, Message, Reasoning, Role, Status, TextPart,
};
use crate::api::response::{InputTokensDetails, OutputTokensDetails, Usage};
use crate::chat::{ChatUsage, ToolKind};

/// The `error.code` of a failed Response. OpenAI's schema allows a fixed
/// set of codes there (typed clients reject others); the `error` event
/// carries the specific one.
pub(super) fn response_error_code(code: &str) -> &str {
    const CODES: [&str; 3] = ["server_error", "rate_limit_exceeded", "invalid_prompt"];
    if CODES.contains(&code) {
        code
    } else {
        "server_error"
    }
}

pub(super) fn reasoning_item(id: &str, text: &str, status: Status) -> Item {
    Item::Reasoning(Reasoning {
        id: Some(id.to_owned()),
        summary: Vec::new(),
        content: Some(vec![TextPart {
            kind: "reasoning_text".to_owned(),
            text: text.to_owned(),
        }]),
        encrypted_content: None,
        status: Some(status),
    })
}

pub(super) fn message_item(id: &str, part: ContentPart, status: Status) -> Item {
    Item::Message(Message {
        id: Some(id.to_owned()),
        role: Role::Assistant,
        content: vec![part],
        status: Some(status),
        phase: None,
    })
}

pub(super) fn call_item(
    call: &OpenCall,
    kind: &ToolKind,
    arguments: String,
    status: Status,
) -> Item {
    match kind {
        ToolKind::Function { name, namespace } => Item::FunctionCall(FunctionCall {
            id: Some(call.item_id.clone()),
            call_id: call.call_id.clone(),
            name: name.clone(),
            arguments,
            namespace: namespace.clone(),
            status: Some(status),
        }),
        ToolKind::Mcp {
            server,
            name,
            approval: true,
        } => hosted::approval_request(&call.item_id, server, name, &arguments),
        ToolKind::Mcp { server, name, .. } => {
            hosted::call(&call.item_id, server, name, &arguments, None, None)
        }
        ToolKind::WebSearch => hosted::web_search_call(&call.item_id, "in_progress", "", None),
        ToolKind::Custom { name } => Item::CustomToolCall(CustomToolCall {
            id: Some(call.item_id.clone()),
            call_id: call.call_id.clone(),
            name: name.clone(),
            input: custom_input(&arguments),
            namespace: None,
            status: Some(status),
        }),
    }
}

/// The raw input of a custom tool from the `{"input": "..."}` arguments the
/// backend produced; arguments of another shape are passed on verbatim.
pub(super) fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => match map.get("input") {
            Some(Value::String(input)) => input.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

pub(super) fn usage(chat: ChatUsage) -> Usage {
    let detail = |v: &Option<Value>, key: &str| {
        v.as_ref()
            .and_then(|d| d.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input_tokens: chat.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: detail(&chat.prompt_tokens_details, "cached_tokens"),
            cache_write_tokens: 0,
        },
        output_tokens: chat.completion_tokens,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: detail(&chat.completion_tokens_details, "reasoning_tokens"),
        },
        total_tokens: chat
            .total_tokens
            .unwrap_or_else(|| chat.prompt_tokens.saturating_add(chat.completion_tokens)),
    }
}
