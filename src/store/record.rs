//! How one turn is written in a conversation log.
//!
//! A turn is up to four JSON documents back to back:
//!
//! 1. the head, `{"id", "rendering", "reasoning", "chat", "items", "rest"}`:
//!    the response's id, and the byte lengths of the documents that follow
//!    (`chat` and what it was rendered with are absent when the turn kept no
//!    messages, see [`KeptChat`]);
//! 2. the kept chat messages, an array, rendered by version `rendering` of
//!    the chat rendering with `reasoning` passed on or not;
//! 3. the items, `{"input", "output"}`: the input items the response was
//!    given and its output items;
//! 4. the rest of the response: every field but `output` (which is `[]`
//!    there). A large `tools` or `instructions` (agents resend the same
//!    tens of kilobytes every turn) is not in it but stored apart, once per
//!    thread, as a [`Shared`] part named by its SHA-256; the field holds
//!    `{"$shared": hash}` and the head lists the hashes (`shared`).
//!
//! A replay reads only what it uses and steps over the rest by length: the
//! kept messages when every turn has them, else the items. So a deep
//! conversation costs its messages, not its responses' settings, tools and
//! usage. Reading a whole turn parses the items and the rest and puts the
//! output back.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Turn, TurnItems};
use crate::api::items::Item;
use crate::api::response::Response;
use crate::chat::{KeptMessages, RENDERING};
use crate::error::ApiError;
use crate::ids::hex;

/// Response fields that may be stored apart.
const SHARED_FIELDS: [&str; 2] = ["tools", "instructions"];

/// Fields this large or larger (as JSON) are stored apart.
pub const SHARED_MIN_BYTES: usize = 1024;

/// How a field stored apart is referred to in the rest of its response.
const SHARED_REF: &str = "$shared";

/// A part of a response stored apart: the JSON of one field, named by the
/// hex SHA-256 of those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub hash: String,
    pub bytes: Vec<u8>,
}

/// A turn as written: its bytes in the log, and the parts stored apart.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub shared: Vec<Shared>,
}

/// A turn's chat messages as sent to the backend, kept so that a later
/// replay can pass them on without reading the turn's items.
#[derive(Debug)]
pub struct KeptChat {
    /// Whether reasoning was passed on when they were rendered.
    pub reasoning: bool,
    /// The messages, a JSON array.
    pub messages: Vec<u8>,
}

#[derive(Serialize)]
struct HeadOut<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rendering: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat: Option<usize>,
    items: usize,
    rest: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shared: Vec<&'a str>,
}

#[derive(Serialize)]
struct ItemsOut<'a> {
    input: &'a [Item],
    output: &'a [Item],
}

/// The lengths of what follows a head: kept messages, items, rest.
trait Head {
    fn lengths(&self) -> [usize; 3];
}

/// A head read for its items.
#[derive(Deserialize)]
struct ItemsHead {
    #[serde(default)]
    id: String,
    #[serde(default)]
    chat: usize,
    #[serde(default)]
    items: usize,
    #[serde(default)]
    rest: usize,
    #[serde(default)]
    shared: Vec<String>,
}

impl Head for ItemsHead {
    fn lengths(&self) -> [usize; 3] {
        [self.chat, self.items, self.rest]
    }
}

/// A head read for its kept messages.
#[derive(Deserialize)]
struct ChatHead {
    #[serde(default)]
    rendering: Option<u32>,
    #[serde(default)]
    reasoning: Option<bool>,
    #[serde(default)]
    chat: Option<usize>,
    #[serde(default)]
    items: usize,
    #[serde(default)]
    rest: usize,
}

impl Head for ChatHead {
    fn lengths(&self) -> [usize; 3] {
        [self.chat.unwrap_or(0), self.items, self.rest]
    }
}

#[derive(Deserialize)]
struct ItemsIn {
    #[serde(default)]
    input: Vec<Item>,
    #[serde(default)]
    output: Vec<Item>,
}

/// The bytes of `turn` in the log, with its kept messages if any, and the
/// parts of it stored apart.
pub fn encode(turn: &Turn, chat: Option<&KeptChat>) -> Result<Encoded, ApiError> {
    let items = serde_json::to_vec(&ItemsOut {
        input: &turn.input,
        output: &turn.response.output,
    })
    .map_err(unencodable)?;
    let mut rest = turn.response.clone();
    rest.output = Vec::new();
    let (rest, shared) = encode_rest(&rest)?;
    let head = HeadOut {
        id: &turn.response.id,
        rendering: chat.map(|_| RENDERING),
        reasoning: chat.map(|c| c.reasoning),
        chat: chat.map(|c| c.messages.len()),
        items: items.len(),
        rest: rest.len(),
        shared: shared.iter().map(|s| s.hash.as_str()).collect(),
    };
    let mut bytes = serde_json::to_vec(&head).map_err(unencodable)?;
    if let Some(chat) = chat {
        bytes.extend_from_slice(&chat.messages);
    }
    bytes.extend_from_slice(&items);
    bytes.extend_from_slice(&rest);
    Ok(Encoded { bytes, shared })
}

/// The rest of a response, with its large repeated fields stored apart.
fn encode_rest(rest: &Response) -> Result<(Vec<u8>, Vec<Shared>), ApiError> {
    let large = |field: &str| -> Result<Option<Vec<u8>>, ApiError> {
        let bytes = match field {
            "tools" => serde_json::to_vec(&rest.tools),
            _ => serde_json::to_vec(&rest.instructions),
        }
        .map_err(unencodable)?;
        Ok((bytes.len() >= SHARED_MIN_BYTES).then_some(bytes))
    };
    let mut shared = Vec::new();
    for field in SHARED_FIELDS {
        if let Some(bytes) = large(field)? {
            shared.push((field, bytes));
        }
    }
    if shared.is_empty() {
        return Ok((serde_json::to_vec(rest).map_err(unencodable)?, Vec::new()));
    }
    let mut value = serde_json::to_value(rest).map_err(unencodable)?;
    let mut parts = Vec::with_capacity(shared.len());
    for (field, bytes) in shared {
        let hash = hex(&Sha256::digest(&bytes));
        if let Some(slot) = value.get_mut(field) {
            *slot = serde_json::json!({ SHARED_REF: hash });
        }
        parts.push(Shared { hash, bytes });
    }
    Ok((serde_json::to_vec(&value).map_err(unencodable)?, parts))
}

/// The rest of a response, with the fields stored apart put back from
/// `shared` (hash → JSON).
fn decode_rest(
    rest: &[u8],
    refs: &[String],
    shared: &[(String, Vec<u8>)],
) -> Result<Response, ApiError> {
    if refs.is_empty() {
        return crate::api::from_slice(rest).map_err(unreadable);
    }
    let mut value: Value = crate::api::from_slice(rest).map_err(unreadable)?;
    for field in SHARED_FIELDS {
        let Some(slot) = value.get_mut(field) else {
            continue;
        };
        let Some(hash) = slot.get(SHARED_REF).and_then(Value::as_str) else {
            continue;
        };
        let bytes = shared
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, bytes)| bytes)
            .ok_or_else(|| unreadable(format!("its {field} are no longer stored")))?;
        *slot = crate::api::from_slice(bytes).map_err(unreadable)?;
    }
    serde_json::from_value(value).map_err(unreadable)
}

/// The kept messages of every turn in `bytes`, in order; `None` unless
/// every turn kept them, rendered by this version of the rendering with the
/// same `reasoning` setting.
pub fn decode_chat(bytes: &[u8], reasoning: bool) -> Result<Option<KeptMessages>, ApiError> {
    let mut messages = KeptMessages::default();
    for record in Records::<ChatHead>::new(bytes) {
        let (head, [chat, _, _]) = record?;
        match head.chat {
            Some(_) if head.rendering == Some(RENDERING) && head.reasoning == Some(reasoning) => {
                messages.push_array(chat)
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(messages))
}

/// The ids and items of every turn in `bytes`, in order.
pub fn decode_items(bytes: &[u8]) -> Result<Vec<TurnItems>, ApiError> {
    Records::<ItemsHead>::new(bytes)
        .map(|record| {
            let (head, [_, items, _]) = record?;
            let items: ItemsIn = crate::api::from_slice(items).map_err(unreadable)?;
            Ok(TurnItems {
                id: head.id,
                input: items.input,
                output: items.output,
                shared: head.shared,
            })
        })
        .collect()
}

/// The ids and items of the whole turns at the start of `bytes`, and the
/// number of bytes they take: a turn cut off at the end (its last slots not
/// read yet), or one that cannot be read, ends the prefix.
pub fn decode_items_prefix(bytes: &[u8]) -> (Vec<TurnItems>, usize) {
    let mut records = Records::<ItemsHead>::new(bytes);
    let mut turns = Vec::new();
    loop {
        let start = records.pos;
        let Some(Ok((head, [_, items, _]))) = records.next() else {
            return (turns, start);
        };
        let Ok(items) = crate::api::from_slice::<ItemsIn>(items) else {
            return (turns, start);
        };
        turns.push(TurnItems {
            id: head.id,
            input: items.input,
            output: items.output,
            shared: head.shared,
        });
    }
}

/// Every whole turn in `bytes`, in order, with the parts stored apart
/// from `shared` (hash → JSON).
pub fn decode_turns(bytes: &[u8], shared: &[(String, Vec<u8>)]) -> Result<Vec<Turn>, ApiError> {
    Records::<ItemsHead>::new(bytes)
        .map(|record| {
            let (head, [_, items, rest]) = record?;
            let items: ItemsIn = crate::api::from_slice(items).map_err(unreadable)?;
            let mut response = decode_rest(rest, &head.shared, shared)?;
            response.output = items.output;
            Ok(Turn {
                response,
                input: items.input,
            })
        })
        .collect()
}

/// The turns of a log, each as its parsed head and the bytes of the
/// documents that follow it: kept messages, items, rest.
struct Records<'b, H> {
    bytes: &'b [u8],
    pos: usize,
    head: std::marker::PhantomData<H>,
}

impl<'b, H> Records<'b, H> {
    fn new(bytes: &'b [u8]) -> Self {
        Records {
            bytes,
            pos: 0,
            head: std::marker::PhantomData,
        }
    }
}

impl<'b, H: Head + serde::de::DeserializeOwned> Iterator for Records<'b, H> {
    type Item = Result<(H, [&'b [u8]; 3]), ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        let remaining = self.bytes.get(self.pos..)?;
        let mut stream = serde_json::Deserializer::from_slice(remaining).into_iter::<H>();
        let head = match stream.next()? {
            Ok(head) => head,
            Err(e) => {
                self.pos = self.bytes.len();
                return Some(Err(unreadable(e)));
            }
        };
        let mut end = self.pos + stream.byte_offset();
        let mut parts: [&'b [u8]; 3] = [&[]; 3];
        for (part, len) in parts.iter_mut().zip(head.lengths()) {
            let Some(bytes) = end.checked_add(len).and_then(|e| self.bytes.get(end..e)) else {
                self.pos = self.bytes.len();
                return Some(Err(unreadable("a turn ends before its response")));
            };
            *part = bytes;
            end += len;
        }
        self.pos = end;
        Some(Ok((head, parts)))
    }
}

fn unencodable(e: serde_json::Error) -> ApiError {
    ApiError::server(format!("Response could not be encoded: {e}"))
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::server(format!("Stored conversation is unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::tests::turn_for;

    /// A turn whose response carries instructions and tools, which the
    /// head and the items leave out.
    fn turn(id: &str, text: &str) -> Turn {
        turn_for(
            id,
            json!({"model": "m", "input": text, "instructions": "be brief", "tools": [
                {"type": "function", "name": "f", "parameters": {"type": "object"}}
            ]}),
        )
    }

    fn log(turns: &[Turn]) -> Vec<u8> {
        turns
            .iter()
            .flat_map(|t| encode(t, None).unwrap().bytes)
            .collect()
    }

    #[test]
    fn whole_turns_round_trip() {
        let turns = [turn("resp_a", "a"), turn("resp_b", "b")];
        assert_eq!(decode_turns(&log(&turns), &[]).unwrap(), turns);
    }

    #[test]
    fn items_skip_the_rest_of_each_response() {
        let turns = [turn("resp_a", "a"), turn("resp_b", "b")];
        let items = decode_items(&log(&turns)).unwrap();
        assert_eq!(items.len(), 2);
        for (read, written) in items.iter().zip(&turns) {
            assert_eq!(read.id, written.response.id);
            assert_eq!(read.input, written.input);
            assert_eq!(read.output, written.response.output);
        }
    }

    #[test]
    fn head_items_and_rest_are_separate_documents() {
        let bytes = encode(&turn("resp_a", "a"), None).unwrap().bytes;
        let mut stream =
            serde_json::Deserializer::from_slice(&bytes).into_iter::<serde_json::Value>();
        let head = stream.next().unwrap().unwrap();
        let items = stream.next().unwrap().unwrap();
        let rest = stream.next().unwrap().unwrap();
        assert!(stream.next().is_none());
        assert_eq!(head["id"], "resp_a");
        assert!(head.get("chat").is_none() && head.get("reasoning").is_none());
        assert_eq!(head["items"], serde_json::to_vec(&items).unwrap().len());
        assert_eq!(head["rest"], serde_json::to_vec(&rest).unwrap().len());
        assert_eq!(items["output"][0]["content"][0]["text"], "echo a");
        assert_eq!(rest["output"], json!([]));
        assert_eq!(rest["instructions"], "be brief");
    }

    fn kept(reasoning: bool, text: &str) -> KeptChat {
        let messages = json!([{"role": "user", "content": text}]);
        KeptChat {
            reasoning,
            messages: serde_json::to_vec(&messages).unwrap(),
        }
    }

    /// The kept messages as the JSON array they are sent in.
    fn texts(messages: Option<KeptMessages>) -> Option<serde_json::Value> {
        let messages = crate::chat::ChatMessages {
            kept: messages?,
            ..Default::default()
        };
        Some(serde_json::to_value(&messages).unwrap())
    }

    #[test]
    fn kept_messages_are_read_only_when_every_turn_kept_them() {
        let (a, b) = (turn("resp_a", "a"), turn("resp_b", "b"));
        let mut bytes = encode(&a, Some(&kept(false, "a"))).unwrap().bytes;
        bytes.extend(encode(&b, Some(&kept(false, "b"))).unwrap().bytes);
        assert_eq!(
            texts(decode_chat(&bytes, false).unwrap()),
            Some(json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]))
        );
        assert!(
            decode_chat(&bytes, true).unwrap().is_none(),
            "other setting"
        );
        // Keeping messages changes nothing else.
        assert_eq!(decode_turns(&bytes, &[]).unwrap(), [a.clone(), b.clone()]);

        let mut partly = encode(&a, Some(&kept(false, "a"))).unwrap().bytes;
        partly.extend(encode(&b, None).unwrap().bytes);
        assert!(decode_chat(&partly, false).unwrap().is_none());
        assert_eq!(texts(decode_chat(b"", false).unwrap()), Some(json!([])));
    }

    #[test]
    fn damaged_logs_are_errors() {
        let bytes = encode(&turn("resp_a", "a"), Some(&kept(false, "a")))
            .unwrap()
            .bytes;
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            let damaged = &bytes[..cut];
            let none = [];
            assert_eq!(decode_turns(damaged, &none).unwrap_err().status, 500);
            assert_eq!(decode_items(damaged).unwrap_err().status, 500);
            assert_eq!(decode_chat(damaged, false).unwrap_err().status, 500);
        }
        let mut lying = serde_json::to_vec(&json!({"id": "x", "rest": usize::MAX})).unwrap();
        lying.extend_from_slice(b"{}");
        assert_eq!(decode_items(&lying).unwrap_err().status, 500);
        assert!(decode_items(b"").unwrap().is_empty());
    }
}
