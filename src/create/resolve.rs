//! Step 3 of a create, resolving state: the conversation
//! `previous_response_id` continues, the request's input with ids given and
//! item references replaced by the items they name, and the replay, as the
//! chat messages earlier turns kept plus the messages rendered now.
//!
//! Kept messages are passed on as stored bytes; when a turn kept none (or
//! the new input opens with a tool call that joins the last assistant
//! message, or declines an approval request of an earlier turn, which
//! renders as that request's call), the whole conversation is rendered
//! from its items instead.
//!
//! A request in a conversation object (`conversation`) has that
//! conversation's items as its history, rendered with its input.

use super::truncate::{self, Budget};
use crate::api::hosted::HostedItem;
use crate::api::items::{Item, Status};
use crate::api::request::{CreateRequest, Input};
use crate::chat::{ChatMessage, KeptMessages, Rendered};
use crate::error::ApiError;
use crate::ids::Env;
use crate::store::conversations::Conversations;
use crate::store::{find_item, Conversation, Kv, ResponseStore, TurnItems};

/// What a request continues and adds.
pub struct Resolved {
    /// The request's input as it will be stored.
    pub input: Vec<Item>,
    /// The conversation it continues.
    pub parent: Option<Conversation>,
    /// Messages of earlier turns, as they were kept.
    pub kept: KeptMessages,
    /// Messages rendered now: the input, or the whole conversation.
    pub rendered: Vec<ChatMessage>,
    /// `context_management`: the history to compact before the request
    /// is sent, when it passed the threshold. `rendered` is then the input
    /// alone, to follow the compaction.
    pub to_compact: Option<Vec<Item>>,
    /// The MCP items of the history (listings, approval requests, calls),
    /// when the request names an MCP server or answers an approval.
    pub mcp_history: Vec<Item>,
}

/// How a replay is rendered.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Whether earlier reasoning is passed on to the backend.
    pub send_reasoning: bool,
    /// The model's context window in tokens, when one is configured and
    /// the request asks for `truncation: "auto"`.
    pub window: Option<u64>,
    /// Tokens past which the history is compacted first
    /// (`context_management`).
    pub compact_at: Option<u64>,
}

/// Resolves `request` against the caller's `store` and `conversations`.
pub fn resolve<K: Kv>(
    request: &CreateRequest,
    store: &ResponseStore<'_, K>,
    conversations: &Conversations<'_, K>,
    env: &Env,
    replay: Replay,
) -> Result<Resolved, ApiError> {
    match &request.conversation {
        Some(id) => in_conversation(request, id, store, conversations, env, replay),
        None => continuing(request, store, env, replay),
    }
}

/// A request on its own or continuing `previous_response_id`.
fn continuing<K: Kv>(
    request: &CreateRequest,
    store: &ResponseStore<'_, K>,
    env: &Env,
    replay: Replay,
) -> Result<Resolved, ApiError> {
    let send_reasoning = replay.send_reasoning;
    let parent = match &request.previous_response_id {
        Some(id) => Some(previous(store, id, env.now())?),
        None => None,
    };
    // References are resolved against the conversation's items; without
    // them the items are only read if the turns kept no messages.
    let references = request.input.as_ref().is_some_and(Input::has_references);
    let mut history = match &parent {
        Some(conversation) if references => conversation.items()?,
        _ => Vec::new(),
    };
    let input = prepare_input(request.input.clone(), &history, store, env)?;
    let rendered = Rendered::new(&input, send_reasoning);
    // A replay that may have to be cut to fit a window is rendered from
    // its items.
    let kept = match &parent {
        None => Some(KeptMessages::default()),
        Some(_) if rendered.leading_call || rendered.detached_answer => None,
        Some(_) if replay.window.is_some() => None,
        Some(_) if replay.compact_at.is_some() => None,
        Some(conversation) => conversation.kept_chat(send_reasoning)?,
    };
    let mcp_history = match &parent {
        Some(conversation) if uses_mcp(request, &input) => match history.is_empty() {
            true => mcp_items(conversation.items()?),
            false => mcp_items(history.clone()),
        },
        _ => Vec::new(),
    };
    let mut to_compact = None;
    let (kept, rendered) = match kept {
        Some(kept) => (kept, rendered.messages),
        None => {
            let turns = parent.as_ref().map(Conversation::turns).transpose()?;
            history = context_items(turns.unwrap_or_default());
            if past_threshold(request, &history, &input, replay) {
                to_compact = Some(history);
                (KeptMessages::default(), rendered.messages)
            } else {
                let mut history = fit(request, history, &input, replay);
                history.extend(input.iter().cloned());
                let all = Rendered::new(&history, send_reasoning).messages;
                (KeptMessages::default(), all)
            }
        }
    };
    Ok(Resolved {
        input,
        parent,
        kept,
        rendered,
        to_compact,
        mcp_history,
    })
}

/// Whether `request` names an MCP server or answers an approval request.
fn uses_mcp(request: &CreateRequest, input: &[Item]) -> bool {
    let tools = request.tools.as_deref().unwrap_or_default();
    tools
        .iter()
        .any(|t| t.get("type").and_then(serde_json::Value::as_str) == Some("mcp"))
        || input.iter().any(|item| HostedItem::read(item).is_some())
}

/// The MCP items of `items`.
fn mcp_items(items: Vec<Item>) -> Vec<Item> {
    items
        .into_iter()
        .filter(|item| HostedItem::read(item).is_some())
        .collect()
}

/// The items a replay sends, from its turns: each turn's input and output,
/// except that a turn whose output opens with a `compaction` item (made by
/// `context_management`) stands for everything before it: the compaction,
/// then its input and the rest of its output.
fn context_items(turns: Vec<TurnItems>) -> Vec<Item> {
    let mut items = Vec::new();
    for turn in turns {
        let mut output = turn.output.into_iter().peekable();
        if output.peek().is_some_and(Item::is_compaction) {
            items.clear();
            items.extend(output.next());
        }
        items.extend(turn.input);
        items.extend(output);
    }
    items
}

/// Bytes of the request besides its history: instructions and tools.
fn request_bytes(request: &CreateRequest) -> usize {
    let instructions = request.instructions.as_deref().map_or(0, str::len);
    let tools: usize = request
        .tools
        .iter()
        .flatten()
        .map(|t| serde_json::to_vec(t).map_or(0, |b| b.len()))
        .sum();
    instructions + tools
}

/// Whether `context_management` asks for the history to be compacted: it
/// has one, and with it the request passes the threshold (estimated as
/// `truncation` estimates).
fn past_threshold(
    request: &CreateRequest,
    history: &[Item],
    input: &[Item],
    replay: Replay,
) -> bool {
    let Some(threshold) = replay.compact_at else {
        return false;
    };
    let bytes =
        request_bytes(request) + truncate::items_bytes(history) + truncate::items_bytes(input);
    !history.is_empty()
        && bytes / truncate::BYTES_PER_TOKEN > usize::try_from(threshold).unwrap_or(usize::MAX)
}

/// A request in conversation object `id`: its items are the history.
fn in_conversation<K: Kv>(
    request: &CreateRequest,
    id: &str,
    store: &ResponseStore<'_, K>,
    conversations: &Conversations<'_, K>,
    env: &Env,
    replay: Replay,
) -> Result<Resolved, ApiError> {
    let read = conversations.read(id)?.ok_or_else(|| {
        ApiError::not_found(format!("Conversation with id '{id}' not found."))
            .with_param("conversation")
    })?;
    let input = prepare_input(request.input.clone(), &read.items, store, env)?;
    let mcp_history = match uses_mcp(request, &input) {
        true => mcp_items(read.items.clone()),
        false => Vec::new(),
    };
    // A compaction made here stands for everything before it.
    let start = read
        .record
        .context_from
        .as_deref()
        .and_then(|from| read.items.iter().position(|item| item.id() == Some(from)));
    let mut context = read.items;
    context.drain(..start.unwrap_or(0));
    if past_threshold(request, &context, &input, replay) {
        return Ok(Resolved {
            rendered: Rendered::new(&input, replay.send_reasoning).messages,
            input,
            parent: None,
            kept: KeptMessages::default(),
            to_compact: Some(context),
            mcp_history,
        });
    }
    let mut history = fit(request, context, &input, replay);
    history.extend(input.iter().cloned());
    Ok(Resolved {
        input,
        parent: None,
        kept: KeptMessages::default(),
        rendered: Rendered::new(&history, replay.send_reasoning).messages,
        to_compact: None,
        mcp_history,
    })
}

/// `truncation: "auto"`: the history without its oldest items, when with
/// them the request would not fit the model's window (see [`truncate`]).
fn fit(request: &CreateRequest, history: Vec<Item>, input: &[Item], replay: Replay) -> Vec<Item> {
    let Some(window) = replay.window else {
        return history;
    };
    let budget = Budget {
        window,
        reserve: request.max_output_tokens.unwrap_or(0),
        fixed_bytes: request_bytes(request) + truncate::items_bytes(input),
    };
    truncate::drop_oldest(history, &budget)
}

/// The stored conversation `previous_response_id` names, or 404 on that
/// parameter.
pub(crate) fn previous<K: Kv>(
    store: &ResponseStore<'_, K>,
    id: &str,
    now: i64,
) -> Result<Conversation, ApiError> {
    store
        .conversation(id, now)
        .and_then(|found| {
            found.ok_or_else(|| {
                ApiError::not_found(format!("Previous response with id '{id}' not found."))
            })
        })
        .map_err(|e| match e.status {
            404 if running(store, id, now) => ApiError::invalid_param(
                "previous_response_id",
                format!(
                    "Previous response with id '{id}' is still in progress; \
                     continue from it once it has finished."
                ),
            ),
            404 => e.with_param("previous_response_id"),
            _ => e,
        })
}

/// Whether `id` is a background response still running.
fn running<K: Kv>(store: &ResponseStore<'_, K>, id: &str, now: i64) -> bool {
    let job = store.jobs().read_at(id, now);
    job.ok().flatten().is_some_and(|job| job.running())
}

/// The request's input as stored: ids assigned, assistant text normalized,
/// item references resolved against the earlier conversation, else against
/// every stored response of the caller.
pub fn prepare_input<K: Kv>(
    input: Option<Input>,
    history: &[Item],
    store: &ResponseStore<'_, K>,
    env: &Env,
) -> Result<Vec<Item>, ApiError> {
    let items = input.map(Input::into_items).unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let item = match item {
            Item::ItemReference(reference) => {
                let known = find_item(history, &reference.id)
                    .or_else(|| find_item(&out, &reference.id))
                    .cloned();
                let found = match known {
                    Some(item) => Some(item),
                    None => store.item(&reference.id, env.now())?,
                };
                found.ok_or_else(|| {
                    ApiError::not_found(format!("Item with id '{}' not found.", reference.id))
                        .with_param(format!("input[{i}].id"))
                })?
            }
            other => other,
        };
        out.push(with_id(item, env));
    }
    Ok(out)
}

/// The id prefix of an item kept as it was sent ([`Item::Other`]), by its
/// `type`: typed clients require an `id` on every listed item.
fn other_prefix(kind: &str) -> &'static str {
    match kind {
        // Not `mcpr`, which the approval requests it answers have.
        "mcp_approval_response" => "mcpa",
        "compaction" => "cmp",
        _ => "item",
    }
}

/// Gives an input item the id and status a stored item has.
pub fn with_id(mut item: Item, env: &Env) -> Item {
    match &mut item {
        Item::Message(m) => {
            m.normalize();
            m.id.get_or_insert_with(|| env.new_id("msg"));
            m.status.get_or_insert(Status::Completed);
        }
        Item::FunctionCall(c) => {
            c.id.get_or_insert_with(|| env.new_id("fc"));
            c.status.get_or_insert(Status::Completed);
        }
        Item::FunctionCallOutput(o) => {
            o.id.get_or_insert_with(|| env.new_id("fco"));
            o.status.get_or_insert(Status::Completed);
        }
        Item::CustomToolCall(c) => {
            c.id.get_or_insert_with(|| env.new_id("ctc"));
        }
        Item::CustomToolCallOutput(o) => {
            o.id.get_or_insert_with(|| env.new_id("ctco"));
        }
        Item::Reasoning(r) => {
            r.id.get_or_insert_with(|| env.new_id("rs"));
        }
        Item::Other(serde_json::Value::Object(fields)) => {
            let kind = fields.get("type").and_then(serde_json::Value::as_str);
            let has_id = fields.get("id").is_some_and(|id| !id.is_null());
            if let (Some(kind), false) = (kind, has_id) {
                let id = env.new_id(other_prefix(kind));
                fields.insert("id".to_owned(), serde_json::Value::String(id));
            }
        }
        Item::ItemReference(_) | Item::Other(_) => {}
    }
    item
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn given_id(item: Value) -> Value {
        let (env, _) = crate::ids::fixed::env(0);
        let item: Item = serde_json::from_value(item).unwrap();
        serde_json::to_value(with_id(item, &env)).unwrap()
    }

    #[test]
    fn items_kept_as_sent_are_given_an_id() {
        let answer = given_id(json!({"type": "mcp_approval_response",
                                     "approval_request_id": "mcpr_1", "approve": false}));
        let id = answer["id"].as_str().unwrap();
        assert!(id.starts_with("mcpa_"), "{id}");
        assert_eq!(answer["approval_request_id"], "mcpr_1");
        let compaction = given_id(json!({"type": "compaction", "encrypted_content": "x"}));
        assert!(compaction["id"].as_str().unwrap().starts_with("cmp_"));
        // An id given stays.
        let listed = given_id(json!({"type": "mcp_list_tools", "id": "mcpl_9",
                                     "server_label": "s", "tools": []}));
        assert_eq!(listed["id"], "mcpl_9");
    }
}
