//! The Conversations API wire format: the conversation object, the bodies
//! of `POST /v1/conversations`, `POST /v1/conversations/{id}` and
//! `POST /v1/conversations/{id}/items`, and the `conversation` field of a
//! create. Parsed like a create: unknown fields ignored, a field of the
//! wrong shape a 400 naming it.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::items::Item;
use super::request::{metadata, optional_list, parse_object, validate_ids, validate_metadata};
use crate::error::ApiError;

/// Items one request may add to a conversation.
pub const MAX_ITEMS_PER_REQUEST: usize = 20;

/// A conversation object, as answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
}

impl ConversationObject {
    pub fn new(id: String, created_at: i64, metadata: Map<String, Value>) -> Self {
        ConversationObject {
            id,
            object: "conversation",
            created_at,
            metadata,
        }
    }
}

/// `POST /v1/conversations`.
#[derive(Debug, Default, Deserialize)]
pub struct NewConversation {
    #[serde(default, deserialize_with = "items")]
    pub items: Option<Vec<Item>>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Option<Map<String, Value>>,
}

impl NewConversation {
    /// An empty body is a conversation with nothing in it.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(NewConversation::default());
        }
        let request: NewConversation = parse_object(body)?;
        if let Some(items) = &request.items {
            validate_ids("items", items)?;
        }
        if let Some(metadata) = &request.metadata {
            validate_metadata(metadata)?;
        }
        Ok(request)
    }
}

/// `POST /v1/conversations/{id}`: `metadata` is required, and may be
/// `null` (no metadata).
#[derive(Debug, Deserialize)]
pub struct ConversationUpdate {
    #[serde(default, deserialize_with = "present")]
    metadata: Option<Value>,
}

impl ConversationUpdate {
    /// The new metadata.
    pub fn parse(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
        let update: ConversationUpdate = parse_object(body)?;
        let metadata = match update.metadata {
            None => return Err(missing("metadata")),
            Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "metadata",
                    "'metadata' must be an object of strings.",
                ))
            }
        };
        validate_metadata(&metadata)?;
        Ok(metadata)
    }
}

/// `POST /v1/conversations/{id}/items`.
#[derive(Debug, Deserialize)]
pub struct NewItems {
    #[serde(default, deserialize_with = "items")]
    items: Option<Vec<Item>>,
}

impl NewItems {
    /// The items to add: one to [`MAX_ITEMS_PER_REQUEST`].
    pub fn parse(body: &[u8]) -> Result<Vec<Item>, ApiError> {
        let request: NewItems = parse_object(body)?;
        let items = request.items.ok_or_else(|| missing("items"))?;
        if items.is_empty() {
            return Err(ApiError::invalid_param(
                "items",
                "'items' must hold at least one item.",
            ));
        }
        validate_ids("items", &items)?;
        Ok(items)
    }
}

fn missing(param: &str) -> ApiError {
    ApiError::invalid_request(format!("Missing required parameter: '{param}'."))
        .with_param(param)
        .with_code("missing_required_parameter")
}

/// A field that is there, `null` included.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// `items`: at most [`MAX_ITEMS_PER_REQUEST`], or `null`.
fn items<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<Item>>, D::Error> {
    optional_list(deserializer, "items", MAX_ITEMS_PER_REQUEST)
}

/// The `conversation` of a create: an id, or `{"id": ...}`.
pub fn reference<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reference {
        Id(String),
        Object { id: String },
    }
    Ok(
        Option::<Reference>::deserialize(deserializer)?.map(|r| match r {
            Reference::Id(id) | Reference::Object { id } => id,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::CreateRequest;

    #[test]
    fn new_conversations_take_items_and_metadata() {
        let empty = NewConversation::parse(b"").unwrap();
        assert!(empty.items.is_none() && empty.metadata.is_none());
        let body = br#"{"items": [{"role": "user", "content": "hi"}], "metadata": {"k": "v"}}"#;
        let full = NewConversation::parse(body).unwrap();
        assert_eq!(full.items.unwrap().len(), 1);
        let many = format!(
            r#"{{"items": [{}]}}"#,
            vec![r#"{"role": "user", "content": "x"}"#; 21].join(",")
        );
        let error = NewConversation::parse(many.as_bytes()).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("items"), "{}", error.message);
        let error = NewConversation::parse(br#"{"items": [{"role": 3}]}"#).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.param.unwrap().starts_with("items[0]"));
    }

    #[test]
    fn updates_need_metadata_and_items_need_items() {
        assert_eq!(
            ConversationUpdate::parse(b"{}")
                .unwrap_err()
                .param
                .as_deref(),
            Some("metadata")
        );
        assert!(ConversationUpdate::parse(br#"{"metadata": null}"#)
            .unwrap()
            .is_empty());
        assert_eq!(
            ConversationUpdate::parse(br#"{"metadata": {"k": "v"}}"#).unwrap()["k"],
            "v"
        );
        assert_eq!(
            NewItems::parse(b"{}").unwrap_err().param.as_deref(),
            Some("items")
        );
        assert_eq!(
            NewItems::parse(br#"{"items": []}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("items")
        );
    }

    #[test]
    fn a_create_names_its_conversation_either_way() {
        for body in [
            r#"{"model": "m", "input": "x", "conversation": "conv_1"}"#,
            r#"{"model": "m", "input": "x", "conversation": {"id": "conv_1"}}"#,
        ] {
            let request = CreateRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(request.conversation.as_deref(), Some("conv_1"));
        }
        let both =
            br#"{"model": "m", "input": "x", "conversation": "c", "previous_response_id": "r"}"#;
        let error = CreateRequest::parse(both).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("conversation"));
    }
}
