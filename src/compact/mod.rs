//! `POST /v1/responses/compact`: a conversation's history summarised by the
//! model, returned as the items that replace it.
//!
//! 1. **authenticate** the caller's tenant, and **parse** the body as a
//!    create request (`model` required; `input`, `previous_response_id`,
//!    `instructions`, `prompt_cache_key` read; the rest ignored);
//! 2. **check** every `compaction` item of the input ([`check_items`]): a
//!    blob this server did not seal for this tenant is a 400 before
//!    anything else happens;
//! 3. **resolve** the history: the items of the conversation
//!    `previous_response_id` names, then the input's (ids given, item
//!    references resolved, as a create does);
//! 4. **ask** the backend that serves `model` for a summary: one chat
//!    request without streaming, the history rendered as a create renders
//!    it plus the ask of [`prompt`];
//! 5. **answer** `{"id", "object": "response.compaction", "created_at",
//!    "output", "usage"}`: the latest user messages as they were, then one
//!    `compaction` item whose `encrypted_content` is the summary, sealed
//!    ([`seal`]). Nothing is stored.
//!
//! A `compaction` item in a later request's input is checked the same way
//! ([`check_input`], [`check`]: by the entry points, right after parsing,
//! as checking needs the caller's tenant), stored as it came, and replayed
//! as a `user` message carrying the summary ([`replayed_summary`], called
//! by `crate::chat` without checking again).

pub mod prompt;
pub mod seal;

use serde::Serialize;

use crate::api::items::{Compaction, Item, Role};
use crate::api::request::{CreateRequest, Input};
use crate::api::response::{Response, Usage};
use crate::backend::Backend;
use crate::chat::ToolMap;
use crate::config::Settings;
use crate::create::emit::Emitter;
use crate::create::model::{Call, Ended, ModelLoop};
use crate::create::{prepare_input, Discard};
use crate::error::ApiError;
use crate::service::Service;
use crate::store::Kv;
use crate::stream::EventStream;
use seal::{Broken, Seal, Sealed};

/// How many of the history's latest user messages a compaction keeps as
/// they are, before its `compaction` item.
pub const KEPT_USER_MESSAGES: usize = 2;

/// The answer of `POST /v1/responses/compact` (OpenAI's
/// `CompactedResponse`, the Open Responses `CompactResource`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compacted {
    pub id: String,
    /// Always `response.compaction`.
    pub object: String,
    pub created_at: i64,
    /// The latest user messages, then one `compaction` item.
    pub output: Vec<Item>,
    pub usage: Usage,
}

/// `POST /v1/responses/compact` for the caller with `api_key`.
pub async fn compact<K: Kv, B: Backend>(
    service: &Service<K, B>,
    api_key: Option<&str>,
    body: &[u8],
) -> Result<Compacted, ApiError> {
    let tenant = service.tenant(api_key)?;
    let request = CreateRequest::parse(body)?;
    let settings = &service.settings;
    let seal = seal_for(settings, &tenant);
    if let Some(Input::Items(items)) = &request.input {
        check_items(&seal, "input", items)?;
    }
    let store = service.store(&tenant);
    let env = &service.env;
    let mut history = match &request.previous_response_id {
        Some(id) => crate::create::resolve::previous(&store, id, env.now())?.items()?,
        None => Vec::new(),
    };
    let input = request.input.clone().filter(|input| !is_empty_text(input));
    history.extend(prepare_input(input, &history, &store, env)?);
    if history.is_empty() {
        return Err(ApiError::invalid_param(
            "input",
            "There is nothing to compact: 'input' is empty and there is no 'previous_response_id'.",
        ));
    }

    let (item, response) = summarize(service, api_key, &tenant, &request, &history).await?;
    let mut output = latest_user_messages(&history);
    output.push(item);
    Ok(Compacted {
        id: response.id,
        object: "response.compaction".to_owned(),
        created_at: response.created_at,
        output,
        usage: response.usage.unwrap_or_default(),
    })
}

/// The `compaction` item that replaces `history`: the summary the
/// backend serving `request`'s model writes of it, sealed for `tenant`; and
/// the backend's answer as a response (its id, time and usage).
pub async fn summarize<K: Kv, B: Backend>(
    service: &Service<K, B>,
    api_key: Option<&str>,
    tenant: &str,
    request: &CreateRequest,
    history: &[Item],
) -> Result<(Item, Response), ApiError> {
    let settings = &service.settings;
    let env = &service.env;
    let route = settings.routes.for_model(request.model())?;
    let chat = prompt::chat_request(request, history, settings.backend_reasoning);
    let call = Call {
        backend: &service.backend,
        route,
        learned: &service.learned,
        client_key: service.client_key(api_key),
    };
    let mut model = ModelLoop::new(call, chat, None);
    model.open().await?;
    let mut stream = EventStream::new(
        Response::start(env.new_id("resp"), env.now(), request),
        ToolMap::default(),
        env.clone(),
    );
    if route.think_tags {
        stream = stream.with_think_tags();
    }
    let mut discard = Discard;
    let mut out = Emitter::new(&mut discard, false);
    if let Ended::Failed(error) = model.run(&mut stream, &mut out).await {
        return Err(error);
    }
    stream.finish();
    let response = stream.into_response();
    let summary = response.output_text().trim().to_owned();
    if summary.is_empty() {
        return Err(ApiError::backend(
            "The backend answered the compaction request without a summary.",
        ));
    }
    let blob = seal_for(settings, tenant).seal(&Sealed {
        summary,
        model: response.model.clone(),
        created_at: response.created_at,
    });
    let item = Item::from(Compaction {
        id: env.new_id("cmp"),
        encrypted_content: blob,
    });
    Ok((item, response))
}

/// Checks the compaction items of a create request's `input` for the
/// caller `tenant`: see [`check_items`].
pub fn check_input(
    settings: &Settings,
    tenant: &str,
    input: Option<&Input>,
) -> Result<(), ApiError> {
    match input {
        Some(Input::Items(items)) => check(settings, tenant, "input", items),
        _ => Ok(()),
    }
}

/// Checks the compaction items of `items` (the request's `param`, such as
/// `input` or `items`) for the caller `tenant`: see [`check_items`]. Every
/// entry point that takes items from a client calls this (or
/// [`check_input`]) before it keeps or sends them. Costs nothing for items
/// without a compaction item.
pub fn check(
    settings: &Settings,
    tenant: &str,
    param: &str,
    items: &[Item],
) -> Result<(), ApiError> {
    if !items.iter().any(Item::is_compaction) {
        return Ok(());
    }
    check_items(&seal_for(settings, tenant), param, items)
}

/// Checks every `compaction` item of `items` (the request's `param`):
/// its `encrypted_content` must be a blob `seal` made and nobody changed.
/// Anything else is a 400 naming `param[i].encrypted_content`.
pub fn check_items(seal: &Seal, param: &str, items: &[Item]) -> Result<(), ApiError> {
    for (i, item) in items.iter().enumerate() {
        if !item.is_compaction() {
            continue;
        }
        let field = format!("{param}[{i}].encrypted_content");
        let Some(blob) = item.compaction_content() else {
            return Err(ApiError::invalid_request(format!(
                "Missing required parameter: '{field}' (a string)."
            ))
            .with_param(field)
            .with_code("missing_required_parameter"));
        };
        let why = match seal.open(blob) {
            Ok(_) => continue,
            Err(Broken::Foreign) => {
                "this compaction item was not made by this server, which can read only the \
                 compaction items its own /v1/responses/compact returns"
            }
            Err(Broken::Tampered) => {
                "this compaction item failed its integrity check: it was changed, or it was \
                 made for another API key's data or before the server's secret changed"
            }
        };
        return Err(
            ApiError::invalid_request(format!("Invalid '{field}': {why}."))
                .with_param(field)
                .with_code("invalid_encrypted_content"),
        );
    }
    Ok(())
}

/// The text a compaction item whose `encrypted_content` is `blob` is
/// replayed as; `None` for a blob this server cannot read. The blob is not
/// checked here: items are checked when they come in, and stored as they
/// came.
pub fn replayed_summary(blob: &str) -> Option<String> {
    seal::summary_unchecked(blob).map(|summary| prompt::replayed(&summary))
}

/// The seal of `tenant`'s blobs.
fn seal_for(settings: &Settings, tenant: &str) -> Seal {
    Seal::new(settings.tenant_secret.as_deref(), tenant)
}

/// Whether `input` is a string of nothing but whitespace.
fn is_empty_text(input: &Input) -> bool {
    matches!(input, Input::Text(text) if text.trim().is_empty())
}

/// The last [`KEPT_USER_MESSAGES`] user messages of `history`, in order.
fn latest_user_messages(history: &[Item]) -> Vec<Item> {
    let mut kept = Vec::with_capacity(KEPT_USER_MESSAGES + 1);
    for item in history.iter().rev() {
        if kept.len() == KEPT_USER_MESSAGES {
            break;
        }
        if matches!(item, Item::Message(m) if m.role == Role::User) {
            kept.insert(0, item.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests;
