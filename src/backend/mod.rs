//! The chat-completions backends as the service sees them.
//!
//! | module | owns |
//! | --- | --- |
//! | [`routes`] | which backend serves a model, and the URLs and headers of a call |
//! | [`dialect`] | parameter names and fields that differ between servers, learned from their 400s |
//! | [`answer`] | what an answer's body is (an event stream, one JSON completion, or neither) |
//! | [`errors`] | non-2xx answers as API errors |
//!
//! [`Backend`] is the HTTP client the host provides: one request out, an
//! answer whose body arrives in pieces. Every request body goes out whole,
//! with its `Content-Length`.

pub mod answer;
pub mod call;
pub mod dialect;
mod errors;
#[cfg(test)]
pub mod replay;
pub mod routes;

pub use errors::{embedded_error, status_error};

use crate::error::ApiError;

/// The methods the service calls a backend with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

/// One request to a backend.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub method: Method,
    pub url: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body; sent with its `Content-Length`.
    pub body: Option<Vec<u8>>,
}

/// A backend answer whose body is read piece by piece.
pub trait BodyStream {
    /// The next piece of the body; `None` at its end.
    #[allow(async_fn_in_trait)]
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>>;

    /// The whole (remaining) body.
    #[allow(async_fn_in_trait)]
    async fn collect(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        while let Some(piece) = self.next().await {
            body.extend(piece?);
        }
        Ok(body)
    }
}

/// The head of a backend's answer, and its body.
pub struct Answer<B> {
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The `mcp-session-id` header, if any: the session an MCP server
    /// opened (see `crate::mcp`).
    pub session: Option<String>,
    pub body: B,
}

/// An HTTP client for the backends.
pub trait Backend {
    type Body: BodyStream;

    /// Sends a request; transport failures (refused, timeout) are 502s
    /// whose message names neither the URL nor any header.
    #[allow(async_fn_in_trait)]
    async fn send(&self, request: Outbound) -> Result<Answer<Self::Body>, ApiError>;
}
