//! Retention: finding and removing what has expired, a bounded amount at a
//! time.
//!
//! # What lives how long
//!
//! A response is readable until its `expires_at`. Its turn stays stored as
//! long as any live response's conversation reads it: every save writes
//! `{tenant}/exp/{thread}` for each thread its conversation reads, so a
//! thread lives as long as the newest response that uses it, and old turns
//! of a live conversation stay as its history (their own ids 404 once they
//! expire). A thread goes whole, a grace period after its expiry
//! ([`DEFAULT_GRACE_SECONDS`], room for a request that read it just before):
//! its
//! slots, packs, counters, the pointers of the responses whose turns it
//! holds (with the jobs and stored events of those that ran in the
//! background), and the item index entries those responses own.
//!
//! # The index
//!
//! Time is cut into buckets of [`BUCKET_SECONDS`]. A thread is filed once,
//! when it is created, in the bucket of its first expiry:
//! `_retention/{bucket}/len` counts the bucket's entries (an atomic
//! increment) and `_retention/{bucket}/{n}` names the thread
//! (`{tenant}\n{thread}`), written in the batch that writes the thread's
//! first turn. A later turn that extends the thread writes only its
//! `exp` key; the sweep, finding the thread not yet due, files it again in
//! the bucket of its new expiry. So appending to a conversation costs no
//! extra round trip; starting one costs one increment.
//!
//! # The sweep
//!
//! `_retention/cursor` (`{bucket} {entry} {slot}`) is how far removal has
//! got. A sweep step ([`sweep`]) walks the buckets from the cursor up to
//! now, reads their entries in order, and removes the threads that are due,
//! at most [`SWEEP_SLOTS`] slots and [`SWEEP_ENTRIES`] entries a step; a
//! long thread is removed over several steps. An entry not due yet stops
//! the step where it is (its bucket's other entries wait at most a bucket's
//! width); a bucket is left behind once it is over, grace included. Steps run after requests (the component has no timer; hosts
//! without one, like Spin, need nothing else). Two steps racing do the same
//! deletions twice, which is harmless; the cursor may step back, which
//! only repeats work. Data stored before the index existed is never
//! removed by it.

use super::{counter, indexed_ids, record, storage, Kv, ResponseStore, TurnItems, PACK_SLOTS};
use crate::error::ApiError;

/// Width of an index bucket.
pub const BUCKET_SECONDS: i64 = 60;

/// How long past its expiry a thread is kept, by default: room for a save
/// that read the thread just before it expired.
pub const DEFAULT_GRACE_SECONDS: i64 = 60;

/// Index entries handled by one sweep step, at most.
pub const SWEEP_ENTRIES: u64 = 32;

/// Slots removed by one sweep step, about (a turn is never split).
pub const SWEEP_SLOTS: u64 = 256;

/// Buckets whose lengths one read covers while looking for entries: a day.
const SCAN_BUCKETS: i64 = 24 * 3600 / BUCKET_SECONDS;

/// Reads of bucket lengths in one step, at most: four days' worth.
const SCANS_PER_STEP: usize = 4;

/// Where a sweep starts on a store that has never been swept: this far
/// back from now.
const FIRST_LOOKBACK_SECONDS: i64 = 24 * 3600;

const CURSOR_KEY: &str = "_retention/cursor";

fn bucket_of(time: i64) -> i64 {
    time.div_euclid(BUCKET_SECONDS)
}

fn len_key(bucket: i64) -> String {
    format!("_retention/{bucket}/len")
}

fn entry_key(bucket: i64, n: u64) -> String {
    format!("_retention/{bucket}/{n}")
}

/// What is due at a time, with a grace period.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    pub now: i64,
    pub grace: i64,
}

impl Due {
    /// Whether a thread kept until `expiry` may go: a response is live
    /// through its `expires_at` second, and the grace runs after that.
    fn thread(self, expiry: i64) -> bool {
        expiry.saturating_add(self.grace) < self.now
    }

    /// Whether some thread filed in `bucket` may be due.
    fn bucket_started(self, bucket: i64) -> bool {
        self.thread(bucket.saturating_mul(BUCKET_SECONDS))
    }

    /// Whether every thread filed in `bucket` is due, and no save files
    /// into it any more.
    fn bucket_over(self, bucket: i64) -> bool {
        self.thread(bucket.saturating_add(1).saturating_mul(BUCKET_SECONDS))
    }
}

/// The value of an `exp` key: the expiry in decimal, or `i64::MAX` for a
/// response that never expires.
pub(super) fn expiry_value(expires_at: Option<i64>) -> Vec<u8> {
    expires_at.unwrap_or(i64::MAX).to_string().into_bytes()
}

/// Files a new thread in the index: one increment, and the entry to write
/// with the thread's first turn. Nothing for a response that never expires.
pub(super) fn index<K: Kv>(
    kv: &K,
    tenant: &str,
    thread: &str,
    expires_at: Option<i64>,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let Some(expires_at) = expires_at else {
        return Ok(Vec::new());
    };
    Ok(vec![file(kv, tenant, thread, expires_at)?])
}

fn file<K: Kv>(
    kv: &K,
    tenant: &str,
    thread: &str,
    expires_at: i64,
) -> Result<(String, Vec<u8>), ApiError> {
    let bucket = bucket_of(expires_at);
    let n = kv.increment(&len_key(bucket), 1).map_err(storage)?;
    let n = u64::try_from(n).unwrap_or(0);
    Ok((
        entry_key(bucket, n),
        format!("{tenant}\n{thread}").into_bytes(),
    ))
}

/// How far removal has got: the next entry of `bucket` is `entry + 1`, and
/// a thread being removed has been removed up to `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    bucket: i64,
    entry: u64,
    slot: u64,
}

impl Cursor {
    fn parse(bytes: &[u8]) -> Option<Cursor> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let cursor = Cursor {
            bucket: parts.next()?.parse().ok()?,
            entry: parts.next()?.parse().ok()?,
            slot: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }

    fn encode(self) -> Vec<u8> {
        format!("{} {} {}", self.bucket, self.entry, self.slot).into_bytes()
    }
}

/// What one sweep step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    /// Threads removed (or finished removing).
    pub threads_removed: u64,
    /// Threads found still in use, filed again under their new expiry.
    pub threads_refiled: u64,
    /// Keys deleted.
    pub keys_deleted: u64,
    /// Whether every due bucket has been handled.
    pub caught_up: bool,
}

/// How much the index holds, counted in index entries (one per
/// conversation or branch, while it is stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Entries of buckets that are over: removed at the next sweep steps,
    /// or filed again if their conversation was continued since.
    pub pending: u64,
    /// Entries filed for later (within a bucket's width, some of them may
    /// be due), up to the horizon asked for.
    pub scheduled: u64,
    /// Where the sweep is: the start of the bucket it is in, in seconds
    /// since the epoch; `None` before the first sweep.
    pub sweep_at: Option<i64>,
}

/// Counts the index from the sweep's cursor to `horizon` (a time), reading
/// bucket counters a day at a time: about one round trip per day counted.
pub fn status<K: Kv>(kv: &K, due: Due, horizon: i64) -> Result<Status, ApiError> {
    let stored = kv.get(CURSOR_KEY).map_err(storage)?;
    let cursor = stored.as_deref().and_then(Cursor::parse);
    let mut status = Status {
        sweep_at: cursor.map(|c| c.bucket.saturating_mul(BUCKET_SECONDS)),
        ..Status::default()
    };
    let first = cursor.map_or_else(
        || bucket_of(due.now.saturating_sub(FIRST_LOOKBACK_SECONDS)),
        |c| c.bucket,
    );
    let last = bucket_of(horizon);
    let mut bucket = first;
    while bucket <= last {
        let end = last.min(bucket.saturating_add(SCAN_BUCKETS - 1));
        let buckets: Vec<i64> = (bucket..=end).collect();
        let lens = kv
            .get_many(buckets.iter().map(|b| len_key(*b)).collect())
            .map_err(storage)?;
        for (b, len) in buckets.into_iter().zip(lens) {
            let mut len = len.as_deref().and_then(counter).unwrap_or(0);
            if let Some(c) = cursor.filter(|c| c.bucket == b) {
                len = len.saturating_sub(c.entry);
            }
            match due.bucket_over(b) {
                true => status.pending = status.pending.saturating_add(len),
                false => status.scheduled = status.scheduled.saturating_add(len),
            }
        }
        bucket = end.saturating_add(1);
    }
    Ok(status)
}

/// Runs one bounded sweep step.
pub fn sweep<K: Kv>(kv: &K, due: Due) -> Result<Sweep, ApiError> {
    let stored = kv.get(CURSOR_KEY).map_err(storage)?;
    let start = stored.as_deref().and_then(Cursor::parse);
    let mut cursor = start.unwrap_or(Cursor {
        bucket: bucket_of(due.now.saturating_sub(FIRST_LOOKBACK_SECONDS)),
        entry: 0,
        slot: 0,
    });
    let mut done = Sweep::default();
    let mut entries_left = SWEEP_ENTRIES;
    let mut slots_left = SWEEP_SLOTS;
    let mut scans = 0;
    // Whether the step stopped for its budget, with due work left.
    let mut more = false;
    'buckets: while due.bucket_started(cursor.bucket) {
        if scans == SCANS_PER_STEP {
            more = true;
            break;
        }
        scans += 1;
        let (bucket, len) = match next_bucket(kv, cursor, due)? {
            Next::Found(bucket, len) => (bucket, len),
            // Nothing before a bucket saves may still file into.
            Next::Empty(after) if after == cursor.bucket => break,
            Next::Empty(after) => {
                cursor = Cursor {
                    bucket: after,
                    entry: 0,
                    slot: 0,
                };
                continue;
            }
        };
        if bucket != cursor.bucket {
            cursor = Cursor {
                bucket,
                entry: 0,
                slot: 0,
            };
        }
        while cursor.entry < len {
            if entries_left == 0 || slots_left == 0 {
                more = true;
                break 'buckets;
            }
            let n = cursor.entry + 1;
            let value = kv.get(&entry_key(bucket, n)).map_err(storage)?;
            let entry = value.as_deref().and_then(|v| std::str::from_utf8(v).ok());
            let outcome = match entry.and_then(|e| e.split_once('\n')) {
                Some((tenant, thread)) => ResponseStore::new(kv, tenant).sweep_thread(
                    thread,
                    bucket,
                    due,
                    &mut cursor.slot,
                    &mut slots_left,
                    &mut done,
                )?,
                // An entry whose batch never landed: nothing to do.
                None => Outcome::Handled,
            };
            if outcome != Outcome::Handled {
                more = outcome == Outcome::Budget;
                break 'buckets;
            }
            kv.delete_many(vec![entry_key(bucket, n)])
                .map_err(storage)?;
            cursor.entry = n;
            cursor.slot = 0;
            entries_left -= 1;
        }
        if !due.bucket_over(bucket) {
            // Saves may still file into it.
            break;
        }
        kv.delete_many(vec![len_key(bucket)]).map_err(storage)?;
        cursor = Cursor {
            bucket: bucket.saturating_add(1),
            entry: 0,
            slot: 0,
        };
    }
    done.caught_up = !more;
    if start != Some(cursor) {
        kv.set_many(vec![(CURSOR_KEY.to_owned(), cursor.encode())])
            .map_err(storage)?;
    }
    Ok(done)
}

/// What a scan of bucket lengths found.
enum Next {
    /// The first bucket with a counter, and its length.
    Found(i64, u64),
    /// No entries left up to this bucket, which is the next to look at.
    Empty(i64),
}

/// Reads the lengths of up to [`SCAN_BUCKETS`] started buckets from the
/// cursor's on, in one batch. Past an empty bucket that is not over, the
/// cursor does not move: saves may still file into it.
fn next_bucket<K: Kv>(kv: &K, cursor: Cursor, due: Due) -> Result<Next, ApiError> {
    let buckets: Vec<i64> = (0..SCAN_BUCKETS)
        .map(|i| cursor.bucket.saturating_add(i))
        .take_while(|b| due.bucket_started(*b))
        .collect();
    let lens = kv
        .get_many(buckets.iter().map(|b| len_key(*b)).collect())
        .map_err(storage)?;
    let mut after = cursor.bucket;
    for (bucket, len) in buckets.into_iter().zip(lens) {
        // A bucket with a counter has entries, or its counter is still to
        // be removed.
        if let Some(len) = len.as_deref().and_then(counter) {
            return Ok(Next::Found(bucket, len));
        }
        if !due.bucket_over(bucket) {
            break;
        }
        after = bucket.saturating_add(1);
    }
    Ok(Next::Empty(after))
}

/// How the sweep left an index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Removed, filed again under a later bucket, or already gone.
    Handled,
    /// Not due yet, and filed in this bucket or an earlier one.
    NotYet,
    /// The slot budget ran out partway.
    Budget,
}

impl<K: Kv> ResponseStore<'_, K> {
    /// Removes `thread`, filed in `bucket`, if it is due, from slot `*from`
    /// on, within the slot budget (`*from` says where to go on); files it
    /// again if it is still in use.
    fn sweep_thread(
        &self,
        thread: &str,
        bucket: i64,
        due: Due,
        from: &mut u64,
        slots_left: &mut u64,
        done: &mut Sweep,
    ) -> Result<Outcome, ApiError> {
        // Whether the thread may go is read on its own, never from a batch:
        // a store whose batch reads can lag (a replica, a cache) must not
        // show an expiry that a continuation has since moved on.
        let expiry = self.kv.get(&self.exp_key(thread)).map_err(storage)?;
        let expiry = expiry
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok());
        let len = self.kv.get(&self.len_key(thread)).map_err(storage)?;
        let len = len.as_deref().and_then(counter);
        match expiry {
            Some(expiry) if !due.thread(expiry) && bucket_of(expiry) <= bucket => {
                return Ok(Outcome::NotYet)
            }
            Some(expiry) if !due.thread(expiry) => {
                let entry = file(self.kv, &self.tenant, thread, expiry)?;
                self.kv.set_many(vec![entry]).map_err(storage)?;
                done.threads_refiled += 1;
                return Ok(Outcome::Handled);
            }
            _ => {}
        }
        let len = len.unwrap_or(0);
        let mut carry: Vec<u8> = Vec::new();
        while *from < len {
            let end = len.min(*from + PACK_SLOTS);
            let slots: Vec<String> = (*from..end).map(|s| self.slot_key(thread, s)).collect();
            let values = self.kv.get_many(slots.clone()).map_err(storage)?;
            let mut turns = Vec::new();
            for value in values {
                match value {
                    // Turns start on a slot: what is carried up to a turn's
                    // start, or up to a slot already gone, is all there is.
                    Some(value) => {
                        if value.starts_with(TURN_START) {
                            flush(&mut carry, &mut turns);
                        }
                        carry.extend_from_slice(&value);
                    }
                    None => flush(&mut carry, &mut turns),
                }
            }
            let (more, used) = record::decode_items_prefix(&carry);
            turns.extend(more);
            carry.drain(..used);
            let mut keys = slots;
            keys.extend(
                (*from..end)
                    .filter(|s| s % PACK_SLOTS == 0)
                    .map(|s| self.pack_key(thread, s)),
            );
            keys.extend(self.owned_keys(thread, &turns)?);
            done.keys_deleted += keys.len() as u64;
            self.kv.delete_many(keys).map_err(storage)?;
            *slots_left = slots_left.saturating_sub(end - *from);
            *from = end;
            if carry.is_empty() && *slots_left == 0 && *from < len {
                return Ok(Outcome::Budget);
            }
        }
        let keys = vec![
            self.len_key(thread),
            self.exp_key(thread),
            self.cut_key(thread),
        ];
        done.keys_deleted += keys.len() as u64;
        self.kv.delete_many(keys).map_err(storage)?;
        done.threads_removed += 1;
        Ok(Outcome::Handled)
    }

    /// The pointers of `turns` (on `thread`), the parts they stored apart,
    /// and the item index entries that still name them (an item id used
    /// again later belongs to the later response).
    fn owned_keys(&self, thread: &str, turns: &[TurnItems]) -> Result<Vec<String>, ApiError> {
        let mut keys: Vec<String> = turns.iter().map(|t| self.pointer_key(&t.id)).collect();
        // Background responses' jobs and events go with them.
        let ids: Vec<&str> = turns.iter().map(|t| t.id.as_str()).collect();
        keys.extend(super::background::Jobs::new(self.kv, &self.tenant).keys(&ids)?);
        let mut shared: Vec<&str> = turns
            .iter()
            .flat_map(|t| &t.shared)
            .map(String::as_str)
            .collect();
        shared.sort_unstable();
        shared.dedup();
        keys.extend(shared.into_iter().map(|hash| self.shared_key(thread, hash)));
        let items: Vec<(String, &str)> = turns
            .iter()
            .flat_map(|turn| {
                indexed_ids(turn.input.iter().chain(&turn.output))
                    .map(|id| (self.item_key(id), turn.id.as_str()))
            })
            .collect();
        if items.is_empty() {
            return Ok(keys);
        }
        let owners = self
            .kv
            .get_many(items.iter().map(|(key, _)| key.clone()).collect())
            .map_err(storage)?;
        keys.extend(
            items
                .into_iter()
                .zip(owners)
                .filter(|((_, turn), owner)| owner.as_deref() == Some(turn.as_bytes()))
                .map(|((key, _), _)| key),
        );
        Ok(keys)
    }
}

/// How the head of a turn, and so its first slot, begins.
const TURN_START: &[u8] = b"{\"id\":";

/// Decodes the whole turns carried and drops the rest.
fn flush(carry: &mut Vec<u8>, turns: &mut Vec<TurnItems>) {
    turns.extend(record::decode_items_prefix(carry).0);
    carry.clear();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::tests::turn_for;
    use crate::store::{Conversation, MemoryKv, Turn};

    fn turn(id: &str, text: &str) -> Turn {
        turn_for(id, json!({"model": "m", "input": text}))
    }

    /// Saves `turns` turns continuing `parent` (or a new conversation), each
    /// expiring at `expires_at`; returns the last id.
    fn chain(
        store: &ResponseStore<MemoryKv>,
        name: &str,
        parent: Option<&str>,
        turns: usize,
        expires_at: i64,
    ) -> String {
        let mut parent: Option<Conversation> =
            parent.map(|id| store.conversation(id, 0).unwrap().unwrap());
        let mut id = String::new();
        for i in 0..turns {
            id = format!("resp_{name}{i}");
            let mut t = turn(&id, &format!("{name} {i}"));
            t.input[0] = crate::api::items::Item::user_text(format!("{name} {i}"));
            store
                .save(&t, None, parent.as_ref(), Some(expires_at))
                .unwrap();
            parent = store.conversation(&id, 0).unwrap();
        }
        id
    }

    /// Sweeps until caught up (at most 100 steps); the last step's report.
    fn at(now: i64) -> Due {
        Due {
            now,
            grace: DEFAULT_GRACE_SECONDS,
        }
    }

    fn sweep_all(kv: &MemoryKv, now: i64) -> (Sweep, usize) {
        let mut total = Sweep::default();
        for steps in 1..=100 {
            let step = sweep(kv, at(now)).unwrap();
            total.threads_removed += step.threads_removed;
            total.threads_refiled += step.threads_refiled;
            total.keys_deleted += step.keys_deleted;
            if step.caught_up {
                total.caught_up = true;
                return (total, steps);
            }
        }
        panic!("the sweep never caught up");
    }

    fn data_keys(kv: &MemoryKv) -> Vec<String> {
        kv.values
            .borrow()
            .keys()
            .filter(|k| !k.starts_with("_retention/"))
            .cloned()
            .collect()
    }

    const DAY: i64 = 24 * 3600;
    const T0: i64 = 1_800_000_000;

    #[test]
    fn expired_conversations_are_removed_and_live_ones_kept() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        // 20 turns (with a pack) expiring at T0 + 1 day; 3 expiring later.
        chain(&store, "old", None, 20, T0 + DAY);
        let live = chain(&store, "new", None, 3, T0 + 2 * DAY);
        let before = data_keys(&kv).len();
        // Not yet: nothing is due.
        let (nothing, _) = sweep_all(&kv, T0 + DAY);
        assert_eq!(nothing.threads_removed, 0);
        assert_eq!(data_keys(&kv).len(), before);

        let (done, _) = sweep_all(&kv, T0 + DAY + DEFAULT_GRACE_SECONDS + 1);
        assert_eq!(done.threads_removed, 1);
        let left = data_keys(&kv);
        assert!(left.iter().all(|k| !k.contains("old")), "{left:?}");
        assert!(
            left.len() < before / 2,
            "{} of {before} keys left",
            left.len()
        );
        let turns = store
            .conversation(&live, 0)
            .unwrap()
            .unwrap()
            .turns()
            .unwrap();
        assert_eq!(turns.len(), 3);

        let (done, _) = sweep_all(&kv, T0 + 3 * DAY);
        assert_eq!(done.threads_removed, 1);
        assert_eq!(data_keys(&kv), Vec::<String>::new());
        // Only the cursor is left of the index.
        let keys: Vec<String> = kv.values.borrow().keys().cloned().collect();
        assert_eq!(keys, [CURSOR_KEY]);
    }

    #[test]
    fn old_turns_stay_as_history_while_a_newer_turn_lives() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        let first = chain(&store, "a", None, 1, T0 + DAY);
        // Continued later, on the same thread, and branched to another.
        let later = chain(&store, "b", Some(&first), 1, T0 + 2 * DAY);
        let branch = chain(&store, "c", Some(&first), 1, T0 + 3 * DAY);
        assert_ne!(
            store
                .conversation(&branch, 0)
                .unwrap()
                .unwrap()
                .pointer
                .turn
                .thread,
            store
                .conversation(&later, 0)
                .unwrap()
                .unwrap()
                .pointer
                .turn
                .thread
        );
        let now = T0 + DAY + DEFAULT_GRACE_SECONDS + 1;
        let (done, _) = sweep_all(&kv, now);
        assert_eq!((done.threads_removed, done.threads_refiled), (0, 1));
        // The first response is gone to clients, its turn is history.
        assert!(store.turn(&first, now).unwrap().is_none());
        for id in [&later, &branch] {
            let history = store
                .conversation(id, now)
                .unwrap()
                .unwrap()
                .turns()
                .unwrap();
            assert_eq!(history.len(), 2, "{id}");
            assert_eq!(history[0].id, first);
        }
        // The branch keeps the first thread alive past the later turn.
        let now = T0 + 2 * DAY + DEFAULT_GRACE_SECONDS + 1;
        sweep_all(&kv, now);
        let history = store
            .conversation(&branch, now)
            .unwrap()
            .unwrap()
            .turns()
            .unwrap();
        assert_eq!(history.len(), 2);
        assert!(store.conversation(&later, now).unwrap().is_none());

        sweep_all(&kv, T0 + 4 * DAY);
        assert_eq!(data_keys(&kv), Vec::<String>::new());
    }

    #[test]
    fn a_long_thread_goes_over_several_bounded_steps() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        chain(&store, "long", None, 600, T0);
        let before = data_keys(&kv).len();
        let now = T0 + DEFAULT_GRACE_SECONDS + 1;
        let mut steps = 0;
        loop {
            let left = data_keys(&kv).len();
            let step = sweep(&kv, at(now)).unwrap();
            steps += 1;
            let removed = left - data_keys(&kv).len();
            // Slots, packs, pointers: about three keys a slot.
            assert!(removed <= 3 * (SWEEP_SLOTS as usize + 16) + 3, "{removed}");
            if step.caught_up {
                break;
            }
            assert!(steps < 20);
        }
        assert!(steps >= 3, "{steps} steps for {before} keys");
        assert_eq!(data_keys(&kv), Vec::<String>::new());
    }

    #[test]
    fn an_item_id_used_again_keeps_its_newer_owner() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        let mut old = turn("resp_old", "x");
        let mut new = turn("resp_new", "y");
        for (t, id) in [(&mut old, "msg_same"), (&mut new, "msg_same")] {
            t.input[0] = serde_json::from_value(json!({
                "type": "message", "id": id, "role": "user",
                "content": [{"type": "input_text", "text": "hi"}]
            }))
            .unwrap();
        }
        store.save(&old, None, None, Some(T0)).unwrap();
        store.save(&new, None, None, Some(T0 + DAY)).unwrap();
        sweep_all(&kv, T0 + DEFAULT_GRACE_SECONDS + 1);
        let item = store.item("msg_same", T0 + 100).unwrap();
        assert!(item.is_some(), "the newer response's item is still found");
        assert!(store.turn("resp_old", 0).unwrap().is_none());
    }

    #[test]
    fn a_store_idle_for_a_month_catches_up_in_a_few_steps() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        chain(&store, "a", None, 1, T0);
        sweep(&kv, at(T0)).unwrap();
        let (done, steps) = sweep_all(&kv, T0 + 30 * DAY);
        assert_eq!(done.threads_removed, 1);
        assert!(steps <= 10, "{steps} steps");
    }

    #[test]
    fn parts_stored_apart_go_with_their_thread() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        let first = crate::store::tests::agent_turn("resp_a", "a");
        store.save(&first, None, None, Some(T0)).unwrap();
        let parent = store.conversation("resp_a", 0).unwrap();
        let second = crate::store::tests::agent_turn("resp_b", "b");
        store
            .save(&second, None, parent.as_ref(), Some(T0))
            .unwrap();
        assert!(data_keys(&kv).iter().any(|k| k.contains("/shared/")));
        sweep_all(&kv, T0 + DEFAULT_GRACE_SECONDS + 1);
        assert_eq!(data_keys(&kv), Vec::<String>::new());
    }

    #[test]
    fn status_counts_what_is_pending_and_scheduled() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        chain(&store, "a", None, 3, T0);
        chain(&store, "b", None, 1, T0);
        chain(&store, "c", None, 2, T0 + DAY);
        let horizon = T0 + 30 * DAY;
        let before = status(&kv, at(T0), horizon).unwrap();
        assert_eq!(
            (before.pending, before.scheduled, before.sweep_at),
            (0, 3, None)
        );
        let now = T0 + DEFAULT_GRACE_SECONDS + 61;
        assert_eq!(status(&kv, at(T0 + 1), horizon).unwrap().pending, 0);
        assert_eq!(status(&kv, at(now), horizon).unwrap().pending, 2);
        sweep_all(&kv, now);
        let after = status(&kv, at(now), horizon).unwrap();
        assert_eq!((after.pending, after.scheduled), (0, 1));
        assert!(after.sweep_at.is_some());
    }

    #[test]
    fn responses_that_never_expire_are_not_indexed() {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        store.save(&turn("resp_x", "x"), None, None, None).unwrap();
        assert!(kv
            .values
            .borrow()
            .keys()
            .all(|k| !k.starts_with("_retention/")));
        sweep_all(&kv, T0 + 365 * DAY);
        assert!(store.turn("resp_x", 0).unwrap().is_some());
    }

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let cursor = Cursor {
            bucket: 29_000_000,
            entry: 3,
            slot: 16,
        };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        for junk in [&b""[..], b"1 2", b"1 2 3 4", b"a b c", b"\xff"] {
            assert_eq!(Cursor::parse(junk), None);
        }
    }

    #[test]
    fn buckets_are_due_a_grace_after_they_start_and_over_a_grace_after_they_end() {
        let bucket = bucket_of(6_000);
        assert_eq!(bucket, 100);
        let due = |now| at(now);
        assert!(!due(6_000 + 60).bucket_started(bucket));
        assert!(due(6_000 + 61).bucket_started(bucket));
        assert!(!due(6_000 + 120).bucket_over(bucket));
        assert!(due(6_000 + 121).bucket_over(bucket));
        assert!(!due(4_000_000_000).bucket_started(bucket_of(i64::MAX)));
        assert_eq!(expiry_value(None), i64::MAX.to_string().into_bytes());
    }
}
