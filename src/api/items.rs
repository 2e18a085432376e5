//! Conversation items: what a request's `input` holds and what a response's
//! `output` holds.
//!
//! One [`Item`] type serves both directions because clients send our output
//! back as input (with `store: false`, or when they manage the history
//! themselves). Accepting is lenient: messages without `type`, content as a
//! string or as parts, unknown fields and unknown item kinds are all taken.
//! Producing is strict: every item we emit carries `id` and `status`, and
//! `output_text` parts always carry `annotations` and `logprobs`.
//!
//! The module is long because it is the one place the item kinds are
//! defined: the enum and the type of each variant, with their wire tests.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One conversation item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message(Message),
    FunctionCall(FunctionCall),
    FunctionCallOutput(FunctionCallOutput),
    CustomToolCall(CustomToolCall),
    CustomToolCallOutput(CustomToolCallOutput),
    Reasoning(Reasoning),
    ItemReference(ItemReference),
    /// An item kind this server does not act on (hosted tool calls and the
    /// like). It is stored and listed as sent, and never shown to the
    /// backend; except a `compaction` item (see [`Compaction`]), which is
    /// kept in this form and replayed as the summary it carries.
    #[serde(untagged)]
    Other(Value),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
}

/// A message: text and media from a user, system or developer, or the
/// model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub role: Role,
    #[serde(deserialize_with = "content::deserialize")]
    pub content: Vec<ContentPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Codex marks assistant messages as `commentary` or `final_answer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// Progress of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText {
        text: String,
    },
    InputImage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default = "default_detail", deserialize_with = "detail")]
        detail: String,
    },
    InputFile {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    OutputText {
        text: String,
        #[serde(default, deserialize_with = "or_default")]
        annotations: Vec<Value>,
        #[serde(default, deserialize_with = "or_default")]
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

fn default_detail() -> String {
    "auto".to_owned()
}

/// `detail`, with `null` meaning the default.
fn detail<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(default_detail))
}

/// A field that other servers may send as `null`: the default then.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ContentPart {
    /// An `output_text` part with no annotations or logprobs.
    pub fn output_text(text: impl Into<String>) -> Self {
        ContentPart::OutputText {
            text: text.into(),
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }

    /// The text of a text-like part.
    pub fn text(&self) -> Option<&str> {
        match self {
            ContentPart::InputText { text } | ContentPart::OutputText { text, .. } => Some(text),
            ContentPart::Refusal { refusal } => Some(refusal),
            _ => None,
        }
    }
}

/// A call of a function tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub arguments: String,
    /// The `namespace` tool the function belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The result of a function call, sent by the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub output: ToolOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// A tool's output: a string, or content parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolOutput {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl ToolOutput {
    /// The output as text for a chat-completions `tool` message.
    pub fn to_text(&self) -> String {
        match self {
            ToolOutput::Text(text) => text.clone(),
            ToolOutput::Parts(parts) => parts
                .iter()
                .filter_map(ContentPart::text)
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// A call of a custom (freeform) tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The result of a custom tool call, sent by the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomToolCallOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub call_id: String,
    pub output: ToolOutput,
}

/// The model's reasoning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub summary: Vec<TextPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<TextPart>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Reasoning {
    /// The reasoning text, from `content` or else from `summary`.
    pub fn text(&self) -> String {
        let parts = match &self.content {
            Some(content) if !content.is_empty() => content,
            _ => &self.summary,
        };
        parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `summary_text` or `reasoning_text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// A reference to an item stored with an earlier response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemReference {
    pub id: String,
}

/// A `compaction` item: the history before it, summarised by
/// `POST /v1/responses/compact`, sealed in `encrypted_content` (see
/// `crate::compact`).
///
/// It travels as [`Item::Other`], so it is stored and listed exactly as
/// sent; [`Item::compaction_content`] reads it. Accepted leniently (`id`
/// optional, unknown fields kept); produced strictly from this struct:
/// `type`, `id` and `encrypted_content`, as OpenAI's
/// `ResponseCompactionItem` (whose optional `created_by` we leave out).
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    pub id: String,
    pub encrypted_content: String,
}

impl Compaction {
    /// The `type` of a compaction item.
    pub const TYPE: &'static str = "compaction";
}

impl From<Compaction> for Item {
    fn from(compaction: Compaction) -> Item {
        let mut fields = Map::new();
        fields.insert("type".to_owned(), Value::from(Compaction::TYPE));
        fields.insert("id".to_owned(), Value::from(compaction.id));
        fields.insert(
            "encrypted_content".to_owned(),
            Value::from(compaction.encrypted_content),
        );
        Item::Other(Value::Object(fields))
    }
}

impl Item {
    /// The item's id, if it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Message(m) => m.id.as_deref(),
            Item::FunctionCall(c) => c.id.as_deref(),
            Item::FunctionCallOutput(o) => o.id.as_deref(),
            Item::CustomToolCall(c) => c.id.as_deref(),
            Item::CustomToolCallOutput(o) => o.id.as_deref(),
            Item::Reasoning(r) => r.id.as_deref(),
            Item::ItemReference(r) => Some(&r.id),
            Item::Other(v) => v.get("id").and_then(Value::as_str),
        }
    }

    /// The `call_id` of a tool call or tool output, if the item has one
    /// (items of kinds this server does not act on included).
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Item::FunctionCall(c) => Some(&c.call_id),
            Item::FunctionCallOutput(o) => Some(&o.call_id),
            Item::CustomToolCall(c) => Some(&c.call_id),
            Item::CustomToolCallOutput(o) => Some(&o.call_id),
            Item::Other(v) => v.get("call_id").and_then(Value::as_str),
            Item::Message(_) | Item::Reasoning(_) | Item::ItemReference(_) => None,
        }
    }

    /// Whether this is a `compaction` item ([`Compaction`]).
    pub fn is_compaction(&self) -> bool {
        matches!(self, Item::Other(v) if v.get("type").and_then(Value::as_str) == Some(Compaction::TYPE))
    }

    /// The `encrypted_content` of a compaction item: `None` for any other
    /// item, and for a compaction item without a string there.
    pub fn compaction_content(&self) -> Option<&str> {
        match self {
            Item::Other(v) if self.is_compaction() => {
                v.get("encrypted_content").and_then(Value::as_str)
            }
            _ => None,
        }
    }

    /// A user message with one text part.
    pub fn user_text(text: impl Into<String>) -> Item {
        Item::Message(Message {
            id: None,
            role: Role::User,
            content: vec![ContentPart::InputText { text: text.into() }],
            status: None,
            phase: None,
        })
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// Reads an item straight into its type when `type` is its first field,
/// which holds for everything this server stores and for what the OpenAI
/// SDKs send; any other order is buffered first.
struct ItemVisitor;

impl<'de> serde::de::Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an item object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let Some(first) = map.next_key::<Cow<'de, str>>()? else {
            return Item::from_fields(Map::new());
        };
        if first != "type" {
            let mut fields = Map::new();
            fields.insert(first.into_owned(), map.next_value()?);
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                fields.insert(key, value);
            }
            return Item::from_fields(fields);
        }
        let kind = map.next_value::<Cow<'de, str>>()?;
        let rest = serde::de::value::MapAccessDeserializer::new(map);
        Ok(match kind.as_ref() {
            "message" => Item::Message(Message::deserialize(rest)?),
            "function_call" => Item::FunctionCall(FunctionCall::deserialize(rest)?),
            "function_call_output" => {
                Item::FunctionCallOutput(FunctionCallOutput::deserialize(rest)?)
            }
            "custom_tool_call" => Item::CustomToolCall(CustomToolCall::deserialize(rest)?),
            "custom_tool_call_output" => {
                Item::CustomToolCallOutput(CustomToolCallOutput::deserialize(rest)?)
            }
            "reasoning" => Item::Reasoning(Reasoning::deserialize(rest)?),
            "item_reference" => Item::ItemReference(ItemReference::deserialize(rest)?),
            _ => {
                let mut fields = Map::deserialize(rest)?;
                fields.insert("type".to_owned(), Value::String(kind.into_owned()));
                Item::Other(Value::Object(fields))
            }
        })
    }
}

impl Item {
    /// An item from its fields in any order: `type` decides the kind, and a
    /// message may come without one (the Chat Completions habit).
    fn from_fields<E: serde::de::Error>(fields: Map<String, Value>) -> Result<Item, E> {
        let kind = match fields.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(E::custom("item `type` must be a string")),
            None if fields.contains_key("role") => "message".to_owned(),
            None => return Err(E::custom("item has neither `type` nor `role`")),
        };
        let value = Value::Object(fields);
        Ok(match kind.as_str() {
            "message" => Item::Message(from(value)?),
            "function_call" => Item::FunctionCall(from(value)?),
            "function_call_output" => Item::FunctionCallOutput(from(value)?),
            "custom_tool_call" => Item::CustomToolCall(from(value)?),
            "custom_tool_call_output" => Item::CustomToolCallOutput(from(value)?),
            "reasoning" => Item::Reasoning(from(value)?),
            "item_reference" => Item::ItemReference(from(value)?),
            _ => Item::Other(value),
        })
    }
}

fn from<T: serde::de::DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
    serde_json::from_value(value).map_err(E::custom)
}

/// Message content arrives as a string or as a list of parts.
mod content {
    use super::ContentPart;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ContentPart>, D::Error> {
        d.deserialize_any(ContentVisitor)
    }

    struct ContentVisitor;

    impl<'de> Visitor<'de> for ContentVisitor {
        type Value = Vec<ContentPart>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of content parts")
        }

        // The role decides input_text vs output_text; see `Message::normalize`.
        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            self.visit_string(text.to_owned())
        }

        fn visit_string<E: Error>(self, text: String) -> Result<Self::Value, E> {
            Ok(vec![ContentPart::InputText { text }])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
            while let Some(part) = seq
                .next_element()
                .map_err(|e| A::Error::custom(format!("content[{}]: {e}", parts.len())))?
            {
                parts.push(part);
            }
            Ok(parts)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
}

impl Message {
    /// Puts content in the form we store and return: assistant text as
    /// `output_text`, everything else as `input_text`.
    pub fn normalize(&mut self) {
        if self.role != Role::Assistant {
            return;
        }
        for part in &mut self.content {
            if let ContentPart::InputText { text } = part {
                *part = ContentPart::output_text(std::mem::take(text));
            }
        }
    }

    /// The concatenated text of the message.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(ContentPart::text)
            .collect::<Vec<_>>()
            .join("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_without_type_and_string_content() {
        let item: Item = serde_json::from_value(json!({"role": "user", "content": "hi"})).unwrap();
        assert_eq!(item, Item::user_text("hi"));
    }

    #[test]
    fn assistant_string_content_becomes_output_text() {
        let item: Item = serde_json::from_value(
            json!({"type": "message", "role": "assistant", "content": "ok", "phase": "final_answer"}),
        )
        .unwrap();
        let Item::Message(mut m) = item else { panic!() };
        m.normalize();
        assert_eq!(m.content, vec![ContentPart::output_text("ok")]);
        assert_eq!(m.phase.as_deref(), Some("final_answer"));
    }

    #[test]
    fn output_text_serializes_annotations_and_logprobs() {
        let v = serde_json::to_value(ContentPart::output_text("x")).unwrap();
        assert_eq!(
            v,
            json!({"type": "output_text", "text": "x", "annotations": [], "logprobs": []})
        );
    }

    #[test]
    fn nulls_from_other_servers_mean_defaults() {
        let item: Item = serde_json::from_value(json!({
            "type": "message", "role": "assistant", "id": null, "status": null, "phase": null,
            "content": [{"type": "output_text", "text": "x", "annotations": null, "logprobs": null}]
        }))
        .unwrap();
        let Item::Message(m) = item else { panic!() };
        assert_eq!(m.content, vec![ContentPart::output_text("x")]);
        let image: ContentPart = serde_json::from_value(
            json!({"type": "input_image", "image_url": "u", "detail": null}),
        )
        .unwrap();
        assert!(matches!(image, ContentPart::InputImage { detail, .. } if detail == "auto"));
        let reasoning: Item =
            serde_json::from_value(json!({"type": "reasoning", "summary": null})).unwrap();
        assert!(matches!(reasoning, Item::Reasoning(r) if r.summary.is_empty()));
    }

    #[test]
    fn unknown_item_kinds_are_kept() {
        let raw = json!({"type": "web_search_call", "id": "ws_1", "status": "completed"});
        let item: Item = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(item, Item::Other(raw.clone()));
        assert_eq!(serde_json::to_value(&item).unwrap(), raw);
    }

    #[test]
    fn function_call_output_with_parts() {
        let item: Item = serde_json::from_value(json!({
            "type": "function_call_output", "call_id": "c1",
            "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
        }))
        .unwrap();
        let Item::FunctionCallOutput(o) = item else {
            panic!()
        };
        assert_eq!(o.output.to_text(), "ab");
    }

    #[test]
    fn tagged_serialization_round_trips() {
        let item = Item::FunctionCall(FunctionCall {
            id: Some("fc_1".into()),
            call_id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
            namespace: Some("ns".into()),
            status: Some(Status::Completed),
        });
        let v = serde_json::to_value(&item).unwrap();
        assert_eq!(v["type"], "function_call");
        assert_eq!(serde_json::from_value::<Item>(v).unwrap(), item);
    }

    #[test]
    fn field_order_does_not_matter() {
        let first = r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{}","x":1}"#;
        let last = r#"{"call_id":"c","name":"f","arguments":"{}","x":1,"type":"function_call"}"#;
        let first: Item = serde_json::from_str(first).unwrap();
        assert!(matches!(&first, Item::FunctionCall(c) if c.name == "f"));
        assert_eq!(serde_json::from_str::<Item>(last).unwrap(), first);
        let unknown = r#"{"type":"web_search_call","id":"ws_1","action":{"query":"q"}}"#;
        assert_eq!(
            serde_json::from_str::<Item>(unknown).unwrap(),
            Item::Other(serde_json::from_str(unknown).unwrap())
        );
    }

    #[test]
    fn compaction_items_are_kept_as_sent_and_read() {
        let sent = json!({"type": "compaction", "encrypted_content": "erc1.x.y", "extra": 1});
        let item: Item = serde_json::from_value(sent.clone()).unwrap();
        assert!(item.is_compaction());
        assert_eq!(item.compaction_content(), Some("erc1.x.y"));
        assert_eq!(item.id(), None);
        assert_eq!(serde_json::to_value(&item).unwrap(), sent);
        let missing: Item = serde_json::from_value(json!({"type": "compaction"})).unwrap();
        assert!(missing.is_compaction());
        assert_eq!(missing.compaction_content(), None);
        assert!(!Item::user_text("x").is_compaction());
        let made = Item::from(Compaction {
            id: "cmp_1".into(),
            encrypted_content: "erc1.a.b".into(),
        });
        assert_eq!(
            serde_json::to_value(&made).unwrap(),
            json!({"type": "compaction", "id": "cmp_1", "encrypted_content": "erc1.a.b"})
        );
        assert_eq!(made.id(), Some("cmp_1"));
    }

    #[test]
    fn malformed_items_are_errors() {
        for bad in [
            r#"{"type":5,"role":"user","content":"x"}"#,
            r#"{"role":"user","type":5,"content":"x"}"#,
            r#"{"content":"x"}"#,
            r#"{}"#,
            r#"{"type":"message","role":"user","content":5}"#,
            r#"{"type":"message","role":"user","content":[{"type":"input_text"}]}"#,
            r#""message""#,
        ] {
            assert!(serde_json::from_str::<Item>(bad).is_err(), "{bad}");
        }
        let empty: Item =
            serde_json::from_str(r#"{"type":"message","role":"user","content":null}"#).unwrap();
        assert!(matches!(empty, Item::Message(m) if m.content.is_empty()));
    }
}
