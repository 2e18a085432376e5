//! Conversation objects (`/v1/conversations`) on the key-value store: a
//! record and an append-only log of items, read in two round trips
//! whatever the conversation's length.
//!
//! # Layout
//!
//! - `{tenant}/conv/{id}`: the record (id, creation time, metadata),
//!   rewritten when the metadata changes.
//! - `{tenant}/convlen/{id}`: slots allocated to the log, an atomic counter.
//! - `{tenant}/convlog/{id}/{slot}`: the log. Each append (a create's
//!   initial items, `POST .../items`, a response's input and output)
//!   reserves its slots with one increment and writes them in one batch, so
//!   appends racing on one conversation each get their own slots: both
//!   land, in the order of their increments, and nothing is lost. An append
//!   is a JSON array of items cut into slots of at most [`SLOT_BYTES`],
//!   each slot tagged `#{part}/{parts}\n`; an append whose slots are not
//!   all there (still being written, or cut short) is not read.
//! - `{tenant}/convdels/{id}` and `{tenant}/convdel/{id}/{n}`: deleted
//!   items, a counter and one entry per deletion naming the item.
//!
//! A read takes the record and both counters in one batch, then every slot
//! and deletion entry in a second.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{counter, storage, Kv, SLOT_BYTES};
use crate::api::items::Item;
use crate::error::ApiError;

/// The stored part of a conversation object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub created_at: i64,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The `compaction` item `context_management` made, from which the
    /// conversation's context starts: what came before it is listed, not
    /// replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_from: Option<String>,
}

/// A conversation as read: its record and its live items, oldest first.
#[derive(Debug, Clone)]
pub struct Read {
    pub record: Record,
    pub items: Vec<Item>,
}

/// Conversation objects of one tenant.
pub struct Conversations<'a, K: Kv> {
    kv: &'a K,
    tenant: String,
}

impl<'a, K: Kv> Conversations<'a, K> {
    pub fn new(kv: &'a K, tenant: impl Into<String>) -> Self {
        Conversations {
            kv,
            tenant: tenant.into(),
        }
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}/conv/{id}", self.tenant)
    }

    fn len_key(&self, id: &str) -> String {
        format!("{}/convlen/{id}", self.tenant)
    }

    fn slot_key(&self, id: &str, slot: u64) -> String {
        format!("{}/convlog/{id}/{slot}", self.tenant)
    }

    fn dels_key(&self, id: &str) -> String {
        format!("{}/convdels/{id}", self.tenant)
    }

    fn del_key(&self, id: &str, n: u64) -> String {
        format!("{}/convdel/{id}/{n}", self.tenant)
    }

    /// Writes a new conversation with its first items: the items first,
    /// the record last, so a conversation that exists has them.
    pub fn create(&self, record: &Record, items: &[Item]) -> Result<(), ApiError> {
        if !items.is_empty() {
            self.append(&record.id, items)?;
        }
        self.write(record)
    }

    /// Rewrites a conversation's record.
    pub fn write(&self, record: &Record) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| ApiError::server(format!("Conversation could not be encoded: {e}")))?;
        self.kv
            .set_many(vec![(self.record_key(&record.id), bytes)])
            .map_err(storage)
    }

    /// The record of conversation `id`, if it exists.
    pub fn record(&self, id: &str) -> Result<Option<Record>, ApiError> {
        let Some(bytes) = self.kv.get(&self.record_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        decode_record(id, &bytes).map(Some)
    }

    /// The record of conversation `id` with its counters (slots, deleted
    /// items), in one batch; `None` if it does not exist.
    fn head(&self, id: &str) -> Result<Option<(Record, u64, u64)>, ApiError> {
        let keys = vec![self.record_key(id), self.len_key(id), self.dels_key(id)];
        let mut head = self.kv.get_many(keys).map_err(storage)?.into_iter();
        let Some(record) = head.next().flatten() else {
            return Ok(None);
        };
        let mut count = || {
            let value = head.next().flatten();
            value
                .as_deref()
                .and_then(counter)
                .unwrap_or(0)
                .min(MAX_LOG_SLOTS)
        };
        let (len, dels) = (count(), count());
        Ok(Some((decode_record(id, &record)?, len, dels)))
    }

    /// The keys of conversation `id`'s log slots and deletion entries.
    fn log_keys(&self, id: &str, len: u64, dels: u64) -> Vec<String> {
        let mut keys: Vec<String> = (0..len).map(|slot| self.slot_key(id, slot)).collect();
        keys.extend((1..=dels).map(|n| self.del_key(id, n)));
        keys
    }

    /// Conversation `id` with its live items: two round trips.
    pub fn read(&self, id: &str) -> Result<Option<Read>, ApiError> {
        let Some((record, len, dels)) = self.head(id)? else {
            return Ok(None);
        };
        let keys = self.log_keys(id, len, dels);
        let mut values = match keys.is_empty() {
            true => Vec::new(),
            false => self.kv.get_many(keys).map_err(storage)?,
        };
        let deleted: Vec<Vec<u8>> = values
            .split_off(usize::try_from(len).unwrap_or(usize::MAX).min(values.len()))
            .into_iter()
            .flatten()
            .collect();
        let mut items = decode_log(values)?;
        items.retain(|item| {
            item.id()
                .is_none_or(|i| !deleted.iter().any(|d| d == i.as_bytes()))
        });
        Ok(Some(Read { record, items }))
    }

    /// Appends `items` to conversation `id`'s log: one increment reserves
    /// the slots, one batch writes them.
    pub fn append(&self, id: &str, items: &[Item]) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(items)
            .map_err(|e| ApiError::server(format!("Items could not be encoded: {e}")))?;
        let chunks: Vec<&[u8]> = bytes.chunks(SLOT_BYTES).collect();
        let parts = chunks.len();
        let delta = i64::try_from(parts).map_err(|_| ApiError::server("Items too large"))?;
        let end = self
            .kv
            .increment(&self.len_key(id), delta)
            .map_err(storage)?;
        let start = u64::try_from(end.saturating_sub(delta)).unwrap_or(0);
        let entries = chunks
            .into_iter()
            .enumerate()
            .map(|(part, chunk)| {
                let mut value = format!("#{part}/{parts}\n").into_bytes();
                value.extend_from_slice(chunk);
                (self.slot_key(id, start + part as u64), value)
            })
            .collect();
        self.kv.set_many(entries).map_err(storage)
    }

    /// Marks item `item_id` of conversation `id` deleted.
    pub fn delete_item(&self, id: &str, item_id: &str) -> Result<(), ApiError> {
        let n = self.kv.increment(&self.dels_key(id), 1).map_err(storage)?;
        let n = u64::try_from(n).unwrap_or(0);
        self.kv
            .set_many(vec![(self.del_key(id, n), item_id.as_bytes().to_vec())])
            .map_err(storage)
    }

    /// Deletes conversation `id`: its record first (it is gone from then
    /// on), then its log and deletion entries. Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, ApiError> {
        let Some((_, len, dels)) = self.head(id)? else {
            return Ok(false);
        };
        self.kv
            .delete_many(vec![self.record_key(id)])
            .map_err(storage)?;
        let mut keys = self.log_keys(id, len, dels);
        keys.extend([self.len_key(id), self.dels_key(id)]);
        self.kv.delete_many(keys).map_err(storage)?;
        Ok(true)
    }
}

/// Most slots (or deletions) of one conversation read: 192 GiB of items.
const MAX_LOG_SLOTS: u64 = 1 << 20;

fn decode_record(id: &str, bytes: &[u8]) -> Result<Record, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::server(format!("Stored conversation {id} is unreadable: {e}")))
}

/// The items of a log's slots, in order. An append whose slots are not all
/// there is skipped: it is still being written, or was cut short.
fn decode_log(slots: Vec<Option<Vec<u8>>>) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    let mut append: Vec<u8> = Vec::new();
    let mut expected: Option<(usize, usize)> = None; // (next part, parts)
    for slot in slots {
        let Some(value) = slot else {
            expected = None;
            continue;
        };
        let Some((part, parts, chunk)) = split_tag(&value) else {
            expected = None;
            continue;
        };
        if part == 0 {
            append.clear();
            expected = Some((0, parts));
        }
        if expected != Some((part, parts)) {
            expected = None;
            continue;
        }
        append.extend_from_slice(chunk);
        if part + 1 < parts {
            expected = Some((part + 1, parts));
            continue;
        }
        expected = None;
        let decoded: Vec<Item> = crate::api::from_slice(&append)
            .map_err(|e| ApiError::server(format!("A stored conversation is unreadable: {e}")))?;
        items.extend(decoded);
    }
    Ok(items)
}

/// `#{part}/{parts}\n{chunk}` → its parts.
fn split_tag(value: &[u8]) -> Option<(usize, usize, &[u8])> {
    let rest = value.strip_prefix(b"#")?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let tag = std::str::from_utf8(&rest[..newline]).ok()?;
    let (part, parts) = tag.split_once('/')?;
    let (part, parts) = (part.parse().ok()?, parts.parse().ok()?);
    (part < parts).then_some((part, parts, &rest[newline + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;

    fn record(id: &str) -> Record {
        Record {
            id: id.to_owned(),
            created_at: 7,
            metadata: Map::new(),
            context_from: None,
        }
    }

    fn texts(read: &Read) -> Vec<String> {
        read.items
            .iter()
            .map(|item| match item {
                Item::Message(m) => m.text(),
                _ => String::new(),
            })
            .collect()
    }

    fn message(id: &str, text: &str) -> Item {
        let mut item = Item::user_text(text);
        if let Item::Message(m) = &mut item {
            m.id = Some(id.to_owned());
        }
        item
    }

    #[test]
    fn appends_read_back_in_order_in_two_round_trips() {
        let kv = MemoryKv::default();
        let store = Conversations::new(&kv, "t");
        store
            .create(&record("conv_a"), &[message("msg_1", "one")])
            .unwrap();
        for n in 2..=100 {
            store
                .append("conv_a", &[message(&format!("msg_{n}"), &n.to_string())])
                .unwrap();
        }
        *kv.round_trips.borrow_mut() = 0;
        let read = store.read("conv_a").unwrap().unwrap();
        assert_eq!(*kv.round_trips.borrow(), 2);
        assert_eq!(read.items.len(), 100);
        assert_eq!(texts(&read)[..3], ["one", "2", "3"]);
        assert!(store.read("conv_b").unwrap().is_none());
    }

    #[test]
    fn a_large_append_spans_slots_and_an_unfinished_one_is_skipped() {
        let kv = MemoryKv::default();
        let store = Conversations::new(&kv, "t");
        store.create(&record("conv_a"), &[]).unwrap();
        let big = "x".repeat(SLOT_BYTES * 2);
        store.append("conv_a", &[message("msg_big", &big)]).unwrap();
        store
            .append("conv_a", &[message("msg_2", "after")])
            .unwrap();
        let read = store.read("conv_a").unwrap().unwrap();
        assert_eq!(texts(&read), [big.clone(), "after".to_owned()]);
        // The middle slot of the large append goes missing: that append is
        // skipped, the next one still reads.
        kv.values.borrow_mut().remove("t/convlog/conv_a/1");
        let read = store.read("conv_a").unwrap().unwrap();
        assert_eq!(texts(&read), ["after"]);
        // Slots reserved but not written yet read as nothing.
        kv.increment("t/convlen/conv_a", 2).unwrap();
        assert_eq!(store.read("conv_a").unwrap().unwrap().items.len(), 1);
    }

    #[test]
    fn deleted_items_and_conversations_are_gone() {
        let kv = MemoryKv::default();
        let store = Conversations::new(&kv, "t");
        let items = [message("msg_1", "one"), message("msg_2", "two")];
        store.create(&record("conv_a"), &items).unwrap();
        store.delete_item("conv_a", "msg_1").unwrap();
        assert_eq!(texts(&store.read("conv_a").unwrap().unwrap()), ["two"]);
        assert!(store.delete("conv_a").unwrap());
        assert!(!store.delete("conv_a").unwrap());
        assert!(store.read("conv_a").unwrap().is_none());
        assert!(
            kv.values.borrow().is_empty(),
            "{:?}",
            kv.values.borrow().keys()
        );
    }

    #[test]
    fn tags_are_checked() {
        assert_eq!(split_tag(b"#0/1\n[]"), Some((0, 1, &b"[]"[..])));
        for bad in [&b"[]"[..], b"#1/1\n[]", b"#a/1\n", b"#0/1", b"#0\n"] {
            assert_eq!(split_tag(bad), None, "{bad:?}");
        }
    }
}
