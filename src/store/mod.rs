//! Where responses live: the storage layout on a key-value store.
//!
//! # Layout
//!
//! All keys of one API key's data start with its tenant prefix, so tenants
//! never see each other's responses.
//!
//! - `{tenant}/resp/{id}`: a small [`Pointer`] to where the response lives.
//! - `{tenant}/log/{thread}/{slot}`: a conversation log. Each turn (one
//!   response with its input items) is one JSON document, split into slots of
//!   at most [`SLOT_BYTES`], so no value gets near the per-value limits of
//!   Redis, DynamoDB or Cosmos.
//! - `{tenant}/len/{thread}`: the number of slots a thread has allocated,
//!   advanced with an atomic increment.
//! - `{tenant}/item/{item id}`: the id of the response whose turn holds an
//!   item, so `item_reference` inputs resolve without `previous_response_id`.
//!   Written in the same batch as the turn.
//!
//! A continuation appends its turn to its parent's thread when the parent is
//! the thread's last turn; otherwise (a branch) it starts a new thread and its
//! pointer refers to the parent's slots. A pointer lists the slot ranges
//! (segments) of the whole conversation, so replaying a chain of any depth
//! takes one `get` plus one `get-many`, and each turn is stored once: bytes
//! grow linearly with the conversation.

mod kv;
mod record;

pub use kv::{Kv, KvError, MemoryKv};
pub use record::KeptChat;

use serde::{Deserialize, Serialize};

use crate::api::items::Item;
use crate::api::response::Response;
use crate::error::ApiError;

/// Largest value written to the key-value store.
pub const SLOT_BYTES: usize = 192 * 1024;

/// A contiguous range of slots of one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub thread: String,
    pub start: u64,
    pub end: u64,
}

/// Where a response's turn and its conversation are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The whole conversation, oldest first; the last segment ends with this
    /// response's own turn.
    pub segments: Vec<Segment>,
    /// This response's own turn.
    pub turn: Segment,
    /// Unix time after which the response is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// One response with the input items it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub response: Response,
    pub input: Vec<Item>,
}

/// A stored conversation up to and including a response, as read: its
/// turns are decoded on demand, in the form the caller needs.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub pointer: Pointer,
    log: Vec<u8>,
}

/// The id, input and output of a stored turn.
#[derive(Debug, Clone)]
pub struct TurnItems {
    pub id: String,
    pub input: Vec<Item>,
    pub output: Vec<Item>,
}

impl Conversation {
    /// Every turn's id and items, oldest first.
    pub fn turns(&self) -> Result<Vec<TurnItems>, ApiError> {
        record::decode_items(&self.log)
    }

    /// Every item of the conversation in order: each turn's input, then its
    /// output.
    pub fn items(&self) -> Result<Vec<Item>, ApiError> {
        let turns = self.turns()?;
        let mut items =
            Vec::with_capacity(turns.iter().map(|t| t.input.len() + t.output.len()).sum());
        for turn in turns {
            items.extend(turn.input);
            items.extend(turn.output);
        }
        Ok(items)
    }

    /// The chat messages every turn kept, in order, when all of them kept
    /// messages rendered with this `reasoning` setting.
    pub fn kept_chat(
        &self,
        reasoning: bool,
    ) -> Result<Option<Vec<Box<serde_json::value::RawValue>>>, ApiError> {
        record::decode_chat(&self.log, reasoning)
    }
}

/// Responses on a key-value store, scoped to one tenant.
pub struct ResponseStore<'a, K: Kv> {
    kv: &'a K,
    tenant: String,
}

impl<'a, K: Kv> ResponseStore<'a, K> {
    /// The store of `tenant` (a stable, non-secret name for an API key).
    pub fn new(kv: &'a K, tenant: impl Into<String>) -> Self {
        Self {
            kv,
            tenant: tenant.into(),
        }
    }

    fn pointer_key(&self, id: &str) -> String {
        format!("{}/resp/{id}", self.tenant)
    }

    fn slot_key(&self, thread: &str, slot: u64) -> String {
        format!("{}/log/{thread}/{slot}", self.tenant)
    }

    fn len_key(&self, thread: &str) -> String {
        format!("{}/len/{thread}", self.tenant)
    }

    fn item_key(&self, item: &str) -> String {
        format!("{}/item/{item}", self.tenant)
    }

    /// The index keys of a turn's items.
    fn item_keys(&self, turn: &Turn) -> Vec<String> {
        turn.input
            .iter()
            .chain(turn.response.output.iter())
            .filter(|item| !matches!(item, Item::ItemReference(_)))
            .filter_map(Item::id)
            .map(|id| self.item_key(id))
            .collect()
    }

    /// A stored item by id, from whichever live response holds it.
    pub fn item(&self, id: &str, now: i64) -> Result<Option<Item>, ApiError> {
        let Some(owner) = self.kv.get(&self.item_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        let owner = String::from_utf8_lossy(&owner);
        let Some(turn) = self.turn(&owner, now)? else {
            return Ok(None);
        };
        let items = turn.input.iter().chain(turn.response.output.iter());
        Ok(items
            .into_iter()
            .find(|item| item.id() == Some(id))
            .cloned())
    }

    /// The pointer of a live response; `None` if absent or expired.
    fn pointer(&self, id: &str, now: i64) -> Result<Option<Pointer>, ApiError> {
        let Some(bytes) = self.kv.get(&self.pointer_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        let pointer: Pointer = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::server(format!("Stored response {id} is unreadable: {e}")))?;
        // Whole seconds: a response lives at least its TTL, at most one second more.
        if pointer.expires_at.is_some_and(|t| t < now) {
            return Ok(None);
        }
        Ok(Some(pointer))
    }

    /// Reads the slots of `segments` with one batch read, in order.
    fn read_log(&self, segments: &[Segment]) -> Result<Vec<u8>, ApiError> {
        let keys: Vec<String> = segments
            .iter()
            .flat_map(|s| (s.start..s.end).map(move |slot| (s.thread.as_str(), slot)))
            .map(|(thread, slot)| self.slot_key(thread, slot))
            .collect();
        let values = self.kv.get_many(keys).map_err(storage)?;
        let mut bytes = Vec::with_capacity(values.iter().flatten().map(Vec::len).sum());
        for value in values {
            let Some(value) = value else {
                return Err(ApiError::not_found(
                    "Part of this conversation is no longer stored (it was deleted or expired).",
                ));
            };
            bytes.extend_from_slice(&value);
        }
        Ok(bytes)
    }

    /// A conversation up to and including response `id`.
    pub fn conversation(&self, id: &str, now: i64) -> Result<Option<Conversation>, ApiError> {
        let Some(pointer) = self.pointer(id, now)? else {
            return Ok(None);
        };
        let log = self.read_log(&pointer.segments)?;
        Ok(Some(Conversation { pointer, log }))
    }

    /// A response's own turn.
    pub fn turn(&self, id: &str, now: i64) -> Result<Option<Turn>, ApiError> {
        let Some(pointer) = self.pointer(id, now)? else {
            return Ok(None);
        };
        let mut turns = record::decode_turns(&self.read_log(std::slice::from_ref(&pointer.turn))?)?;
        Ok(turns.pop())
    }

    /// Stores `turn`, with the chat messages it renders to if they were
    /// kept, as the continuation of `parent` (or as a new conversation).
    /// `expires_at` bounds its life.
    pub fn save(
        &self,
        turn: &Turn,
        chat: Option<&KeptChat>,
        parent: Option<&Pointer>,
        expires_at: Option<i64>,
    ) -> Result<(), ApiError> {
        let bytes = record::encode(turn, chat)?;
        let chunks: Vec<&[u8]> = bytes.chunks(SLOT_BYTES).collect();
        let count = chunks.len() as u64;
        let (segments, own) = self.allocate(&turn.response.id, parent, count)?;
        let pointer = Pointer {
            segments,
            turn: own.clone(),
            expires_at,
        };
        let mut entries: Vec<(String, Vec<u8>)> = chunks
            .into_iter()
            .zip(own.start..own.end)
            .map(|(chunk, slot)| (self.slot_key(&own.thread, slot), chunk.to_vec()))
            .collect();
        let pointer_bytes = serde_json::to_vec(&pointer)
            .map_err(|e| ApiError::server(format!("Pointer could not be encoded: {e}")))?;
        let owner = turn.response.id.as_bytes();
        entries.extend(
            self.item_keys(turn)
                .into_iter()
                .map(|key| (key, owner.to_vec())),
        );
        entries.push((self.pointer_key(&turn.response.id), pointer_bytes));
        self.kv.set_many(entries).map_err(storage)
    }

    /// Reserves `count` slots: after the parent on its thread when the parent
    /// is the thread's end, else on a new thread named after the response.
    fn allocate(
        &self,
        id: &str,
        parent: Option<&Pointer>,
        count: u64,
    ) -> Result<(Vec<Segment>, Segment), ApiError> {
        let delta = i64::try_from(count).map_err(|_| ApiError::server("Response too large"))?;
        if let Some(parent) = parent {
            let thread = &parent.turn.thread;
            let end = self
                .kv
                .increment(&self.len_key(thread), delta)
                .map_err(storage)?;
            let end = u64::try_from(end).unwrap_or(0);
            if end.checked_sub(count) == Some(parent.turn.end) {
                let own = Segment {
                    thread: thread.clone(),
                    start: parent.turn.end,
                    end,
                };
                let mut segments = parent.segments.clone();
                match segments.last_mut() {
                    Some(last) if last.thread == own.thread && last.end == own.start => {
                        last.end = own.end
                    }
                    _ => segments.push(own.clone()),
                }
                return Ok((segments, own));
            }
            // The parent is not the end of its thread: branch.
            let (_, own) = self.new_thread(id, delta)?;
            let mut segments = parent.segments.clone();
            segments.push(own.clone());
            return Ok((segments, own));
        }
        self.new_thread(id, delta)
    }

    fn new_thread(&self, id: &str, delta: i64) -> Result<(Vec<Segment>, Segment), ApiError> {
        let end = self
            .kv
            .increment(&self.len_key(id), delta)
            .map_err(storage)?;
        let end = u64::try_from(end).unwrap_or(0);
        let own = Segment {
            thread: id.to_owned(),
            start: end.saturating_sub(delta as u64),
            end,
        };
        Ok((vec![own.clone()], own))
    }

    /// Deletes a response: its pointer, its own turn's slots and its items'
    /// index entries. Returns whether it existed.
    pub fn delete(&self, id: &str, now: i64) -> Result<bool, ApiError> {
        let Some(pointer) = self.pointer(id, now)? else {
            return Ok(false);
        };
        // A turn that can no longer be read still has its pointer and slots removed.
        let turns = self
            .read_log(std::slice::from_ref(&pointer.turn))
            .and_then(|bytes| record::decode_turns(&bytes))
            .unwrap_or_default();
        let mut keys: Vec<String> = (pointer.turn.start..pointer.turn.end)
            .map(|slot| self.slot_key(&pointer.turn.thread, slot))
            .collect();
        for turn in &turns {
            keys.extend(self.item_keys(turn));
        }
        keys.push(self.pointer_key(id));
        self.kv.delete_many(keys).map_err(storage)?;
        Ok(true)
    }
}

fn storage(e: KvError) -> ApiError {
    ApiError::server(format!("The key-value store failed: {e}"))
}

/// Finds the item with `id` in `items`, for `item_reference` inputs.
pub fn find_item<'i>(items: &'i [Item], id: &str) -> Option<&'i Item> {
    items.iter().find(|item| item.id() == Some(id))
}

#[cfg(test)]
mod tests;
