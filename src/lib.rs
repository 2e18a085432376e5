//! edge-responses: the OpenAI Responses API as a WebAssembly component.
//!
//! The component answers `POST /v1/responses` and friends by calling the
//! `/v1/chat/completions` endpoint of a configured backend, and keeps
//! responses in the host's key-value store.
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | the Responses wire format: requests, items, the Response object |
//! | [`chat`] | the Chat Completions wire format and the translation to it |
//! | [`stream`] | chunks → Responses events (the streaming state machine) |
//! | [`store`] | the storage layout on a key-value store |
//! | [`create`] | `POST /v1/responses` as a pipeline of steps |
//! | [`compact`] | `POST /v1/responses/compact`, and the `compaction` items it makes |
//! | [`mcp`] | remote MCP servers: the Streamable HTTP client |
//! | [`search`] | the `web_search` tool: search providers' APIs (SearXNG, Brave, Tavily), results for the model, `url_citation`s |
//! | [`service`] | the API operations, shared by HTTP and the typed export |
//! | [`config`], [`auth`], [`backend`], [`error`], [`ids`] | settings, keys, backend errors, errors, ids |
//! | `wasi`, `http`, `export` | the thin WASI glue (wasm only) |

pub mod api;
pub mod auth;
pub mod backend;
pub mod chat;
pub mod compact;
pub mod config;
pub mod create;
pub mod error;
pub mod ids;
pub mod mcp;
pub mod search;
pub mod service;
pub mod store;
pub mod stream;

#[cfg(target_arch = "wasm32")]
mod export;
#[cfg(test)]
mod fuzz_tests;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod wasi;
