//! Step 6 of a create, storing: the response with its input, the chat
//! messages the turn renders to (kept when they read the same whatever
//! turns come before and after), and its place in the conversation it
//! continues. Runs before the terminal event, so a response is readable and
//! continuable the moment its client hears it is done.

use crate::api::items::Item;
use crate::api::response::Response;
use crate::chat::Rendered;
use crate::error::ApiError;
use crate::store::{Conversation, KeptChat, Kv, ResponseStore, Turn};

/// What a finished create stores.
pub struct Finished<'a> {
    pub response: &'a Response,
    pub input: &'a [Item],
    pub parent: Option<&'a Conversation>,
    /// Whether earlier reasoning is passed on to the backend.
    pub send_reasoning: bool,
    /// When the response expires, in seconds since the epoch.
    pub expires_at: Option<i64>,
}

/// Stores a finished create in the caller's store.
pub fn save<K: Kv>(store: &ResponseStore<'_, K>, finished: Finished<'_>) -> Result<(), ApiError> {
    let turn = Turn {
        response: finished.response.clone(),
        input: finished.input.to_vec(),
    };
    let chat = kept_chat(&turn, finished.send_reasoning)?;
    store.save(&turn, chat.as_ref(), finished.parent, finished.expires_at)
}

/// The chat messages `turn` renders to, kept with it when they read the
/// same whatever turns come before and after.
fn kept_chat(turn: &Turn, send_reasoning: bool) -> Result<Option<KeptChat>, ApiError> {
    let items = turn.input.iter().chain(&turn.response.output);
    let rendered = Rendered::new(items, send_reasoning);
    // A turn that compacted what came before it is replayed from items,
    // which know to leave that out.
    let compacted = turn
        .response
        .output
        .first()
        .is_some_and(Item::is_compaction);
    if !rendered.self_contained() || compacted {
        return Ok(None);
    }
    let messages = serde_json::to_vec(&rendered.messages)
        .map_err(|e| ApiError::server(format!("Chat messages could not be encoded: {e}")))?;
    Ok(Some(KeptChat {
        reasoning: send_reasoning,
        messages,
    }))
}
