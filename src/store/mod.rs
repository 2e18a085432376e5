//! Where responses live: the storage layout on a key-value store.
//!
//! # Layout
//!
//! All keys of one API key's data start with its tenant prefix, so tenants
//! never see each other's responses.
//!
//! - `{tenant}/resp/{id}`: a small [`Pointer`] to where the response lives.
//! - `{tenant}/log/{thread}/{slot}`: a conversation log. Each turn (one
//!   response with its input items, and the chat messages it renders to,
//!   laid out as the `record` module describes) is split into slots of at most
//!   [`SLOT_BYTES`], so no value gets near the per-value limits of Redis,
//!   DynamoDB or Cosmos.
//! - `{tenant}/pack/{thread}/{start}`: the bytes of slots `start` to
//!   `start + PACK_SLOTS` of a thread again, in one value, so a long replay
//!   reads a few values instead of one per turn. Written by the turn that
//!   completes the run, in the same batch, when the run fits in one value;
//!   the segments of a pointer list the packs that exist.
//! - `{tenant}/len/{thread}`: the number of slots a thread has allocated,
//!   advanced with an atomic increment.
//! - `{tenant}/cut/{thread}`: how many turns of a thread were deleted, an
//!   atomic counter. A pack carries the count its writer read with the
//!   slots it repeats, and is used only while the count is unchanged: a
//!   turn deleted while a continuation was waiting on the backend never
//!   comes back inside the pack that continuation writes.
//! - `{tenant}/exp/{thread}`: when the thread may go, in seconds since the
//!   epoch: the latest expiry of the responses whose conversations use its
//!   slots. Each save writes it for every thread its conversation reads.
//!   [`retention`] keeps the index that finds threads past it.
//! - `{tenant}/shared/{thread}/{hash}`: a large `tools` or `instructions`
//!   of a turn, stored once per thread however many turns repeat it (see
//!   `record`); a turn whose parent on the same thread had the same one
//!   writes nothing. It goes with its thread.
//! - `{tenant}/item/{item id}`: the id of the response whose turn holds an
//!   item, so `item_reference` inputs resolve without `previous_response_id`.
//!   Written in the same batch as the turn.
//!
//! A continuation appends its turn to its parent's thread when the parent is
//! the thread's last turn; otherwise (a branch) it starts a new thread and its
//! pointer refers to the parent's slots. The replay reads the thread's length
//! in its batch, so a branch does not spend an increment on that thread. A pointer lists the slot ranges
//! (segments) of the whole conversation, so replaying a chain of any depth
//! takes one `get` plus one `get-many`, and each turn is stored once: bytes
//! grow linearly with the conversation.
//!
//! A save writes the turn's slots, pack and item index first and its
//! pointer last, in a batch of its own: the pointer is the commit record.
//! A save cut short leaves slots no pointer refers to, which
//! [`retention`] removes with their thread; never a half-readable
//! response.
//!
//! The module is long because every read and write of that layout is a
//! method of [`ResponseStore`], next to the keys it builds; how one turn is
//! encoded is in `record`.

pub mod background;
pub mod conversations;
mod kv;
mod record;
pub mod retention;
pub mod usage;

#[cfg(test)]
pub use kv::MemoryKv;
pub use kv::{Kv, KvError};
pub use record::KeptChat;

use serde::{Deserialize, Serialize};

use crate::api::items::Item;
use crate::api::response::Response;
use crate::error::ApiError;

/// Largest value written to the key-value store.
pub const SLOT_BYTES: usize = 192 * 1024;

/// Slots per pack; packs start at multiples of this.
pub const PACK_SLOTS: u64 = 16;

/// A contiguous range of slots of one thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub thread: String,
    pub start: u64,
    pub end: u64,
    /// The first slots of the packs of this range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<u64>,
}

/// One value to read for a log.
enum Piece<'s> {
    Pack(&'s str, u64),
    Slot(&'s str, u64),
}

impl Segment {
    fn new(thread: impl Into<String>, start: u64, end: u64) -> Self {
        Segment {
            thread: thread.into(),
            start,
            end,
            packs: Vec::new(),
        }
    }

    /// The values that hold this range: its packs, and single slots
    /// elsewhere.
    fn pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces = Vec::new();
        let mut slot = self.start;
        while slot < self.end {
            let packed = self.packs.contains(&slot)
                && slot
                    .checked_add(PACK_SLOTS)
                    .is_some_and(|end| end <= self.end);
            if packed {
                pieces.push(Piece::Pack(&self.thread, slot));
                slot += PACK_SLOTS;
            } else {
                pieces.push(Piece::Slot(&self.thread, slot));
                slot += 1;
            }
        }
        pieces
    }
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
    /// The parts of this response's turn stored apart, on its thread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

/// Most slots a stored pointer may name: far beyond any conversation
/// (192 GiB), near enough that a damaged pointer cannot make a read
/// allocate without bound.
const MAX_POINTER_SLOTS: u64 = 1 << 20;

impl Pointer {
    /// Whether the pointer is one this module could have written: ranges
    /// in order and, together, at most [`MAX_POINTER_SLOTS`] slots.
    fn check(&self) -> Result<(), String> {
        let mut total: u64 = 0;
        for segment in self.segments.iter().chain(std::iter::once(&self.turn)) {
            let len = segment
                .end
                .checked_sub(segment.start)
                .ok_or("a segment ends before it starts")?;
            total = total.saturating_add(len);
        }
        if total > MAX_POINTER_SLOTS {
            return Err(format!("it names {total} slots"));
        }
        Ok(())
    }
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
    log: Log,
    /// Slots allocated on the thread the response ends, when read.
    thread_len: Option<u64>,
    /// Turns deleted from that thread, when read.
    thread_cut: u64,
}

/// A log read with the values of more keys.
struct LogRead {
    log: Log,
    also: Vec<Option<Vec<u8>>>,
    /// The cut counter of the last segment's thread.
    last_cut: u64,
}

/// The bytes of a run of segments, as read.
#[derive(Debug, Clone, Default)]
struct Log {
    bytes: Vec<u8>,
    /// The slots read one by one at the end of the last segment, with
    /// where each starts in `bytes`: what completing a pack needs.
    loose: Vec<(u64, usize)>,
}

/// The id, input and output of a stored turn.
#[derive(Debug, Clone)]
pub struct TurnItems {
    pub id: String,
    pub input: Vec<Item>,
    pub output: Vec<Item>,
    /// The hashes of the parts of the turn stored apart.
    pub shared: Vec<String>,
}

impl Conversation {
    /// Every turn's id and items, oldest first.
    pub fn turns(&self) -> Result<Vec<TurnItems>, ApiError> {
        record::decode_items(&self.log.bytes)
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
    ) -> Result<Option<crate::chat::KeptMessages>, ApiError> {
        record::decode_chat(&self.log.bytes, reasoning)
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

    /// The tenant's background jobs.
    pub fn jobs(&self) -> background::Jobs<'_, K> {
        background::Jobs::new(self.kv, &self.tenant)
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

    fn cut_key(&self, thread: &str) -> String {
        format!("{}/cut/{thread}", self.tenant)
    }

    fn shared_key(&self, thread: &str, hash: &str) -> String {
        format!("{}/shared/{thread}/{hash}", self.tenant)
    }

    fn exp_key(&self, thread: &str) -> String {
        format!("{}/exp/{thread}", self.tenant)
    }

    fn pack_key(&self, thread: &str, start: u64) -> String {
        format!("{}/pack/{thread}/{start}", self.tenant)
    }

    fn piece_key(&self, piece: &Piece<'_>) -> String {
        match piece {
            Piece::Pack(thread, start) => self.pack_key(thread, *start),
            Piece::Slot(thread, slot) => self.slot_key(thread, *slot),
        }
    }

    fn item_key(&self, item: &str) -> String {
        format!("{}/item/{item}", self.tenant)
    }

    /// The index keys of a turn's items.
    fn item_keys<'i>(&self, items: impl Iterator<Item = &'i Item>) -> Vec<String> {
        indexed_ids(items).map(|id| self.item_key(id)).collect()
    }

    /// A stored item by id, from whichever live response holds it.
    pub fn item(&self, id: &str, now: i64) -> Result<Option<Item>, ApiError> {
        let Some(owner) = self.kv.get(&self.item_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        let owner = String::from_utf8_lossy(&owner);
        let Some(pointer) = self.pointer(&owner, now)? else {
            return Ok(None);
        };
        let log = self.read_log(std::slice::from_ref(&pointer.turn))?;
        let turns = record::decode_items(&log.bytes)?;
        Ok(turns
            .into_iter()
            .flat_map(|turn| turn.input.into_iter().chain(turn.output))
            .find(|item| item.id() == Some(id)))
    }

    /// The pointer of a live response; `None` if absent or expired.
    fn pointer(&self, id: &str, now: i64) -> Result<Option<Pointer>, ApiError> {
        let Some(bytes) = self.kv.get(&self.pointer_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        let unreadable =
            |e: String| ApiError::server(format!("Stored response {id} is unreadable: {e}"));
        let pointer: Pointer =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        pointer.check().map_err(unreadable)?;
        // Whole seconds: a response lives at least its TTL, at most one second more.
        if pointer.expires_at.is_some_and(|t| t < now) {
            return Ok(None);
        }
        Ok(Some(pointer))
    }

    /// Reads the slots of `segments`, in order, with one batch read (two if
    /// a pack the segments list is gone or stale), and notes where the loose
    /// slots at the end start.
    fn read_log(&self, segments: &[Segment]) -> Result<Log, ApiError> {
        self.read_log_and(segments, Vec::new()).map(|read| read.log)
    }

    /// [`Self::read_log`], reading the values of keys `also` in the same
    /// batch.
    /// The cut counters of the segments' threads come first in the batch,
    /// before the slots and packs they vouch for.
    fn read_log_and(&self, segments: &[Segment], also: Vec<String>) -> Result<LogRead, ApiError> {
        let mut threads: Vec<&str> = segments.iter().map(|s| s.thread.as_str()).collect();
        threads.dedup();
        let pieces: Vec<(usize, Piece<'_>)> = segments
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.pieces().into_iter().map(move |p| (i, p)))
            .collect();
        let mut keys: Vec<String> = threads.iter().map(|t| self.cut_key(t)).collect();
        keys.extend(pieces.iter().map(|(_, p)| self.piece_key(p)));
        let asked = also.len();
        keys.extend(also);
        let mut values = self.kv.get_many(keys).map_err(storage)?;
        let also = values.split_off(values.len().saturating_sub(asked));
        let cuts: Vec<(&str, u64)> = threads
            .iter()
            .zip(values.drain(..threads.len().min(values.len())))
            .map(|(thread, value)| (*thread, value.as_deref().and_then(counter).unwrap_or(0)))
            .collect();
        let cut_of = |thread: &str| {
            cuts.iter()
                .find(|(t, _)| *t == thread)
                .map_or(0, |(_, cut)| *cut)
        };
        // A pack written before a turn it repeats was deleted is not used.
        let values: Vec<Option<Vec<u8>>> = pieces
            .iter()
            .zip(values)
            .map(|((_, piece), value)| match piece {
                Piece::Pack(thread, _) => value.and_then(|v| untag_pack(v, cut_of(thread))),
                Piece::Slot(..) => value,
            })
            .collect();
        // A pack that is gone is read slot by slot.
        let unpacked: Vec<String> = pieces
            .iter()
            .zip(&values)
            .filter_map(|((_, piece), value)| match (piece, value) {
                (Piece::Pack(thread, start), None) => Some((*thread, *start)),
                _ => None,
            })
            .flat_map(|(thread, start)| (start..start + PACK_SLOTS).map(move |s| (thread, s)))
            .map(|(thread, slot)| self.slot_key(thread, slot))
            .collect();
        let mut unpacked = match unpacked.is_empty() {
            true => Vec::new(),
            false => self.kv.get_many(unpacked).map_err(storage)?,
        }
        .into_iter();
        let gone = || {
            ApiError::not_found(
                "Part of this conversation is no longer stored (it was deleted or expired).",
            )
        };
        let last = segments.len().saturating_sub(1);
        let mut bytes = Vec::with_capacity(values.iter().flatten().map(Vec::len).sum());
        let mut loose = Vec::new();
        for ((segment, piece), value) in pieces.iter().zip(values) {
            match (piece, value) {
                (Piece::Slot(_, slot), Some(value)) => {
                    if *segment == last {
                        loose.push((*slot, bytes.len()));
                    }
                    bytes.extend_from_slice(&value);
                }
                (Piece::Pack(..), Some(value)) => {
                    loose.clear();
                    bytes.extend_from_slice(&value);
                }
                (Piece::Pack(..), None) => {
                    loose.clear();
                    for _ in 0..PACK_SLOTS {
                        bytes.extend_from_slice(&unpacked.next().flatten().ok_or_else(gone)?);
                    }
                }
                (Piece::Slot(..), None) => return Err(gone()),
            }
        }
        let last_cut = segments.last().map_or(0, |s| cut_of(&s.thread));
        Ok(LogRead {
            log: Log { bytes, loose },
            also,
            last_cut,
        })
    }

    /// A conversation up to and including response `id`.
    pub fn conversation(&self, id: &str, now: i64) -> Result<Option<Conversation>, ApiError> {
        let Some(pointer) = self.pointer(id, now)? else {
            return Ok(None);
        };
        // The length of the thread the response ends, read with the log,
        // tells a continuation whether it can append to that thread.
        let len_key = self.len_key(&pointer.turn.thread);
        let read = self.read_log_and(&pointer.segments, vec![len_key])?;
        let len = read.also.into_iter().next().flatten();
        Ok(Some(Conversation {
            pointer,
            log: read.log,
            thread_len: len.as_deref().and_then(counter),
            thread_cut: read.last_cut,
        }))
    }

    /// A response's own turn.
    pub fn turn(&self, id: &str, now: i64) -> Result<Option<Turn>, ApiError> {
        let Some(pointer) = self.pointer(id, now)? else {
            return Ok(None);
        };
        // The parts stored apart are read with the turn's slots.
        let own = &pointer.turn;
        let keys = pointer
            .shared
            .iter()
            .map(|hash| self.shared_key(&own.thread, hash))
            .collect();
        let read = self.read_log_and(std::slice::from_ref(own), keys)?;
        let shared: Vec<(String, Vec<u8>)> = pointer
            .shared
            .iter()
            .cloned()
            .zip(read.also)
            .filter_map(|(hash, value)| Some((hash, value?)))
            .collect();
        let mut turns = record::decode_turns(&read.log.bytes, &shared)?;
        Ok(turns.pop())
    }

    /// Stores `turn`, with the chat messages it renders to if they were
    /// kept, as the continuation of `parent` (or as a new conversation).
    /// `expires_at` bounds its life.
    pub fn save(
        &self,
        turn: &Turn,
        chat: Option<&KeptChat>,
        parent: Option<&Conversation>,
        expires_at: Option<i64>,
    ) -> Result<(), ApiError> {
        let record::Encoded { bytes, shared } = record::encode(turn, chat)?;
        let chunks: Vec<&[u8]> = bytes.chunks(SLOT_BYTES).collect();
        let count = chunks.len() as u64;
        let (mut segments, own, new_thread) = self.allocate(&turn.response.id, parent, count)?;
        let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(chunks.len() + 8);
        if new_thread {
            entries.extend(retention::index(
                self.kv,
                &self.tenant,
                &own.thread,
                expires_at,
            )?);
        }
        if let Some((start, pack)) = parent.and_then(|p| completed_pack(p, &own, &bytes)) {
            entries.push((self.pack_key(&own.thread, start), pack));
            if let Some(last) = segments.last_mut() {
                last.packs.push(start);
            }
        }
        entries.extend(
            chunks
                .into_iter()
                .zip(own.start..own.end)
                .map(|(chunk, slot)| (self.slot_key(&own.thread, slot), chunk.to_vec())),
        );
        // A part stored apart goes on the turn's thread, unless its parent
        // there has it already.
        let parent_has = |hash: &str| {
            parent.is_some_and(|p| {
                p.pointer.turn.thread == own.thread && p.pointer.shared.iter().any(|h| h == hash)
            })
        };
        entries.extend(
            shared
                .iter()
                .filter(|part| !parent_has(&part.hash))
                .map(|part| (self.shared_key(&own.thread, &part.hash), part.bytes.clone())),
        );
        // Every thread this conversation reads lives at least as long as it.
        let keep_until = retention::expiry_value(expires_at);
        let mut threads: Vec<&str> = segments.iter().map(|s| s.thread.as_str()).collect();
        threads.dedup();
        entries.extend(
            threads
                .into_iter()
                .map(|thread| (self.exp_key(thread), keep_until.clone())),
        );
        let pointer = Pointer {
            segments,
            turn: own,
            expires_at,
            shared: shared.into_iter().map(|part| part.hash).collect(),
        };
        let pointer_bytes = serde_json::to_vec(&pointer)
            .map_err(|e| ApiError::server(format!("Pointer could not be encoded: {e}")))?;
        let owner = turn.response.id.as_bytes();
        entries.extend(
            self.item_keys(turn.input.iter().chain(&turn.response.output))
                .into_iter()
                .map(|key| (key, owner.to_vec())),
        );
        self.kv.set_many(entries).map_err(storage)?;
        // The pointer last: until it is written, nothing refers to the rest.
        self.kv
            .set_many(vec![(self.pointer_key(&turn.response.id), pointer_bytes)])
            .map_err(storage)
    }

    /// Reserves `count` slots: after the parent on its thread when the parent
    /// is the thread's end, else on a new thread named after the response
    /// (the flag says which).
    fn allocate(
        &self,
        id: &str,
        parent: Option<&Conversation>,
        count: u64,
    ) -> Result<(Vec<Segment>, Segment, bool), ApiError> {
        let delta = i64::try_from(count).map_err(|_| ApiError::server("Response too large"))?;
        let Some(parent) = parent else {
            return self.new_thread(id, delta);
        };
        let (pointer, thread) = (&parent.pointer, &parent.pointer.turn.thread);
        // A parent that was not its thread's end when read is not worth an
        // increment: the continuation branches anyway.
        let maybe_end = parent.thread_len.is_none_or(|len| len == pointer.turn.end);
        if maybe_end {
            let end = self
                .kv
                .increment(&self.len_key(thread), delta)
                .map_err(storage)?;
            let end = u64::try_from(end).unwrap_or(0);
            if end.checked_sub(count) == Some(pointer.turn.end) {
                let own = Segment::new(thread.clone(), pointer.turn.end, end);
                let mut segments = pointer.segments.clone();
                match segments.last_mut() {
                    Some(last) if last.thread == own.thread && last.end == own.start => {
                        last.end = own.end
                    }
                    _ => segments.push(own.clone()),
                }
                return Ok((segments, own, false));
            }
        }
        // The parent is not the end of its thread: branch.
        let (_, own, _) = self.new_thread(id, delta)?;
        let mut segments = pointer.segments.clone();
        segments.push(own.clone());
        Ok((segments, own, true))
    }

    fn new_thread(&self, id: &str, delta: i64) -> Result<(Vec<Segment>, Segment, bool), ApiError> {
        let end = self
            .kv
            .increment(&self.len_key(id), delta)
            .map_err(storage)?;
        let end = u64::try_from(end).unwrap_or(0);
        let own = Segment::new(id, end.saturating_sub(delta.unsigned_abs()), end);
        Ok((vec![own.clone()], own, true))
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
            .and_then(|log| record::decode_items(&log.bytes))
            .unwrap_or_default();
        let own = &pointer.turn;
        let mut keys = vec![self.pointer_key(id)];
        keys.extend((own.start..own.end).map(|slot| self.slot_key(&own.thread, slot)));
        for turn in &turns {
            keys.extend(self.item_keys(turn.input.iter().chain(&turn.output)));
        }
        self.kv.delete_many(keys).map_err(storage)?;
        // The slots are gone; the cut counter then retires every pack read
        // with them, written already or still to be written by a
        // continuation in flight. The packs that repeat them go last.
        self.kv
            .increment(&self.cut_key(&own.thread), 1)
            .map_err(storage)?;
        let first_pack = own.start - own.start % PACK_SLOTS;
        let packs = (first_pack..own.end)
            .step_by(PACK_SLOTS as usize)
            .map(|start| self.pack_key(&own.thread, start))
            .collect();
        self.kv.delete_many(packs).map_err(storage)?;
        Ok(true)
    }
}

/// The pack that `own`, a turn continuing `parent` on its thread with
/// `bytes`, completes: its first slot and its value. Only when the turn ends
/// a run of [`PACK_SLOTS`], the run's earlier slots were read one by one with
/// the parent, and the whole run fits in one value.
fn completed_pack(parent: &Conversation, own: &Segment, bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    if !own.end.is_multiple_of(PACK_SLOTS) {
        return None;
    }
    let start = own.end - PACK_SLOTS;
    let last = parent.pointer.segments.last()?;
    let continues = last.thread == own.thread && last.end == own.start && start < own.start;
    let loose = &parent.log.loose;
    let &(_, offset) = loose.iter().find(|(slot, _)| *slot == start)?;
    let earlier = parent.log.bytes.get(offset..)?;
    let contiguous = loose.last().map(|(slot, _)| slot + 1) == Some(own.start);
    if !continues || !contiguous || earlier.len() + bytes.len() > SLOT_BYTES {
        return None;
    }
    let tag = format!("{PACK_TAG}{}\n", parent.thread_cut);
    Some((start, [tag.as_bytes(), earlier, bytes].concat()))
}

/// The first byte of a pack's tag: `#{cut}\n`, the thread's cut counter when
/// the pack's slots were read. Turns start with `{`, so an untagged pack
/// (written before packs had tags) is told apart and counts as cut 0.
const PACK_TAG: char = '#';

/// The bytes of a pack written when the thread's cut counter was `cut`;
/// `None` for a pack written before a deletion.
fn untag_pack(mut value: Vec<u8>, cut: u64) -> Option<Vec<u8>> {
    if value.first() != Some(&(PACK_TAG as u8)) {
        return (cut == 0).then_some(value);
    }
    let end = value.iter().position(|&b| b == b'\n')?;
    let tag = std::str::from_utf8(&value[1..end])
        .ok()?
        .parse::<u64>()
        .ok()?;
    if tag != cut {
        return None;
    }
    value.drain(..=end);
    Some(value)
}

/// A counter `increment` wrote, as stored: 8 bytes little-endian (SQLite
/// stores, ours and Spin's) or decimal text (Redis, through `INCRBY`). No
/// little-endian count below 2^62 is all ASCII digits, so the two never mix.
fn counter(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| {
        !t.is_empty()
            && t.bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    });
    let value = match text {
        Some(text) => text.parse::<i64>().ok()?,
        None => i64::from_le_bytes(<[u8; 8]>::try_from(bytes).ok()?),
    };
    u64::try_from(value).ok()
}

fn storage(e: KvError) -> ApiError {
    ApiError::server(format!("The key-value store failed: {e}"))
}

/// The ids of `items` that the item index holds (references name items of
/// other responses).
fn indexed_ids<'i>(items: impl Iterator<Item = &'i Item>) -> impl Iterator<Item = &'i str> {
    items
        .filter(|item| !matches!(item, Item::ItemReference(_)))
        .filter_map(Item::id)
}

/// Finds the item with `id` in `items`, for `item_reference` inputs.
pub fn find_item<'i>(items: &'i [Item], id: &str) -> Option<&'i Item> {
    items.iter().find(|item| item.id() == Some(id))
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
