//! Remote MCP servers, as the model loop will run their tools: the client
//! side of the MCP Streamable HTTP transport ([`client`]), and the
//! operator's list of servers that may be called ([`allow`]).
//!
//! A server is reached through the same outbound HTTP as the backends
//! ([`crate::backend::Backend`]), and only at URLs an operator allowed.

pub mod allow;
pub mod client;
pub mod tool;
