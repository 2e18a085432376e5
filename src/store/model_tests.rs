//! A property test of the store against a model: random runs of create,
//! continue (appending or branching), delete, time passing and sweeps, with
//! faults injected into the key-value store (a call that fails partway
//! through a save or a delete, a batch written in part, a read served from
//! an earlier state). After every step, every response the store can read
//! must replay exactly its model history, with nothing deleted in it, and
//! every response that should be readable must be.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::retention::{self, Due};
use super::tests::turn_for;
use super::{Conversation, MemoryKv, ResponseStore};

const T0: i64 = 1_800_000_000;
const TTL: i64 = 300;

#[derive(Debug, Clone)]
enum Op {
    New,
    /// Continues the newest response: long runs on one thread, and packs.
    ContinueLast,
    /// As many continuations of the newest response in a row.
    Grow(u8),
    Continue(usize),
    /// Continues the newest response while one of its turns is deleted:
    /// the delete lands between the read and the save.
    ContinueRacingDelete(usize),
    Delete(usize),
    Advance(u16),
    Sweep(u8),
}

#[derive(Debug, Clone)]
enum Fault {
    None,
    /// This many calls succeed, then every call of the step fails.
    FailAfter(u8),
    /// The step's first batch write lands in part.
    PartialBatch(u8),
    /// The step's batch reads see the store as it was some steps ago.
    Stale(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::New),
        6 => Just(Op::ContinueLast),
        2 => (2u8..20).prop_map(Op::Grow),
        3 => any::<usize>().prop_map(Op::Continue),
        3 => any::<usize>().prop_map(Op::ContinueRacingDelete),
        1 => any::<usize>().prop_map(Op::Delete),
        2 => (1u16..200).prop_map(Op::Advance),
        2 => (0u8..30).prop_map(Op::Sweep),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => (0u8..6).prop_map(Fault::FailAfter),
        1 => (0u8..6).prop_map(Fault::PartialBatch),
        1 => (1u8..4).prop_map(Fault::Stale),
    ]
}

/// A response as the model sees it.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    /// Its conversation: the ids of its turns, oldest first.
    history: Vec<String>,
    expires_at: i64,
    /// The save reported success.
    saved: bool,
    /// A delete of it reported success.
    deleted: bool,
    /// A delete of it was attempted (it may have stopped partway).
    delete_tried: bool,
}

struct Run {
    kv: MemoryKv,
    now: i64,
    nodes: Vec<Node>,
    /// The store before each step, for stale reads.
    past: Vec<BTreeMap<String, Vec<u8>>>,
}

impl Run {
    fn store(&self) -> ResponseStore<'_, MemoryKv> {
        ResponseStore::new(&self.kv, "t")
    }

    fn step(&mut self, op: &Op, fault: &Fault) {
        self.past.push(self.kv.snapshot());
        match fault {
            Fault::None => {}
            Fault::FailAfter(n) => self.kv.fail_after(u64::from(*n)),
            Fault::PartialBatch(n) => self.kv.partial_next_batch(usize::from(*n)),
            Fault::Stale(back) => {
                let at = self.past.len().saturating_sub(usize::from(*back));
                self.kv.read_stale(self.past.get(at).cloned());
            }
        }
        self.apply(op);
        self.kv.heal();
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::New => self.save(None, None),
            Op::ContinueLast => {
                if !self.nodes.is_empty() {
                    self.save(Some(self.nodes.len() - 1), None);
                }
            }
            Op::Grow(turns) => {
                for _ in 0..*turns {
                    self.apply(&Op::ContinueLast);
                }
            }
            Op::ContinueRacingDelete(pick) => {
                if let Some(last) = self.nodes.last() {
                    let victim = last.history[pick % last.history.len()].clone();
                    self.save(Some(self.nodes.len() - 1), Some(victim));
                }
            }
            Op::Continue(pick) => {
                if !self.nodes.is_empty() {
                    self.save(Some(pick % self.nodes.len()), None);
                }
            }
            Op::Delete(pick) => {
                if !self.nodes.is_empty() {
                    let node = pick % self.nodes.len();
                    let id = self.nodes[node].id.clone();
                    self.delete(&id);
                }
            }
            Op::Advance(seconds) => self.now += i64::from(*seconds),
            Op::Sweep(grace) => {
                let due = Due {
                    now: self.now,
                    grace: i64::from(*grace),
                };
                let _ = retention::sweep(&self.kv, due);
            }
        }
    }

    fn delete(&mut self, id: &str) {
        let deleted = self.store().delete(id, self.now);
        if let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) {
            node.delete_tried = true;
            node.deleted |= matches!(deleted, Ok(true));
        }
    }

    /// Saves a new response, continuing node `parent` if given and the
    /// store can read it; `racing` is deleted after the read.
    fn save(&mut self, parent: Option<usize>, racing: Option<String>) {
        let id = format!("resp_{}", self.nodes.len());
        let (conversation, mut history): (Option<Conversation>, Vec<String>) = match parent {
            None => (None, Vec::new()),
            Some(parent) => {
                let parent = &self.nodes[parent];
                match self.store().conversation(&parent.id, self.now) {
                    Ok(Some(read)) => (Some(read), parent.history.clone()),
                    _ => return,
                }
            }
        };
        if let Some(victim) = racing {
            self.delete(&victim);
        }
        history.push(id.clone());
        // Every third response is an agent's, with tools and instructions
        // stored apart.
        let text = format!("says {id}");
        let turn = match self.nodes.len() % 3 {
            0 => turn_for(
                &id,
                json!({"model": "m", "input": text, "tools": [
                    {"type": "function", "name": "f", "description": "d".repeat(1100)}
                ], "instructions": "i".repeat(1100)}),
            ),
            _ => turn_for(&id, json!({"model": "m", "input": text})),
        };
        let expires_at = self.now + TTL;
        let saved = self
            .store()
            .save(&turn, None, conversation.as_ref(), Some(expires_at))
            .is_ok();
        self.nodes.push(Node {
            id,
            history,
            expires_at,
            saved,
            deleted: false,
            delete_tried: false,
        });
    }

    /// Every readable response replays its model history; every response
    /// that should be readable is.
    fn check(&self) -> Result<(), TestCaseError> {
        let by_id: BTreeMap<&str, &Node> = self.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        for node in &self.nodes {
            let read = self.store().conversation(&node.id, self.now);
            // A save that failed left nothing readable: its pointer is
            // written last.
            if !node.saved {
                prop_assert!(matches!(read, Ok(None)), "{} failed to save", node.id);
            }
            if let Ok(Some(conversation)) = &read {
                prop_assert!(!node.deleted, "{} was deleted", node.id);
                prop_assert!(node.expires_at >= self.now, "{} has expired", node.id);
                let turns = conversation
                    .turns()
                    .map_err(|e| TestCaseError::fail(e.message))?;
                let ids: Vec<&str> = turns.iter().map(|t| t.id.as_str()).collect();
                prop_assert_eq!(&ids, &node.history, "{} replays its history", &node.id);
                // Its own turn reads whole, parts stored apart included.
                let own = self.store().turn(&node.id, self.now);
                let own_id = match own {
                    Ok(turn) => turn.map(|t| t.response.id),
                    Err(e) => return Err(TestCaseError::fail(e.message)),
                };
                prop_assert_eq!(own_id.as_ref(), Some(&node.id));
                for turn in &turns {
                    let deleted = by_id.get(turn.id.as_str()).is_some_and(|n| n.deleted);
                    prop_assert!(!deleted, "{} replays deleted {}", &node.id, &turn.id);
                    let text = serde_json::to_string(&turn.input).unwrap_or_default();
                    prop_assert!(text.contains(&format!("says {}", turn.id)), "{text}");
                }
            }
            // Saved, live, and nothing in its history deleted: readable.
            let intact = node.history.iter().all(|id| {
                by_id
                    .get(id.as_str())
                    .is_some_and(|n| n.saved && !n.delete_tried)
            });
            if node.saved && node.expires_at >= self.now && intact {
                prop_assert!(
                    matches!(read, Ok(Some(_))),
                    "{} should be readable: {:?}",
                    node.id,
                    read.err().map(|e| e.message)
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn readable_responses_replay_exactly_their_history(
        steps in proptest::collection::vec((op(), fault()), 1..80)
    ) {
        run(&steps)?;
    }
}

/// Plays `steps` from an empty store, checking after each.
fn run(steps: &[(Op, Fault)]) -> Result<(), TestCaseError> {
    let mut run = Run {
        kv: MemoryKv::default(),
        now: T0,
        nodes: Vec::new(),
        past: Vec::new(),
    };
    for (op, fault) in steps {
        run.step(op, fault);
        run.check()?;
    }
    Ok(())
}

/// Found by the property test: a sweep whose batch read saw an expiry from
/// before the thread's last continuation removed that continuation's
/// history.
#[test]
fn a_sweep_reading_a_stale_expiry_keeps_a_live_history() {
    use Fault::{None as Clean, Stale};
    use Op::*;
    let steps = [
        (New, Clean),
        (New, Clean),
        (New, Clean),
        (New, Clean),
        (Advance(32), Clean),
        (New, Clean),
        (New, Stale(1)),
        (New, Clean),
        (New, Clean),
        (ContinueRacingDelete(0), Clean),
        (Advance(21), Clean),
        (Advance(99), Clean),
        (Continue(2629215891909986745), Clean),
        (New, Clean),
        (Continue(38653689883273688), Clean),
        (Continue(3465191309639349852), Stale(1)),
        (Advance(172), Clean),
        (Sweep(0), Stale(3)),
    ];
    if let Err(failure) = run(&steps) {
        panic!("{failure}");
    }
}
