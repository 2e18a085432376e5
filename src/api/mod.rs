//! The Responses API wire format.

pub mod items;
pub mod limits;
pub mod request;
pub mod response;

use crate::error::ApiError;

/// `value` as JSON: what every entry point answers with. A value that does
/// not serialize is a 500, never an empty success.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ApiError::server(format!("The answer could not be encoded: {e}")))
}
