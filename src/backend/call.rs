//! One chat-completions call: the request written in the backend's
//! dialect, resent once per parameter the backend rejects, and its answer
//! opened as an event stream or read as one completion.

use super::answer::{excerpt, unreadable, Framing};
use super::dialect::{Dialect, Learned};
use super::routes::Route;
use super::{embedded_error, status_error, Answer, Backend, BodyStream, Method, Outbound};
use crate::chat::{ChatChunk, ChatCompletion, ChatRequest};
use crate::error::ApiError;

/// The largest non-streamed answer read: far above any real completion,
/// low enough that a runaway body cannot exhaust the instance's memory.
const MAX_COMPLETION_BYTES: usize = 32 << 20;

/// How many times one request is sent at most: once, plus one retry per
/// parameter [`Dialect`] can change.
const MAX_ATTEMPTS: usize = 5;

/// A backend's answer to a chat request.
pub enum ChatAnswer<B> {
    /// Server-sent events; `first` holds bytes already read from the body.
    Events { first: Vec<u8>, body: B },
    /// A whole completion, as the one chunk it amounts to.
    Completion(ChatChunk),
}

/// Sends `chat` to `route` and opens the answer. Errors are what the client
/// sees: the backend's 4xx kept, anything else a 502 that names neither the
/// URL nor the headers (the host's log has them).
pub async fn open_chat<B: Backend>(
    backend: &B,
    route: &Route,
    learned: &Learned,
    client_key: Option<&str>,
    mut chat: ChatRequest,
) -> Result<ChatAnswer<B::Body>, ApiError> {
    let first_dialect = learned
        .get(&route.base)
        .unwrap_or_else(|| Dialect::new(route.max_tokens_param.unwrap_or_default()));
    let mut dialect = first_dialect;
    dialect.apply(&mut chat);
    let mut headers = route.headers(client_key);
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    for attempt in 1..=MAX_ATTEMPTS {
        let body = serde_json::to_vec(&chat)
            .map_err(|e| ApiError::server(format!("Backend request could not be encoded: {e}")))?;
        let request = Outbound {
            method: Method::Post,
            url: route.url("chat/completions"),
            headers: headers.clone(),
            body: Some(body),
        };
        let mut answer = backend.send(request).await.inspect_err(|e| {
            log(route, &format!("chat request failed: {}", e.message));
        })?;
        if (200..300).contains(&answer.status) {
            if dialect != first_dialect {
                learned.remember(&route.base, dialect);
            }
            return open(answer).await;
        }
        let bytes = answer.body.collect().await.unwrap_or_default();
        let rejected = matches!(answer.status, 400 | 422);
        let retry = rejected && attempt < MAX_ATTEMPTS;
        match dialect.after_rejection(&chat, &bytes).filter(|_| retry) {
            Some((next, change)) => {
                log(route, &format!("{change} (status {})", answer.status));
                next.apply(&mut chat);
                dialect = next;
            }
            None => {
                log(
                    route,
                    &format!(
                        "chat request answered {}: {}",
                        answer.status,
                        excerpt(&bytes)
                    ),
                );
                return Err(status_error(answer.status, &bytes));
            }
        }
    }
    Err(ApiError::backend(
        "The backend rejected every form of the request.",
    ))
}

/// Reads a 2xx answer as far as needed to know what it is.
async fn open<B: BodyStream>(answer: Answer<B>) -> Result<ChatAnswer<B>, ApiError> {
    let Answer {
        content_type,
        mut body,
        ..
    } = answer;
    let declared = Framing::declared(content_type.as_deref());
    if declared == Some(Framing::EventStream) {
        return Ok(ChatAnswer::Events {
            first: Vec::new(),
            body,
        });
    }
    let first = match body.next().await {
        Some(Ok(first)) => first,
        Some(Err(e)) => {
            return Err(ApiError::backend(format!(
                "Reading the backend's answer failed: {e}"
            )))
        }
        None => Vec::new(),
    };
    match Framing::sniffed(&first) {
        Framing::EventStream => Ok(ChatAnswer::Events { first, body }),
        Framing::Json => completion(first, &mut body).await,
        Framing::Other if declared == Some(Framing::Json) => completion(first, &mut body).await,
        Framing::Other => Err(unreadable(content_type.as_deref(), &first)),
    }
}

/// Reads a JSON answer to its end: a completion, or an error sent with a
/// success status.
async fn completion<B: BodyStream>(
    mut bytes: Vec<u8>,
    body: &mut B,
) -> Result<ChatAnswer<B>, ApiError> {
    while let Some(piece) = body.next().await {
        let piece = piece
            .map_err(|e| ApiError::backend(format!("Reading the backend's answer failed: {e}")))?;
        if bytes.len().saturating_add(piece.len()) > MAX_COMPLETION_BYTES {
            return Err(ApiError::backend(format!(
                "The backend's answer is larger than {} MiB.",
                MAX_COMPLETION_BYTES >> 20
            )));
        }
        bytes.extend(piece);
    }
    // Parsed from text, as stream chunks are: one instance of the parser.
    // Only an answer without choices is looked at again, for an error.
    let text = String::from_utf8_lossy(&bytes);
    let completion = match serde_json::from_str::<ChatCompletion>(&text) {
        Ok(completion) if !completion.choices.is_empty() => completion,
        parsed => {
            if let Some(error) = embedded_error(&bytes) {
                return Err(error);
            }
            parsed.map_err(|e| {
                ApiError::backend(format!(
                    "The backend's answer is not a chat completion ({e}); it began: {}",
                    excerpt(&bytes)
                ))
            })?
        }
    };
    Ok(ChatAnswer::Completion(completion.into_chunk()))
}

/// A line in the host's log about a call to `route`. Client-visible errors
/// leave the backend's address out; the log names its origin.
pub fn log(route: &Route, message: &str) {
    eprintln!("edge-responses: backend {}: {message}", route.origin());
}
