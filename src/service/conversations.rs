//! The Conversations API: `/v1/conversations` and its items, on the
//! conversation log of [`crate::store::conversations`].

use serde_json::{json, Value};

use super::list::{page, ListQuery};
use super::Service;
use crate::api::conversation::{ConversationObject, ConversationUpdate, NewConversation, NewItems};
use crate::api::items::Item;
use crate::api::limits;
use crate::api::request::Input;
use crate::backend::Backend;
use crate::create::prepare_input;
use crate::error::ApiError;
use crate::store::conversations::{Conversations, Read, Record};
use crate::store::Kv;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Conversation with id '{id}' not found."))
}

fn object(record: Record) -> ConversationObject {
    ConversationObject::new(record.id, record.created_at, record.metadata)
}

impl<K: Kv, B: Backend> Service<K, B> {
    /// The caller's conversations, and `id` checked to be one a
    /// conversation can have (else 404, after the key check).
    fn conversations_of(
        &self,
        api_key: Option<&str>,
        id: Option<&str>,
    ) -> Result<(String, Conversations<'_, K>), ApiError> {
        let tenant = self.tenant(api_key)?;
        if let Some(id) = id {
            limits::key_id("conversation_id", id).map_err(|_| not_found(id))?;
        }
        let conversations = self.conversations(&tenant);
        Ok((tenant, conversations))
    }

    /// Conversation `id` with its items, or 404.
    fn read_conversation(
        &self,
        api_key: Option<&str>,
        id: &str,
    ) -> Result<(String, Read), ApiError> {
        let (tenant, conversations) = self.conversations_of(api_key, Some(id))?;
        let read = conversations.read(id)?.ok_or_else(|| not_found(id))?;
        Ok((tenant, read))
    }

    /// `items` as stored: compaction items checked, ids given, references
    /// resolved.
    fn stored_items(
        &self,
        tenant: &str,
        history: &[Item],
        items: Vec<Item>,
    ) -> Result<Vec<Item>, ApiError> {
        crate::compact::check(&self.settings, tenant, "items", &items)?;
        let store = self.store(tenant);
        prepare_input(Some(Input::Items(items)), history, &store, &self.env).map_err(|e| {
            let param = e.param.as_ref().map(|p| p.replacen("input", "items", 1));
            ApiError { param, ..e }
        })
    }

    /// `POST /v1/conversations`.
    pub fn create_conversation(
        &self,
        api_key: Option<&str>,
        body: &[u8],
    ) -> Result<ConversationObject, ApiError> {
        let (tenant, conversations) = self.conversations_of(api_key, None)?;
        let request = NewConversation::parse(body)?;
        let items = self.stored_items(&tenant, &[], request.items.unwrap_or_default())?;
        let record = Record {
            id: self.env.new_id("conv"),
            created_at: self.env.now(),
            metadata: request.metadata.unwrap_or_default(),
            context_from: None,
        };
        conversations.create(&record, &items)?;
        Ok(object(record))
    }

    /// `GET /v1/conversations/{id}`.
    pub fn get_conversation(
        &self,
        api_key: Option<&str>,
        id: &str,
    ) -> Result<ConversationObject, ApiError> {
        let (_, conversations) = self.conversations_of(api_key, Some(id))?;
        let record = conversations.record(id)?.ok_or_else(|| not_found(id))?;
        Ok(object(record))
    }

    /// `POST /v1/conversations/{id}`: new metadata.
    pub fn update_conversation(
        &self,
        api_key: Option<&str>,
        id: &str,
        body: &[u8],
    ) -> Result<ConversationObject, ApiError> {
        let (_, conversations) = self.conversations_of(api_key, Some(id))?;
        let metadata = ConversationUpdate::parse(body)?;
        let mut record = conversations.record(id)?.ok_or_else(|| not_found(id))?;
        record.metadata = metadata;
        conversations.write(&record)?;
        Ok(object(record))
    }

    /// `DELETE /v1/conversations/{id}`.
    pub fn delete_conversation(&self, api_key: Option<&str>, id: &str) -> Result<Value, ApiError> {
        let (_, conversations) = self.conversations_of(api_key, Some(id))?;
        if !conversations.delete(id)? {
            return Err(not_found(id));
        }
        Ok(json!({"id": id, "object": "conversation.deleted", "deleted": true}))
    }

    /// `GET /v1/conversations/{id}/items`.
    pub fn list_conversation_items(
        &self,
        api_key: Option<&str>,
        id: &str,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let (_, read) = self.read_conversation(api_key, id)?;
        page(read.items, query)
    }

    /// `POST /v1/conversations/{id}/items`: the items added, as a list.
    pub fn add_conversation_items(
        &self,
        api_key: Option<&str>,
        id: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let (tenant, read) = self.read_conversation(api_key, id)?;
        let items = self.stored_items(&tenant, &read.items, NewItems::parse(body)?)?;
        self.conversations(&tenant).append(id, &items)?;
        let first_id = items.first().and_then(Item::id).map(str::to_owned);
        let last_id = items.last().and_then(Item::id).map(str::to_owned);
        Ok(json!({
            "object": "list",
            "data": items,
            "first_id": first_id,
            "last_id": last_id,
            "has_more": false,
        }))
    }

    /// `GET /v1/conversations/{id}/items/{item_id}`.
    pub fn get_conversation_item(
        &self,
        api_key: Option<&str>,
        id: &str,
        item_id: &str,
    ) -> Result<Item, ApiError> {
        let (_, read) = self.read_conversation(api_key, id)?;
        read.items
            .into_iter()
            .find(|item| item.id() == Some(item_id))
            .ok_or_else(|| item_not_found(item_id))
    }

    /// `DELETE /v1/conversations/{id}/items/{item_id}`: the conversation.
    pub fn delete_conversation_item(
        &self,
        api_key: Option<&str>,
        id: &str,
        item_id: &str,
    ) -> Result<ConversationObject, ApiError> {
        let (tenant, read) = self.read_conversation(api_key, id)?;
        if !read.items.iter().any(|item| item.id() == Some(item_id)) {
            return Err(item_not_found(item_id));
        }
        self.conversations(&tenant).delete_item(id, item_id)?;
        Ok(object(read.record))
    }
}

fn item_not_found(item_id: &str) -> ApiError {
    ApiError::not_found(format!("Item with id '{item_id}' not found."))
}
