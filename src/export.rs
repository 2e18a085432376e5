//! The typed `edge:responses/responses` export, on the same service as the
//! HTTP routes.

use crate::api::{limits, to_json};
use crate::error::ApiError;
use crate::service::{ListQuery, Order};
use crate::wasi;

mod bindings {
    wit_bindgen::generate!({
        world: "edge-responses",
        path: "wit",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        with: {
            "wasi:http/outgoing-handler@0.2.6": spin_sdk::wit::wasi::http0_2_6::outgoing_handler,
            "wasi:http/types@0.2.6": spin_sdk::wit::wasi::http0_2_6::types,
            "wasi:io/error@0.2.6": spin_sdk::wit::wasi::io0_2_6::error,
            "wasi:io/poll@0.2.6": spin_sdk::wit::wasi::io0_2_6::poll,
            "wasi:io/streams@0.2.6": spin_sdk::wit::wasi::io0_2_6::streams,
            "wasi:clocks/monotonic-clock@0.2.6": spin_sdk::wit::wasi::clocks0_2_6::monotonic_clock,
            "wasi:keyvalue/store@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::store,
            "wasi:keyvalue/batch@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::batch,
            "wasi:keyvalue/atomics@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::atomics,
            "wasi:config/store@0.2.0-draft-2024-09-27": spin_sdk::wit::wasi::config::store,
        },
    });
}

use bindings::exports::edge::responses::responses as wit;

struct Component;

bindings::export!(Component with_types_in bindings);

impl From<ApiError> for wit::Error {
    fn from(e: ApiError) -> Self {
        wit::Error {
            status: e.status,
            message: e.message,
            type_: e.kind,
            param: e.param,
            code: e.code,
        }
    }
}

impl wit::Guest for Component {
    fn create(api_key: Option<String>, request: String) -> Result<String, wit::Error> {
        spin_sdk::http::run(async move {
            let service = wasi::service()?;
            // As over HTTP: the caller first, then the size.
            service.tenant(api_key.as_deref())?;
            let limit = service.settings.max_request_bytes;
            if request.len() as u64 > limit {
                return Err(ApiError::request_too_large(limit));
            }
            service.create(api_key.as_deref(), request.as_bytes()).await
        })
        .and_then(|r| to_json(&r))
        .map_err(Into::into)
    }

    fn get(api_key: Option<String>, id: String) -> Result<String, wit::Error> {
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        Ok(to_json(&service.get(api_key.as_deref(), id)?)?)
    }

    fn delete(api_key: Option<String>, id: String) -> Result<String, wit::Error> {
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        Ok(to_json(&service.delete(api_key.as_deref(), id)?)?)
    }

    fn list_input_items(
        api_key: Option<String>,
        id: String,
        query: wit::ListQuery,
    ) -> Result<String, wit::Error> {
        let query = ListQuery {
            limit: query.limit,
            order: query.order.map(|o| match o {
                wit::Order::Asc => Order::Asc,
                wit::Order::Desc => Order::Desc,
            }),
            after: query.after,
            before: query.before,
        };
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        let list = service.list_input_items(api_key.as_deref(), id, &query)?;
        Ok(to_json(&list)?)
    }
}
