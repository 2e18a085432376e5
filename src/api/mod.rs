//! The Responses API wire format.

pub mod conversation;
pub mod hosted;
pub mod items;
pub mod limits;
pub mod request;
pub mod response;

use crate::error::ApiError;

/// `T` from JSON bytes, through the same deserializer requests are parsed
/// with ([`request::parse_object`]), so that every type read both from
/// requests and from the store (items above all) is compiled once, not once
/// per deserializer: it keeps the component small.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| e.into_inner())?;
    json.end()?;
    Ok(value)
}

/// `value` as JSON: what every entry point answers with. A value that does
/// not serialize is a 500, never an empty success.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ApiError::server(format!("The answer could not be encoded: {e}")))
}
