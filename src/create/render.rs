//! Step 4 of a create, rendering the chat request: the request's tools as
//! chat functions, its parameters, the replayed conversation, and the
//! backend the model is routed to.

use crate::api::request::CreateRequest;
use crate::backend::routes::{Route, Routes};
use crate::chat::{ChatMessage, ChatRequest, KeptMessages, ToolMap};
use crate::error::ApiError;

/// A chat request ready to send, and what reading its answer needs.
pub struct ChatPlan<'r> {
    pub chat: ChatRequest,
    /// How the backend's function names map back to the request's tools.
    pub tools: ToolMap,
    /// The backend that serves the request's model.
    pub route: &'r Route,
}

/// The chat request for `request` with its replayed conversation.
pub fn render<'r>(
    request: &CreateRequest,
    routes: &'r Routes,
    kept: KeptMessages,
    rendered: Vec<ChatMessage>,
) -> Result<ChatPlan<'r>, ApiError> {
    let tools = ToolMap::new(
        request.tools.as_deref().unwrap_or_default(),
        request.tool_choice.as_ref(),
    )?;
    let chat = ChatRequest::build(request, kept, rendered, &tools)?;
    let route = routes.for_model(request.model())?;
    Ok(ChatPlan { chat, tools, route })
}
