use serde_json::json;

use super::*;
use crate::api::request::CreateRequest;
use crate::api::response::Response;

fn turn(id: &str, text: &str) -> Turn {
    turn_for(id, json!({"model": "m", "input": text}))
}

/// The turn of response `id` to the create request `body` (its `input` a
/// string), answered with `echo {input}`.
pub(super) fn turn_for(id: &str, body: serde_json::Value) -> Turn {
    let text = body["input"].as_str().unwrap_or_default().to_owned();
    let request = CreateRequest::parse(body.to_string().as_bytes()).unwrap();
    let mut response = Response::start(id.to_owned(), 1, &request);
    response
        .output
        .push(Item::user_text(format!("echo {text}")));
    Turn {
        response,
        input: request.input.unwrap().into_items(),
    }
}

/// Saves a chain of `depth` turns, returning the last id.
fn chain(store: &ResponseStore<MemoryKv>, depth: usize) -> String {
    let mut parent: Option<Conversation> = None;
    let mut id = String::new();
    for i in 0..depth {
        id = format!("resp_{i}");
        store
            .save(
                &turn(&id, &format!("turn {i}")),
                None,
                parent.as_ref(),
                None,
            )
            .unwrap();
        parent = store.conversation(&id, 0).unwrap();
    }
    id
}

#[test]
fn save_and_read_back() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let t = turn("resp_a", "hi");
    store.save(&t, None, None, None).unwrap();
    assert_eq!(store.turn("resp_a", 0).unwrap(), Some(t));
    assert!(store.turn("resp_b", 0).unwrap().is_none());
}

#[test]
fn continuation_costs_constant_round_trips() {
    let mut costs = Vec::new();
    for depth in [1, 10, 50] {
        let kv = MemoryKv::default();
        let store = ResponseStore::new(&kv, "t");
        let last = chain(&store, depth);
        *kv.round_trips.borrow_mut() = 0;
        let conversation = store.conversation(&last, 0).unwrap().unwrap();
        assert_eq!(conversation.turns().unwrap().len(), depth);
        store
            .save(&turn("resp_next", "more"), None, Some(&conversation), None)
            .unwrap();
        costs.push(*kv.round_trips.borrow());
    }
    // get, get_many, increment, the batch and the pointer.
    assert_eq!(costs, [5, 5, 5]);
}

#[test]
fn storage_grows_linearly() {
    let size = |depth| {
        let kv = MemoryKv::default();
        chain(&ResponseStore::new(&kv, "t"), depth);
        let total: usize = kv.values.borrow().values().map(Vec::len).sum();
        total
    };
    // Whole packs in both: each turn is stored twice, in its slot and in a pack.
    let (s16, s64) = (size(16), size(64));
    // Quadratic growth would make 64 turns ~16x the size of 16.
    assert!(s64 < s16 * 5, "{s16} -> {s64}");
}

#[test]
fn large_turns_are_split() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let big = "x".repeat(SLOT_BYTES * 2 + 10);
    let t = turn("resp_big", &big);
    store.save(&t, None, None, None).unwrap();
    assert!(kv.values.borrow().values().all(|v| v.len() <= SLOT_BYTES));
    assert_eq!(store.turn("resp_big", 0).unwrap(), Some(t));
}

#[test]
fn branches_keep_both_histories() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    store
        .save(&turn("resp_root", "root"), None, None, None)
        .unwrap();
    let root = store.conversation("resp_root", 0).unwrap().unwrap();
    store
        .save(&turn("resp_a", "a"), None, Some(&root), None)
        .unwrap();
    store
        .save(&turn("resp_b", "b"), None, Some(&root), None)
        .unwrap();
    let ids = |id: &str| -> Vec<String> {
        store
            .conversation(id, 0)
            .unwrap()
            .unwrap()
            .turns()
            .unwrap()
            .iter()
            .map(|t| t.id.clone())
            .collect()
    };
    assert_eq!(ids("resp_a"), ["resp_root", "resp_a"]);
    assert_eq!(ids("resp_b"), ["resp_root", "resp_b"]);
}

#[test]
fn tenants_are_isolated_and_expiry_hides() {
    let kv = MemoryKv::default();
    ResponseStore::new(&kv, "alice")
        .save(&turn("resp_x", "hi"), None, None, Some(100))
        .unwrap();
    assert!(ResponseStore::new(&kv, "bob")
        .turn("resp_x", 0)
        .unwrap()
        .is_none());
    let alice = ResponseStore::new(&kv, "alice");
    assert!(alice.turn("resp_x", 100).unwrap().is_some());
    assert!(alice.turn("resp_x", 101).unwrap().is_none());
}

#[test]
fn delete_removes_pointer_and_turn() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    store.save(&turn("resp_d", "hi"), None, None, None).unwrap();
    assert!(store.delete("resp_d", 0).unwrap());
    assert!(!store.delete("resp_d", 0).unwrap());
    assert!(kv
        .values
        .borrow()
        .keys()
        .all(|k| !k.contains("/log/") && !k.contains("/resp/")));
    assert!(kv.values.borrow().keys().all(|k| !k.contains("/item/")));
}

#[test]
fn items_are_found_by_id() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let mut t = turn("resp_i", "hi");
    if let Item::Message(m) = &mut t.input[0] {
        m.id = Some("msg_in".into());
    }
    if let Item::Message(m) = &mut t.response.output[0] {
        m.id = Some("msg_out".into());
    }
    store.save(&t, None, None, Some(100)).unwrap();
    assert_eq!(store.item("msg_in", 0).unwrap().as_ref(), Some(&t.input[0]));
    assert_eq!(
        store.item("msg_out", 0).unwrap().as_ref(),
        Some(&t.response.output[0])
    );
    assert!(store.item("msg_nope", 0).unwrap().is_none());
    assert!(
        store.item("msg_in", 101).unwrap().is_none(),
        "expired with its response"
    );
    assert!(ResponseStore::new(&kv, "other")
        .item("msg_in", 0)
        .unwrap()
        .is_none());
}

#[test]
fn ttl_hides_a_whole_conversation_turn_by_turn() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    store
        .save(&turn("resp_1", "a"), None, None, Some(10))
        .unwrap();
    let parent = store.conversation("resp_1", 0).unwrap().unwrap();
    store
        .save(&turn("resp_2", "b"), None, Some(&parent), Some(20))
        .unwrap();
    assert!(store.conversation("resp_1", 10).unwrap().is_some());
    assert!(store.conversation("resp_1", 11).unwrap().is_none());
    assert_eq!(
        store
            .conversation("resp_2", 11)
            .unwrap()
            .unwrap()
            .turns()
            .unwrap()
            .len(),
        2
    );
    assert!(store.conversation("resp_2", 21).unwrap().is_none());
    assert!(
        !store.delete("resp_2", 21).unwrap(),
        "an expired response is gone"
    );
}

#[test]
fn long_chains_are_read_from_packs() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let last = chain(&store, 40);
    let pointer = store.conversation(&last, 0).unwrap().unwrap().pointer;
    assert_eq!(pointer.segments.len(), 1);
    assert_eq!(pointer.segments[0].packs, [0, 16]);
    let packs: Vec<String> = kv
        .values
        .borrow()
        .keys()
        .filter(|k| k.contains("/pack/"))
        .cloned()
        .collect();
    assert_eq!(packs.len(), 2, "{packs:?}");

    // Two packs and eight single slots, in one batch, give every turn in order.
    *kv.round_trips.borrow_mut() = 0;
    let conversation = store.conversation(&last, 0).unwrap().unwrap();
    assert_eq!(*kv.round_trips.borrow(), 2);
    let ids: Vec<String> = conversation
        .turns()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("resp_{i}")).collect();
    assert_eq!(ids, expected);

    // A pack that is gone is read slot by slot.
    kv.values.borrow_mut().remove(&packs[0]);
    *kv.round_trips.borrow_mut() = 0;
    let again = store.conversation(&last, 0).unwrap().unwrap();
    assert_eq!(*kv.round_trips.borrow(), 3);
    assert_eq!(again.turns().unwrap().len(), 40);
}

#[test]
fn deleting_a_turn_deletes_the_pack_that_repeats_it() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let last = chain(&store, 20);
    assert!(store.delete("resp_3", 0).unwrap());
    let packs = kv
        .values
        .borrow()
        .keys()
        .filter(|k| k.contains("/pack/"))
        .count();
    assert_eq!(packs, 0);
    let err = store.conversation(&last, 0).unwrap_err();
    assert_eq!(err.status, 404);
    assert!(store.conversation("resp_2", 0).unwrap().is_some());
}

#[test]
fn a_turn_deleted_while_a_continuation_waits_stays_deleted() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    // resp_15 ends slot 15: its continuation completes the pack of slots
    // 0 to 15 from the loose slots it read.
    let last = chain(&store, 15);
    let parent = store.conversation(&last, 0).unwrap().unwrap();
    // While the continuation waits on the backend, turn 3 is deleted...
    assert!(store.delete("resp_3", 0).unwrap());
    // ...and then the continuation saves, with the pack it built before.
    store
        .save(&turn("resp_next", "more"), None, Some(&parent), None)
        .unwrap();
    assert!(
        kv.values.borrow().keys().any(|k| k.contains("/pack/")),
        "the stale pack was written"
    );
    // The deleted turn does not come back through it.
    let err = store.conversation("resp_next", 0).unwrap_err();
    assert_eq!(err.status, 404, "{}", err.message);
    assert!(store.turn("resp_3", 0).unwrap().is_none());
    // Turns before the deleted one still read, and a new chain on the same
    // thread after the deletion packs and reads again.
    assert_eq!(
        store
            .conversation("resp_2", 0)
            .unwrap()
            .unwrap()
            .turns()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_save_cut_short_before_its_pointer_leaves_nothing_readable() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let parent = {
        chain(&store, 2);
        store.conversation("resp_1", 0).unwrap().unwrap()
    };
    kv.fail_after(2); // increment and batch pass, the pointer write fails
    assert!(store
        .save(&turn("resp_next", "x"), None, Some(&parent), None)
        .is_err());
    kv.fail_after(u64::MAX);
    assert!(store.turn("resp_next", 0).unwrap().is_none());
    assert!(store.conversation("resp_next", 0).unwrap().is_none());
}

#[test]
fn branches_do_not_use_packs_of_other_branches() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    chain(&store, 20);
    // Branch from turn 10: its conversation ends before the second run.
    let parent = store.conversation("resp_10", 0).unwrap().unwrap();
    store
        .save(&turn("resp_branch", "b"), None, Some(&parent), None)
        .unwrap();
    let turns = store
        .conversation("resp_branch", 0)
        .unwrap()
        .unwrap()
        .turns()
        .unwrap();
    let ids: Vec<&str> = turns.iter().map(|t| t.id.as_str()).collect();
    let mut expected: Vec<String> = (0..=10).map(|i| format!("resp_{i}")).collect();
    expected.push("resp_branch".into());
    assert_eq!(ids, expected);
}

#[test]
fn a_branch_takes_no_slot_from_its_parents_thread() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    chain(&store, 3);
    let len = || kv.values.borrow().get("t/len/resp_0").cloned();
    let before = len();
    for branch in ["resp_b1", "resp_b2"] {
        let parent = store.conversation("resp_1", 0).unwrap().unwrap();
        *kv.round_trips.borrow_mut() = 0;
        store
            .save(&turn(branch, "b"), None, Some(&parent), None)
            .unwrap();
        // One increment, for the branch's own thread, the batch write
        // and the pointer.
        assert_eq!(*kv.round_trips.borrow(), 3, "{branch}");
    }
    assert_eq!(len(), before, "the main thread keeps its length");
    // The main thread can still be continued in place.
    let end = store.conversation("resp_2", 0).unwrap().unwrap();
    store
        .save(&turn("resp_3", "c"), None, Some(&end), None)
        .unwrap();
    let pointer = store.conversation("resp_3", 0).unwrap().unwrap().pointer;
    assert_eq!(pointer.segments.len(), 1);
    assert_eq!(pointer.turn.thread, "resp_0");
}

#[test]
fn counters_read_in_either_form() {
    assert_eq!(super::counter(&7i64.to_le_bytes()), Some(7));
    assert_eq!(super::counter(b"7"), Some(7));
    assert_eq!(super::counter(b"12345678"), Some(12_345_678));
    assert_eq!(
        super::counter(&12_345_678i64.to_le_bytes()),
        Some(12_345_678)
    );
    assert_eq!(super::counter(b"-1"), None);
    assert_eq!(super::counter(b""), None);
    assert_eq!(super::counter(b"abc"), None);
}

/// A turn of an agent: 30 KB of tools and 4 KB of instructions, as agent
/// clients resend them every turn.
pub(super) fn agent_turn(id: &str, text: &str) -> Turn {
    let tools: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            json!({"type": "function", "name": format!("tool_{i}"),
                "description": "x".repeat(400),
                "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}})
        })
        .collect();
    turn_for(
        id,
        json!({"model": "m", "input": text, "tools": tools, "instructions": "be careful. ".repeat(350)}),
    )
}

fn stored_bytes(kv: &MemoryKv) -> usize {
    kv.values.borrow().values().map(Vec::len).sum()
}

#[test]
fn repeated_tools_and_instructions_are_stored_once_per_thread() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    let first = agent_turn("resp_0", "turn 0");
    let tools_bytes = serde_json::to_vec(&first.response.tools).unwrap().len();
    assert!(tools_bytes > 30_000, "{tools_bytes}");
    store.save(&first, None, None, None).unwrap();
    let after_first = stored_bytes(&kv);
    let mut parent = store.conversation("resp_0", 0).unwrap();
    for i in 1..=10 {
        let id = format!("resp_{i}");
        store
            .save(
                &agent_turn(&id, &format!("turn {i}")),
                None,
                parent.as_ref(),
                None,
            )
            .unwrap();
        parent = store.conversation(&id, 0).unwrap();
    }
    let per_turn = (stored_bytes(&kv) - after_first) / 10;
    assert!(per_turn < 2_500, "{per_turn} bytes per turn");
    // Every turn reads back whole.
    for i in [0, 5, 10] {
        let id = format!("resp_{i}");
        let read = store.turn(&id, 0).unwrap().unwrap();
        assert_eq!(read, agent_turn(&id, &format!("turn {i}")));
    }
    // A branch stores them again, on its own thread; both read back.
    let branch_parent = store.conversation("resp_4", 0).unwrap();
    store
        .save(
            &agent_turn("resp_b", "b"),
            None,
            branch_parent.as_ref(),
            None,
        )
        .unwrap();
    assert_eq!(
        store.turn("resp_b", 0).unwrap().unwrap(),
        agent_turn("resp_b", "b")
    );
    let shared = kv
        .values
        .borrow()
        .keys()
        .filter(|k| k.contains("/shared/"))
        .count();
    assert_eq!(shared, 4, "tools and instructions, on two threads");
    // Deleting one turn leaves the parts its thread still uses.
    assert!(store.delete("resp_0", 0).unwrap());
    assert_eq!(
        store.turn("resp_5", 0).unwrap().unwrap(),
        agent_turn("resp_5", "turn 5")
    );
}

#[test]
fn a_turn_whose_tools_change_stores_the_new_ones() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    store
        .save(&agent_turn("resp_0", "a"), None, None, None)
        .unwrap();
    let parent = store.conversation("resp_0", 0).unwrap();
    let mut changed = agent_turn("resp_1", "b");
    changed.response.tools.pop();
    store.save(&changed, None, parent.as_ref(), None).unwrap();
    assert_eq!(store.turn("resp_1", 0).unwrap().unwrap(), changed);
    assert_eq!(
        store.turn("resp_0", 0).unwrap().unwrap(),
        agent_turn("resp_0", "a")
    );
}

#[test]
fn a_damaged_pointer_is_an_error_not_a_huge_read() {
    let kv = MemoryKv::default();
    let store = ResponseStore::new(&kv, "t");
    for (start, end) in [(5, 2), (0, u64::MAX), (u64::MAX - 3, u64::MAX)] {
        let pointer = json!({
            "segments": [{"thread": "x", "start": start, "end": end, "packs": [start]}],
            "turn": {"thread": "x", "start": start, "end": end},
        });
        kv.values
            .borrow_mut()
            .insert("t/resp/resp_bad".into(), pointer.to_string().into_bytes());
        let read = store.conversation("resp_bad", 0);
        if end - start.min(end) > 16 || start > end {
            assert_eq!(read.unwrap_err().status, 500, "{start}..{end}");
        }
        let _ = store.turn("resp_bad", 0);
        let _ = store.delete("resp_bad", 0);
    }
}
