//! `truncation: "auto"`: when a request would not fit the model's context
//! window (`model_context_windows`), the oldest items of its history are
//! left out of the chat request, never a tool call without its output nor
//! an output without its call, and never the request's own input.
//!
//! Tokens are estimated from bytes of text, one token per
//! [`BYTES_PER_TOKEN`] bytes, plus [`ITEM_OVERHEAD`] for each item's
//! structure: conservative for English and code alike, so what is sent
//! fits, at the cost of sometimes leaving out a little more than needed.
//! (Counting instead of serializing keeps this off the component's size.) What is stored is not changed: a later turn with a larger
//! window sees the whole conversation again.

use crate::api::items::{ContentPart, Item};

/// Bytes of text counted as one token.
pub const BYTES_PER_TOKEN: usize = 3;

/// Bytes counted for an item besides its text: roles, types, ids, quotes.
pub const ITEM_OVERHEAD: usize = 96;

/// What has to fit: the window, and what the request spends besides its
/// history.
pub struct Budget {
    /// The model's context window, in tokens.
    pub window: u64,
    /// Tokens kept for the answer (`max_output_tokens`).
    pub reserve: u64,
    /// Bytes of everything but the history: instructions, tools, input.
    pub fixed_bytes: usize,
}

impl Budget {
    /// Bytes of history that fit.
    fn history_bytes(&self) -> usize {
        let tokens = self.window.saturating_sub(self.reserve);
        let bytes = usize::try_from(tokens)
            .unwrap_or(usize::MAX)
            .saturating_mul(BYTES_PER_TOKEN);
        bytes.saturating_sub(self.fixed_bytes)
    }

    /// Whether a history of `bytes` fits.
    pub fn fits(&self, bytes: usize) -> bool {
        bytes <= self.history_bytes()
    }
}

/// About the size of an item's chat message: its text and
/// [`ITEM_OVERHEAD`].
pub fn item_bytes(item: &Item) -> usize {
    let text = match item {
        Item::Message(message) => message
            .content
            .iter()
            .map(|part| match part {
                ContentPart::InputImage { image_url, .. } => {
                    image_url.as_ref().map_or(0, String::len)
                }
                other => other.text().map_or(0, str::len),
            })
            .sum(),
        Item::FunctionCall(call) => call.name.len() + call.arguments.len(),
        Item::FunctionCallOutput(output) => output.output.to_text().len(),
        Item::CustomToolCall(call) => call.name.len() + call.input.len(),
        Item::CustomToolCallOutput(output) => output.output.to_text().len(),
        Item::Reasoning(reasoning) => reasoning.text().len(),
        Item::Other(value) => serde_json::to_vec(value).map_or(0, |b| b.len()),
        Item::ItemReference(_) => 0,
    };
    text + ITEM_OVERHEAD
}

/// About the size of `items`' chat messages.
pub fn items_bytes(items: &[Item]) -> usize {
    items.iter().map(item_bytes).sum()
}

/// `history` without its oldest units, so that what is left fits `budget`.
pub fn drop_oldest(history: Vec<Item>, budget: &Budget) -> Vec<Item> {
    let units = units(&history);
    let sizes: Vec<usize> = units
        .iter()
        .map(|range| history[range.clone()].iter().map(item_bytes).sum())
        .collect();
    let mut total: usize = sizes.iter().sum();
    let mut first = 0;
    while first < units.len() && !budget.fits(total) {
        total -= sizes[first];
        first += 1;
    }
    let start = units.get(first).map_or(history.len(), |range| range.start);
    history.into_iter().skip(start).collect()
}

/// The items in groups that go together: a tool call with everything up to
/// its output (parallel calls and their outputs are one group), and
/// reasoning with the item after it.
fn units(items: &[Item]) -> Vec<std::ops::Range<usize>> {
    let mut units = Vec::new();
    let mut start = 0;
    // Calls of the group still waiting for their outputs (a handful).
    let mut pending: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::FunctionCall(_) | Item::CustomToolCall(_) => {
                pending.extend(item.call_id());
            }
            Item::FunctionCallOutput(_) | Item::CustomToolCallOutput(_) => {
                pending.retain(|id| Some(*id) != item.call_id());
            }
            _ => {}
        }
        let joins_next = matches!(item, Item::Reasoning(_)) || !pending.is_empty();
        if !joins_next {
            units.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < items.len() {
        units.push(start..items.len());
    }
    units
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(value: serde_json::Value) -> Item {
        serde_json::from_value(value).unwrap()
    }

    fn user(text: &str) -> Item {
        Item::user_text(text)
    }

    fn call(id: &str) -> Item {
        item(json!({"type": "function_call", "call_id": id, "name": "f", "arguments": "{}"}))
    }

    fn output(id: &str) -> Item {
        item(json!({"type": "function_call_output", "call_id": id, "output": "x".repeat(50)}))
    }

    #[test]
    fn calls_stay_with_their_outputs_and_reasoning_with_what_follows() {
        let items = vec![
            user("a"),
            call("1"),
            call("2"),
            output("1"),
            output("2"),
            item(json!({"type": "reasoning", "summary": []})),
            user("b"),
            call("3"),
        ];
        assert_eq!(units(&items), [0..1, 1..5, 5..7, 7..8]);
    }

    #[test]
    fn the_oldest_units_go_until_the_rest_fits() {
        let history = vec![
            user(&"x".repeat(300)),
            call("1"),
            output("1"),
            user("recent"),
        ];
        let all: usize = history.iter().map(item_bytes).sum();
        let budget = |history_bytes: usize| Budget {
            window: u64::try_from((history_bytes + 100) / BYTES_PER_TOKEN).unwrap(),
            reserve: 0,
            fixed_bytes: 100,
        };
        assert_eq!(drop_oldest(history.clone(), &budget(all + 3)).len(), 4);
        // Room for all but the long first message: the call and its output
        // stay together.
        let kept = drop_oldest(history.clone(), &budget(all - 300));
        assert_eq!(kept.len(), 3);
        assert!(matches!(kept[0], Item::FunctionCall(_)));
        // Room for less than the call and its output: both go.
        let recent = item_bytes(&history[3]);
        assert_eq!(drop_oldest(history.clone(), &budget(recent + 10)).len(), 1);
        assert!(drop_oldest(history, &budget(0)).is_empty());
    }

    #[test]
    fn a_reserve_larger_than_the_window_leaves_no_history() {
        let budget = Budget {
            window: 10,
            reserve: 100,
            fixed_bytes: 0,
        };
        assert!(!budget.fits(1));
        assert!(budget.fits(0));
    }
}
