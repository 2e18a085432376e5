//! What the backend is asked to write a summary, and how a summary is
//! replayed.
//!
//! The chat request is the conversation as a create would send it (the
//! request's `instructions` as the system message, then the history
//! rendered the same way), followed by one `user` message asking for the
//! summary. Keeping the request's prefix as the client's own turns send it
//! lets backends with prefix caching (vLLM, llama.cpp, SGLang, OpenAI)
//! reuse what they computed for the last turn, and leaves the system
//! message alone for chat templates that take only one. The ask comes
//! last, where small models follow instructions best.

use crate::api::items::Item;
use crate::api::request::CreateRequest;
use crate::chat::{ChatMessage, ChatRequest, Rendered};

/// The last message of a compaction request.
pub const COMPACTION_PROMPT: &str = "\
Stop here: do not answer or continue the conversation above. Write a summary of it instead. \
The summary replaces the conversation: whoever continues the work will see only the latest \
user messages and this summary, with no other memory of what happened, so it must hold \
everything needed to carry on without asking again.

Write a dense, factual summary in plain text, in the language of the conversation, under \
these headings:

Goal: what the user wants overall, with their constraints and preferences, in their own \
words where the wording matters.
Decisions and facts: what was agreed, decided or found out, with exact values (names, \
numbers, dates, versions, URLs, identifiers).
Work done: what has been done so far, naming the files, functions, commands and tools \
involved, and the results of tool calls that still matter, errors included.
Current state: where things stand at the end of the conversation.
Open tasks: what remains to be done or answered, and the next step.

Keep file paths, code identifiers, commands and error messages verbatim. Leave out \
pleasantries, repetition, and whatever is settled and no longer matters. Answer with the \
summary alone, without a preamble.";

/// What a replayed summary is introduced with. Stored turns keep the
/// messages their items rendered to: changing this (or [`replayed`]) is a
/// change of rendering, which bumps `crate::chat::RENDERING`.
pub const REPLAY_HEADER: &str =
    "Summary of the conversation so far (its earlier messages were compacted into it):";

/// The chat request that asks `request.model()` for a summary of `history`.
pub fn chat_request(
    request: &CreateRequest,
    history: &[Item],
    send_reasoning: bool,
) -> ChatRequest {
    let mut rendered = Rendered::new(history, send_reasoning).messages;
    rendered.push(ChatMessage::text("user", COMPACTION_PROMPT));
    let mut chat = ChatRequest::plain(request.model(), request.instructions.as_deref(), rendered);
    chat.prompt_cache_key = request.prompt_cache_key.clone();
    chat.user = request
        .safety_identifier
        .clone()
        .or_else(|| request.user.clone());
    chat
}

/// The text a summary is replayed as.
pub fn replayed(summary: &str) -> String {
    format!("{REPLAY_HEADER}\n\n{summary}")
}
