//! The Responses API itself, one implementation behind both entry points
//! (the HTTP routes and the typed `responses` export).
//!
//! [`Service`] is generic over the key-value store and the backend client so
//! the WASI glue stays thin. A create runs in two steps: [`Service::start`]
//! validates the request, replays the conversation and calls the backend;
//! [`Exchange::run`] then streams the backend's answer through the
//! [`EventStream`], writing events to a sink (the SSE body, or nothing for a
//! plain request), and stores the response before its terminal event.

use serde_json::{json, Value};

use crate::api::items::{Item, Status};
use crate::api::request::{CreateRequest, Input};
use crate::api::response::Response;
use crate::auth;
use crate::backend::call::{log, open_chat, ChatAnswer};
use crate::backend::dialect::Learned;
use crate::backend::routes::Route;
use crate::backend::{status_error, Backend, BodyStream, Method, Outbound};
use crate::chat::{ChatChunk, ChatRequest, KeptMessages, Rendered, ToolMap};
use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::{new_id, now};
use crate::store::{find_item, Conversation, KeptChat, Kv, ResponseStore, Turn};
use crate::stream::events::{Event, DONE_FRAME};
use crate::stream::sse::{SseData, SseReader};
use crate::stream::EventStream;

/// Where streamed events go.
pub trait EventSink {
    /// Writes bytes to the client; `false` once the client has gone away.
    #[allow(async_fn_in_trait)]
    async fn send(&mut self, bytes: Vec<u8>) -> bool;
}

/// The sink of a non-streaming request: events are dropped.
pub struct Discard;

impl EventSink for Discard {
    async fn send(&mut self, _bytes: Vec<u8>) -> bool {
        true
    }
}

/// Sort order of listed items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// The query of `GET /v1/responses/{id}/input_items`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub order: Option<Order>,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// The service for one request.
pub struct Service<K, B> {
    pub settings: Settings,
    pub kv: K,
    pub backend: B,
    /// What backends taught the instance about their parameters.
    pub learned: std::rc::Rc<Learned>,
}

/// A create in flight: the backend has accepted the request.
pub struct Exchange<'s, K: Kv, B: Backend> {
    service: &'s Service<K, B>,
    tenant: String,
    stream: EventStream,
    /// The backend's answer; `None` when it failed before answering.
    answer: Option<ChatAnswer<B::Body>>,
    /// A backend failure before the stream began.
    failure: Option<ApiError>,
    input: Vec<Item>,
    /// The conversation this request continues.
    parent: Option<Conversation>,
    store: bool,
    /// Whether the client asked for an event stream.
    pub streaming: bool,
    /// `max_tool_calls`: tool calls past it are dropped.
    max_tool_calls: Option<u64>,
    /// The backend's tool-call indices let through so far.
    calls_seen: std::collections::BTreeSet<usize>,
}

impl<K: Kv, B: Backend> Service<K, B> {
    fn store(&self, tenant: &str) -> ResponseStore<'_, K> {
        ResponseStore::new(&self.kv, tenant)
    }

    fn tenant(&self, api_key: Option<&str>) -> Result<String, ApiError> {
        auth::tenant(&self.settings, api_key)
    }

    /// Validates a create request, replays its conversation and calls the
    /// backend. Errors here are answered as plain HTTP errors.
    pub async fn start(
        &self,
        api_key: Option<&str>,
        body: &[u8],
    ) -> Result<Exchange<'_, K, B>, ApiError> {
        let tenant = self.tenant(api_key)?;
        let request = CreateRequest::parse(body)?;
        let store = self.store(&tenant);
        let conversation = match &request.previous_response_id {
            Some(id) => Some(self.previous(&store, id)?),
            None => None,
        };
        let send_reasoning = self.settings.backend_reasoning;
        // References are resolved against the conversation's items; without
        // them the items are only read if the turns kept no messages.
        let references = request.input.as_ref().is_some_and(Input::has_references);
        let mut history = match &conversation {
            Some(conversation) if references => conversation.items()?,
            _ => Vec::new(),
        };
        let input = prepare_input(request.input.clone(), &history, &store)?;
        let rendered = Rendered::new(&input, send_reasoning);
        let kept = match &conversation {
            None => Some(KeptMessages::default()),
            Some(_) if rendered.leading_call => None,
            Some(conversation) => conversation.kept_chat(send_reasoning)?,
        };
        let (kept, rendered) = match kept {
            Some(kept) => (kept, rendered.messages),
            None => {
                if history.is_empty() {
                    history = conversation
                        .as_ref()
                        .map(Conversation::items)
                        .transpose()?
                        .unwrap_or_default();
                }
                history.extend(input.iter().cloned());
                (
                    KeptMessages::default(),
                    Rendered::new(&history, send_reasoning).messages,
                )
            }
        };
        let tools = ToolMap::new(
            request.tools.as_deref().unwrap_or_default(),
            request.tool_choice.as_ref(),
        )?;
        let chat = ChatRequest::build(&request, kept, rendered, &tools)?;
        let route = self.settings.routes.for_model(request.model())?;
        let (answer, failure) = match open_chat(
            &self.backend,
            route,
            &self.learned,
            self.client_key(api_key),
            chat,
        )
        .await
        {
            Ok(answer) => (Some(answer), None),
            Err(error) => (None, Some(error)),
        };
        // Client errors, and any failure of a plain request, are answered as
        // HTTP errors. A stream whose backend failed (5xx, unreachable) ends
        // in `error` + `response.failed` like a failure mid-stream.
        if let Some(error) = &failure {
            if !request.stream() || error.status < 500 {
                return Err(error.clone());
            }
        }
        let response = Response::start(new_id("resp"), now(), &request);
        let mut stream = EventStream::new(response, tools);
        if route.think_tags {
            stream = stream.with_think_tags();
        }
        Ok(Exchange {
            service: self,
            tenant,
            stream,
            answer,
            failure,
            input,
            parent: conversation,
            store: request.store(),
            streaming: request.stream(),
            max_tool_calls: request.max_tool_calls,
            calls_seen: Default::default(),
        })
    }

    /// The stored conversation `previous_response_id` names, or 404 on that
    /// parameter.
    fn previous(&self, store: &ResponseStore<'_, K>, id: &str) -> Result<Conversation, ApiError> {
        store
            .conversation(id, now())
            .and_then(|found| {
                found.ok_or_else(|| {
                    ApiError::not_found(format!("Previous response with id '{id}' not found."))
                })
            })
            .map_err(|e| match e.status {
                404 => e.with_param("previous_response_id"),
                _ => e,
            })
    }

    /// A non-streaming create: the finished Response, or the error that
    /// ended it.
    pub async fn create(&self, api_key: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
        let exchange = self.start(api_key, body).await?;
        let (response, failure) = exchange.run(&mut Discard).await;
        match failure {
            Some(error) => Err(error),
            None => Ok(response),
        }
    }

    /// The client's key, when it is to be passed on to backends that have
    /// none of their own.
    fn client_key<'k>(&self, api_key: Option<&'k str>) -> Option<&'k str> {
        api_key.filter(|_| self.settings.forward_client_key)
    }

    /// The caller's stored turn of response `id`, or 404.
    fn stored_turn(&self, api_key: Option<&str>, id: &str) -> Result<Turn, ApiError> {
        let tenant = self.tenant(api_key)?;
        self.store(&tenant)
            .turn(id, now())?
            .ok_or_else(|| missing(id))
    }

    /// `GET /v1/responses/{id}`.
    pub fn get(&self, api_key: Option<&str>, id: &str) -> Result<Response, ApiError> {
        Ok(self.stored_turn(api_key, id)?.response)
    }

    /// `DELETE /v1/responses/{id}`.
    pub fn delete(&self, api_key: Option<&str>, id: &str) -> Result<Value, ApiError> {
        let tenant = self.tenant(api_key)?;
        if !self.store(&tenant).delete(id, now())? {
            return Err(missing(id));
        }
        Ok(json!({"id": id, "object": "response.deleted", "deleted": true}))
    }

    /// `GET /v1/responses/{id}/input_items`.
    pub fn list_input_items(
        &self,
        api_key: Option<&str>,
        id: &str,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        page(self.stored_turn(api_key, id)?.input, query)
    }

    /// `GET /v1/models`: every backend's list, merged (the first backend
    /// to list a model id wins). A backend that fails is left out, unless
    /// every one fails.
    pub async fn models(&self, api_key: Option<&str>) -> Result<Value, ApiError> {
        self.tenant(api_key)?;
        let mut data: Vec<Value> = Vec::new();
        let mut failure = None;
        for route in self.settings.routes.iter() {
            match self.route_models(route, api_key).await {
                Ok(models) => {
                    for model in models {
                        let id = model.get("id").and_then(Value::as_str);
                        let known = data
                            .iter()
                            .any(|m| m.get("id").and_then(Value::as_str) == id);
                        if id.is_some() && !known {
                            data.push(model);
                        }
                    }
                }
                Err(error) => {
                    log(route, &format!("listing models failed: {}", error.message));
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) if data.is_empty() => Err(error),
            _ => Ok(json!({"object": "list", "data": data})),
        }
    }

    /// The models one backend lists; for a backend that serves only named
    /// models, only those it both names and lists.
    async fn route_models(
        &self,
        route: &Route,
        api_key: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let request = Outbound {
            method: Method::Get,
            url: route.url("models"),
            headers: route.headers(self.client_key(api_key)),
            body: None,
        };
        let mut answer = self.backend.send(request).await?;
        let bytes = answer.body.collect().await.map_err(|e| {
            ApiError::backend(format!("Reading the backend's model list failed: {e}"))
        })?;
        if !(200..300).contains(&answer.status) {
            return Err(status_error(answer.status, &bytes));
        }
        let list: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::backend(format!("The backend's model list is not JSON: {e}")))?;
        let models = list
            .get("data")
            .or_else(|| list.get("models"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(models
            .into_iter()
            .filter(|model| {
                model
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| route.serves(id))
            })
            .collect())
    }
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("Response with id '{id}' not found."))
}

/// The request's input as stored: ids assigned, assistant text normalized,
/// item references resolved against the earlier conversation, else against
/// every stored response of the caller.
fn prepare_input<K: Kv>(
    input: Option<crate::api::request::Input>,
    history: &[Item],
    store: &ResponseStore<'_, K>,
) -> Result<Vec<Item>, ApiError> {
    let items = input.map(|i| i.into_items()).unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let item = match item {
            Item::ItemReference(reference) => {
                let known = find_item(history, &reference.id)
                    .or_else(|| find_item(&out, &reference.id))
                    .cloned();
                let found = match known {
                    Some(item) => Some(item),
                    None => store.item(&reference.id, now())?,
                };
                found.ok_or_else(|| {
                    ApiError::not_found(format!("Item with id '{}' not found.", reference.id))
                        .with_param(format!("input[{i}].id"))
                })?
            }
            other => other,
        };
        out.push(with_id(item));
    }
    Ok(out)
}

/// The chat messages `turn` renders to, kept with it when they read the
/// same whatever turns come before and after.
fn kept_chat(turn: &Turn, send_reasoning: bool) -> Result<Option<KeptChat>, ApiError> {
    let items = turn.input.iter().chain(&turn.response.output);
    let rendered = Rendered::new(items, send_reasoning);
    if !rendered.self_contained() {
        return Ok(None);
    }
    let messages = serde_json::to_vec(&rendered.messages)
        .map_err(|e| ApiError::server(format!("Chat messages could not be encoded: {e}")))?;
    Ok(Some(KeptChat {
        reasoning: send_reasoning,
        messages,
    }))
}

/// Gives an input item the id and status a stored item has.
fn with_id(mut item: Item) -> Item {
    match &mut item {
        Item::Message(m) => {
            m.normalize();
            m.id.get_or_insert_with(|| new_id("msg"));
            m.status.get_or_insert(Status::Completed);
        }
        Item::FunctionCall(c) => {
            c.id.get_or_insert_with(|| new_id("fc"));
            c.status.get_or_insert(Status::Completed);
        }
        Item::FunctionCallOutput(o) => {
            o.id.get_or_insert_with(|| new_id("fco"));
            o.status.get_or_insert(Status::Completed);
        }
        Item::CustomToolCall(c) => {
            c.id.get_or_insert_with(|| new_id("ctc"));
        }
        Item::CustomToolCallOutput(o) => {
            o.id.get_or_insert_with(|| new_id("ctco"));
        }
        Item::Reasoning(r) => {
            r.id.get_or_insert_with(|| new_id("rs"));
        }
        Item::ItemReference(_) | Item::Other(_) => {}
    }
    item
}

/// One page of a list, OpenAI style.
fn page(items: Vec<Item>, query: &ListQuery) -> Result<Value, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param(
            "limit",
            format!("'limit' must be between 1 and 100, got {limit}."),
        ));
    }
    let mut items = items;
    if query.order.unwrap_or_default() == Order::Desc {
        items.reverse();
    }
    let position = |cursor: &str, param: &str| {
        items
            .iter()
            .position(|item| item.id() == Some(cursor))
            .ok_or_else(|| {
                ApiError::invalid_param(param, format!("No item with id '{cursor}' in this list."))
            })
    };
    let start = match &query.after {
        Some(after) => position(after, "after")? + 1,
        None => 0,
    };
    let end = match &query.before {
        Some(before) => position(before, "before")?,
        None => items.len(),
    };
    let window: Vec<Item> = items
        .get(start..end.max(start))
        .unwrap_or_default()
        .iter()
        .take(limit as usize)
        .cloned()
        .collect();
    let has_more = end.max(start) - start > window.len();
    let first_id = window.first().and_then(Item::id).map(str::to_owned);
    let last_id = window.last().and_then(Item::id).map(str::to_owned);
    Ok(json!({
        "object": "list",
        "data": window,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    }))
}

/// Where a stream stands after some of its payloads.
enum Fed {
    More,
    /// `data: [DONE]`.
    Done,
    Failed(ApiError),
    ClientGone,
}

impl<K: Kv, B: Backend> Exchange<'_, K, B> {
    /// Streams the backend's answer through the event machine into `sink`,
    /// stores the response before its terminal event, and returns it with
    /// the error that ended it, if any.
    pub async fn run(mut self, sink: &mut impl EventSink) -> (Response, Option<ApiError>) {
        let events = self.stream.start();
        if !self.send(sink, events).await {
            return self.interrupted();
        }
        let mut failure = self.failure.take();
        let mut finished = false;
        match self.answer.take() {
            Some(ChatAnswer::Completion(mut chunk)) => {
                self.limit_tool_calls(&mut chunk);
                let events = self.stream.feed(chunk);
                if !self.send(sink, events).await {
                    return self.interrupted();
                }
                finished = true;
            }
            Some(ChatAnswer::Events { first, mut body }) => {
                let mut reader = SseReader::default();
                let mut payloads = reader.push(&first);
                loop {
                    match self.feed(sink, payloads).await {
                        Fed::More => {}
                        Fed::Done => {
                            finished = true;
                            break;
                        }
                        Fed::Failed(error) => {
                            failure = Some(error);
                            break;
                        }
                        Fed::ClientGone => return self.interrupted(),
                    }
                    payloads = match body.next().await {
                        Some(Ok(bytes)) => reader.push(&bytes),
                        Some(Err(e)) => {
                            failure = Some(ApiError::backend(format!(
                                "The backend connection failed mid-stream: {e}"
                            )));
                            break;
                        }
                        None => {
                            // A last frame without its blank line still counts.
                            if let Some(last) = reader.finish() {
                                match self.feed(sink, vec![last]).await {
                                    Fed::More | Fed::Done => finished = true,
                                    Fed::Failed(error) => failure = Some(error),
                                    Fed::ClientGone => return self.interrupted(),
                                }
                            }
                            break;
                        }
                    };
                }
            }
            None => {}
        }
        if failure.is_none() && !finished && !self.stream.saw_finish() {
            failure = Some(ApiError::backend(
                "The backend closed the stream before the completion was finished.",
            ));
        }
        let events = match &failure {
            Some(error) => self.stream.fail(error),
            None => self.stream.finish(),
        };
        if let Err(error) = self.save() {
            let events = self.stream.fail_instead(events, &error);
            self.send(sink, events).await;
            sink.send(DONE_FRAME.to_vec()).await;
            return (self.stream.into_response(), Some(error));
        }
        self.send(sink, events).await;
        sink.send(DONE_FRAME.to_vec()).await;
        (self.stream.into_response(), failure)
    }

    /// Feeds the chunks of SSE payloads through the event machine to `sink`.
    async fn feed(&mut self, sink: &mut impl EventSink, payloads: Vec<SseData>) -> Fed {
        for payload in payloads {
            let data = match payload {
                SseData::Done => return Fed::Done,
                SseData::Data(data) => data,
            };
            let mut chunk: ChatChunk = match serde_json::from_str(&data) {
                Ok(chunk) => chunk,
                Err(e) => {
                    return Fed::Failed(ApiError::backend(format!(
                        "The backend sent a malformed chunk ({e}): {}",
                        data.chars().take(200).collect::<String>()
                    )))
                }
            };
            if let Some(message) = chunk.error_message() {
                return Fed::Failed(ApiError::backend(format!(
                    "The backend reported an error mid-stream: {message}"
                )));
            }
            self.limit_tool_calls(&mut chunk);
            let events = self.stream.feed(chunk);
            if !self.send(sink, events).await {
                return Fed::ClientGone;
            }
        }
        Fed::More
    }

    /// Drops the tool calls of a chunk that go past `max_tool_calls`.
    fn limit_tool_calls(&mut self, chunk: &mut ChatChunk) {
        let Some(max) = self.max_tool_calls else {
            return;
        };
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        for choice in &mut chunk.choices {
            let seen = &mut self.calls_seen;
            choice.delta.tool_calls.retain(|call| {
                // Without an index, each fragment is a call of its own.
                let index = call.index.unwrap_or(usize::MAX - seen.len());
                if seen.contains(&index) {
                    return true;
                }
                if seen.len() < max {
                    seen.insert(index);
                    return true;
                }
                false
            });
        }
    }

    async fn send(&self, sink: &mut impl EventSink, events: Vec<Event>) -> bool {
        if events.is_empty() || !self.streaming {
            return true;
        }
        let bytes: Vec<u8> = events.iter().flat_map(Event::to_sse).collect();
        sink.send(bytes).await
    }

    /// The client went away: keep what was produced, marked incomplete.
    fn interrupted(mut self) -> (Response, Option<ApiError>) {
        self.stream.interrupt();
        let error = self.save().err();
        (self.stream.into_response(), error)
    }

    fn save(&self) -> Result<(), ApiError> {
        if !self.store {
            return Ok(());
        }
        let settings = &self.service.settings;
        let expires_at = settings.response_ttl_seconds.map(|ttl| now() + ttl);
        let turn = Turn {
            response: self.stream.response().clone(),
            input: self.input.clone(),
        };
        let chat = kept_chat(&turn, settings.backend_reasoning)?;
        ResponseStore::new(&self.service.kv, &self.tenant).save(
            &turn,
            chat.as_ref(),
            self.parent.as_ref(),
            expires_at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| with_id(Item::user_text(format!("m{i}"))))
            .collect()
    }

    fn ids(page: &Value) -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn pages_default_desc_with_cursors() {
        let list = items(5);
        let first = page(
            list.clone(),
            &ListQuery {
                limit: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&first), ["m4", "m3"]);
        assert_eq!(first["has_more"], true);
        let after = first["last_id"].as_str().unwrap().to_owned();
        let second = page(
            list.clone(),
            &ListQuery {
                limit: Some(10),
                after: Some(after),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&second), ["m2", "m1", "m0"]);
        assert_eq!(second["has_more"], false);
        let asc = page(
            list.clone(),
            &ListQuery {
                order: Some(Order::Asc),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&asc), ["m0", "m1", "m2", "m3", "m4"]);
        assert_eq!(
            page(
                list,
                &ListQuery {
                    limit: Some(0),
                    ..Default::default()
                }
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("limit")
        );
    }
}
