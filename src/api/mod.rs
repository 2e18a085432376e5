//! The Responses API wire format.

pub mod items;
pub mod request;
pub mod response;
