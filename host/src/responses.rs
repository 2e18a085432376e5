//! Typed calls into the component's `edge:responses/responses` export.
//!
//! Each call gets a fresh instance, exactly like an HTTP request, and shares
//! the server's key-value store, config values and instance slots; a call
//! that finds no free instance within the queue timeout is answered with the
//! same 503 `server_overloaded` error an HTTP request gets.

use std::sync::Arc;

use anyhow::Context as _;

use crate::bindings::exports::edge::responses::responses as guest;
use crate::engine::Runtime;

/// An API error: the HTTP status the endpoint would answer with and the
/// fields of OpenAI's error envelope (`type_` is the envelope's `type`).
pub use guest::Error as ApiError;
/// The query of `GET /v1/responses/{id}/input_items`.
pub use guest::ListQuery;
/// Order of `list-input-items` results.
pub use guest::Order;

/// What a typed call returns: the outer error is a trap or host failure, the
/// inner one the API error the component answered with.
pub type CallResult = anyhow::Result<Result<String, ApiError>>;

/// A client for the typed export. Cheap to clone.
#[derive(Clone)]
pub struct Responses {
    runtime: Arc<Runtime>,
}

/// One typed call and its arguments.
enum Call<'a> {
    Create { request: &'a str },
    Get { id: &'a str },
    Delete { id: &'a str },
    ListInputItems { id: &'a str, query: ListQuery },
}

impl Responses {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }

    /// `POST /v1/responses` (non-streaming): the Response object as JSON.
    pub async fn create(&self, api_key: Option<&str>, request_json: &str) -> CallResult {
        self.call(
            api_key,
            Call::Create {
                request: request_json,
            },
        )
        .await
    }

    /// `GET /v1/responses/{id}`: the stored Response object as JSON.
    pub async fn get(&self, api_key: Option<&str>, id: &str) -> CallResult {
        self.call(api_key, Call::Get { id }).await
    }

    /// `DELETE /v1/responses/{id}`: the deletion confirmation as JSON.
    pub async fn delete(&self, api_key: Option<&str>, id: &str) -> CallResult {
        self.call(api_key, Call::Delete { id }).await
    }

    /// `GET /v1/responses/{id}/input_items`: a list object as JSON.
    pub async fn list_input_items(
        &self,
        api_key: Option<&str>,
        id: &str,
        query: ListQuery,
    ) -> CallResult {
        self.call(api_key, Call::ListInputItems { id, query }).await
    }

    async fn call(&self, api_key: Option<&str>, call: Call<'_>) -> CallResult {
        let pre = self
            .runtime
            .responses()
            .context("the component does not export edge:responses/responses")?;
        let Ok(_slot) = self.runtime.instance_slot().await else {
            return Ok(Err(overloaded()));
        };
        let mut store = self.runtime.new_store(None);
        let instance = pre.instantiate_async(&mut store).await?;
        let exports = instance.edge_responses_responses();
        let result = match call {
            Call::Create { request } => exports.call_create(&mut store, api_key, request).await?,
            Call::Get { id } => exports.call_get(&mut store, api_key, id).await?,
            Call::Delete { id } => exports.call_delete(&mut store, api_key, id).await?,
            Call::ListInputItems { id, query } => {
                exports
                    .call_list_input_items(&mut store, api_key, id, &query)
                    .await?
            }
        };
        Ok(result)
    }
}

/// The API error for a call that found no free instance in time.
pub(crate) fn overloaded() -> ApiError {
    ApiError {
        status: 503,
        message: crate::http::OVERLOADED_MESSAGE.to_owned(),
        type_: "server_error".to_owned(),
        param: None,
        code: Some("server_overloaded".to_owned()),
    }
}
