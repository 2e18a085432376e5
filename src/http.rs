//! The HTTP routes, on spin-sdk's `wasi:http/incoming-handler` export.
//!
//! | route | handler |
//! | --- | --- |
//! | `POST /v1/responses` | create, as JSON or as server-sent events |
//! | `POST /v1/responses/compact` | compact a conversation (`crate::compact`) |
//! | `GET /v1/responses/{id}` | retrieve |
//! | `DELETE /v1/responses/{id}` | delete |
//! | `GET /v1/responses/{id}/input_items` | list input items |
//! | `GET /v1/models` | the backends' model lists, merged |
//! | `POST /v1/conversations` | create a conversation, with its first items |
//! | `GET`, `POST`, `DELETE /v1/conversations/{id}` | retrieve, update metadata, delete |
//! | `GET`, `POST /v1/conversations/{id}/items` | list items, add items |
//! | `GET`, `DELETE /v1/conversations/{id}/items/{item_id}` | retrieve, delete an item |
//! | `GET /v1/admin/retention` | what is stored and pending removal (`admin_key`) |
//! | `POST /v1/admin/retention/sweep` | one removal step now (`admin_key`) |

use futures::StreamExt;
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};

use crate::api::response::Response;
use crate::api::{limits, to_json};
use crate::auth::bearer;
use crate::create::background::{BackgroundSink, Upkeep};
use crate::create::{Discard, EventSink, LiveSink};
use crate::error::ApiError;
use crate::service::{ListQuery, Order};
use crate::store::background::Jobs;
use crate::wasi;

/// Entry point of every HTTP request.
#[spin_sdk::http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let method = request.method();
    let path_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_query.split_once('?').unwrap_or((&path_query, ""));
    let api_key = header(&request, "authorization").and_then(|h| bearer(&h).map(str::to_owned));
    wasi::begin_request(header(&request, "x-request-id"));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (&method, segments.as_slice()) {
        (Method::Post, ["v1", "responses"]) => {
            return create(request, api_key.as_deref(), out).await;
        }
        (Method::Post, ["v1", "responses", "compact"]) => {
            return compact(request, api_key.as_deref(), out).await;
        }
        (Method::Get, ["v1", "responses", id])
            if query_value(query, "stream").is_some_and(|v| v == "true") =>
        {
            return resume(api_key.as_deref(), id, query, out).await;
        }
        (Method::Post, ["v1", "responses", id, "cancel"]) => match wasi::service() {
            Ok(s) => match stored_id(&s, api_key.as_deref(), id) {
                Ok(id) => s
                    .cancel(api_key.as_deref(), id)
                    .await
                    .and_then(|r| json_body(&r)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::Get, ["v1", "responses", id]) => with_service(|s| {
            json_body(&s.get(api_key.as_deref(), stored_id(s, api_key.as_deref(), id)?)?)
        }),
        (Method::Delete, ["v1", "responses", id]) => with_service(|s| {
            json_body(&s.delete(api_key.as_deref(), stored_id(s, api_key.as_deref(), id)?)?)
        }),
        (Method::Get, ["v1", "responses", id, "input_items"]) => with_service(|s| {
            let query = list_query(query)?;
            let id = stored_id(s, api_key.as_deref(), id)?;
            json_body(&s.list_input_items(api_key.as_deref(), id, &query)?)
        }),
        (Method::Get, ["v1", "models"]) => match wasi::service() {
            Ok(service) => service
                .models(api_key.as_deref())
                .await
                .and_then(|list| json_body(&list)),
            Err(e) => Err(e),
        },
        (Method::Post, ["v1", "conversations"]) => {
            let key = api_key.as_deref();
            with_body(request, key, |s, body| {
                json_body(&s.create_conversation(key, body)?)
            })
            .await
        }
        (Method::Get, ["v1", "conversations", id]) => {
            with_service(|s| json_body(&s.get_conversation(api_key.as_deref(), id)?))
        }
        (Method::Post, ["v1", "conversations", id]) => {
            let key = api_key.as_deref();
            with_body(request, key, |s, body| {
                json_body(&s.update_conversation(key, id, body)?)
            })
            .await
        }
        (Method::Delete, ["v1", "conversations", id]) => {
            with_service(|s| json_body(&s.delete_conversation(api_key.as_deref(), id)?))
        }
        (Method::Get, ["v1", "conversations", id, "items"]) => with_service(|s| {
            let query = list_query(query)?;
            json_body(&s.list_conversation_items(api_key.as_deref(), id, &query)?)
        }),
        (Method::Post, ["v1", "conversations", id, "items"]) => {
            let key = api_key.as_deref();
            with_body(request, key, |s, body| {
                json_body(&s.add_conversation_items(key, id, body)?)
            })
            .await
        }
        (Method::Get, ["v1", "conversations", id, "items", item]) => {
            with_service(|s| json_body(&s.get_conversation_item(api_key.as_deref(), id, item)?))
        }
        (Method::Delete, ["v1", "conversations", id, "items", item]) => with_service(|s| {
            json_body(&s.delete_conversation_item(api_key.as_deref(), id, item)?)
        }),
        (Method::Get, ["v1", "usage"]) => with_service(|s| {
            json_body(&s.usage(api_key.as_deref(), query_value(query, "days").as_deref())?)
        }),
        (Method::Get, ["v1", "admin", "retention"]) => {
            with_service(|s| json_body(&s.retention_status(api_key.as_deref())?))
        }
        (Method::Post, ["v1", "admin", "retention", "sweep"]) => {
            with_service(|s| json_body(&s.sweep_now(api_key.as_deref())?))
        }
        (_, ["v1", "responses"])
        | (_, ["v1", "conversations"])
        | (_, ["v1", "conversations", _])
        | (_, ["v1", "conversations", _, "items"])
        | (_, ["v1", "conversations", _, "items", _])
        | (_, ["v1", "admin", "retention"])
        | (_, ["v1", "admin", "retention", "sweep"])
        | (_, ["v1", "responses", _])
        | (_, ["v1", "responses", _, "input_items"])
        | (_, ["v1", "responses", _, "cancel"])
        | (_, ["v1", "models"])
        | (_, ["v1", "usage"]) => Err(ApiError::method_not_allowed(&method.to_string(), path)),
        _ => Err(ApiError::unknown_route(&method.to_string(), path)),
    };
    match result {
        Ok(body) => respond(out, 200, "application/json", body).await,
        Err(error) => respond_error(out, &error).await,
    }
}

fn with_service<T>(f: impl FnOnce(&WasiService) -> Result<T, ApiError>) -> Result<T, ApiError> {
    f(&wasi::service()?)
}

/// The response id of a path, for a caller with a valid key: an id no
/// response can have is a 404 (after the key check, so a caller without a
/// key still learns only that).
fn stored_id<'i>(s: &WasiService, api_key: Option<&str>, id: &'i str) -> Result<&'i str, ApiError> {
    s.tenant(api_key)?;
    limits::response_id(id)
}

use wasi::WasiService;

/// The service, and the body of a request whose caller is authenticated
/// before a byte of it is read; the body is read only up to
/// `max_request_bytes`: a larger `Content-Length` is answered 413 at once,
/// and a body without one (chunked) is answered 413 the moment it goes
/// past the limit. What was not read is never read.
async fn authenticated_body(
    request: IncomingRequest,
    api_key: Option<&str>,
) -> Result<(WasiService, Vec<u8>), ApiError> {
    let service = wasi::service()?;
    service.tenant(api_key)?;
    let body = read_body(request, service.settings.max_request_bytes).await?;
    Ok((service, body))
}

/// A route that reads a JSON body (see [`authenticated_body`]).
async fn with_body(
    request: IncomingRequest,
    api_key: Option<&str>,
    f: impl FnOnce(&WasiService, &[u8]) -> Result<Vec<u8>, ApiError>,
) -> Result<Vec<u8>, ApiError> {
    let (service, body) = authenticated_body(request, api_key).await?;
    f(&service, &body)
}

fn json_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    to_json(value).map(String::into_bytes)
}

/// `POST /v1/responses`: JSON, or an event stream when `stream` is true;
/// its body is read as [`authenticated_body`] reads it.
async fn create(request: IncomingRequest, api_key: Option<&str>, out: ResponseOutparam) {
    let (service, body) = match authenticated_body(request, api_key).await {
        Ok(read) => read,
        Err(error) => return respond_error(out, &error).await,
    };
    let exchange = match service.start(api_key, &body).await {
        Ok(exchange) => exchange,
        Err(error) => return respond_error(out, &error).await,
    };
    // The request is parsed: its bytes are not needed for the rest of the
    // exchange, which can take minutes.
    drop(body);
    let tenant = exchange.tenant().to_owned();
    if exchange.background {
        if let Some(response) = background(exchange, &service, out).await {
            report(&tenant, &response);
            service.record_usage(&tenant, &response);
        }
        service.after_create();
        service.end_sessions().await;
        return;
    }
    if !exchange.streaming {
        let (response, failure) = exchange.run(&mut Discard).await;
        match &failure {
            Some(error) => respond_error(out, error).await,
            None => match json_body(&response) {
                Ok(body) => respond(out, 200, "application/json", body).await,
                Err(error) => respond_error(out, &error).await,
            },
        };
        report(&tenant, &response);
        service.record_usage(&tenant, &response);
        service.after_create();
        service.end_sessions().await;
        return;
    }
    let Some(response) = start_response(200, "text/event-stream") else {
        return;
    };
    let mut sink = LiveSink::new(response.take_body());
    out.set(response);
    let (response, _) = exchange.run(&mut sink).await;
    // Ends the body: the client has it all before the upkeep runs.
    drop(sink);
    report(&tenant, &response);
    service.record_usage(&tenant, &response);
    service.after_create();
    service.end_sessions().await;
}

/// A background create: answered at once (`queued` as JSON, or the live
/// event stream), then run to its end whether or not its client stays;
/// see [`BackgroundSink`]. The handler returns when the work is done: the
/// host keeps the instance until then.
async fn background(
    exchange: crate::create::Create<'_, wasi::WasiKv, wasi::WasiBackend>,
    service: &WasiService,
    out: ResponseOutparam,
) -> Option<Response> {
    let tenant = exchange.tenant().to_owned();
    let jobs = Jobs::new(&service.kv, &tenant);
    let queued = exchange.queued();
    if !exchange.streaming {
        let upkeep = upkeep(service);
        let started = BackgroundSink::<_, Discard>::start(
            jobs,
            queued.clone(),
            exchange.input(),
            &service.env,
            None,
            upkeep,
        );
        let (mut sink, body) = match (started, json_body(&queued)) {
            (Ok(sink), Ok(body)) => (sink, body),
            (Err(error), _) | (_, Err(error)) => {
                respond_error(out, &error).await;
                return None;
            }
        };
        respond(out, 200, "application/json", body).await;
        let (response, _) = exchange.run(&mut sink).await;
        return finish(service, &tenant, sink, response);
    }
    let response = start_response(200, "text/event-stream")?;
    let mut live = LiveSink::new(response.take_body());
    let upkeep = upkeep(service);
    let input = exchange.input();
    let started = BackgroundSink::start(jobs, queued, input, &service.env, Some(&mut live), upkeep);
    let mut sink = match started {
        Ok(sink) => sink,
        Err(error) => {
            respond_error(out, &error).await;
            return None;
        }
    };
    out.set(response);
    let (response, _) = exchange.run(&mut sink).await;
    finish(service, &tenant, sink, response)
}

/// How a background response is kept: the settings its sink needs.
fn upkeep(service: &WasiService) -> Upkeep {
    Upkeep {
        keep_alive: service.settings.stream_keepalive(),
        ttl: service.settings.response_ttl_seconds,
    }
}

/// Ends a background response's job; one deleted while it ran leaves
/// nothing behind.
fn finish<S: EventSink>(
    service: &WasiService,
    tenant: &str,
    sink: BackgroundSink<'_, wasi::WasiKv, S>,
    response: Response,
) -> Option<Response> {
    if sink.finish(response.clone()) {
        if let Err(error) = service.forget(tenant, &response.id) {
            eprintln!(
                "edge-responses: removing deleted {}: {}",
                response.id, error.message
            );
        }
    }
    Some(response)
}

/// What only the component knows of a create, for the host's request log:
/// one line on stderr, `edge-responses-request` and a JSON object. Under
/// Spin it lands in the component's log.
pub(crate) fn report(tenant: &str, response: &Response) {
    let usage = response.usage.as_ref();
    let line = serde_json::json!({
        "request_id": wasi::request_id(),
        "response_id": response.id,
        "model": response.model,
        "tenant": tenant,
        "status": response.status,
        "input_tokens": usage.map(|u| u.input_tokens),
        "output_tokens": usage.map(|u| u.output_tokens),
        "stored": response.store,
    });
    eprintln!("edge-responses-request {line}");
}

/// `GET /v1/responses/{id}?stream=true`: a background response's events,
/// after `starting_after` if given.
async fn resume(api_key: Option<&str>, id: &str, query: &str, out: ResponseOutparam) {
    let started = async {
        let service = wasi::service()?;
        let id = stored_id(&service, api_key, id)?;
        let after = match query_value(query, "starting_after") {
            Some(n) => Some(n.parse::<u64>().map_err(|_| {
                ApiError::invalid_param(
                    "starting_after",
                    "starting_after must be a sequence number.",
                )
            })?),
            None => None,
        };
        // An unknown id is a 404, and a response that did not run in the
        // background a 400, before the stream starts.
        service.job_events(api_key, id, u64::MAX)?;
        Ok::<_, ApiError>((service, after))
    }
    .await;
    let (service, after) = match started {
        Ok(started) => started,
        Err(error) => return respond_error(out, &error).await,
    };
    let Some(response) = start_response(200, "text/event-stream") else {
        return;
    };
    let mut sink = LiveSink::new(response.take_body());
    out.set(response);
    if let Err(error) = service.resume(api_key, id, after, &mut sink).await {
        eprintln!("edge-responses: resuming {id}: {}", error.message);
    }
}

/// The value of `name` in a query string, decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `POST /v1/responses/compact`, authenticated and read as a create is.
async fn compact(request: IncomingRequest, api_key: Option<&str>, out: ResponseOutparam) {
    let compacted = async {
        let (service, body) = authenticated_body(request, api_key).await?;
        crate::compact::compact(&service, api_key, &body).await
    }
    .await;
    match compacted.and_then(|compacted| json_body(&compacted)) {
        Ok(body) => respond(out, 200, "application/json", body).await,
        Err(error) => respond_error(out, &error).await,
    }
}

/// The request body, at most `limit` bytes: 413 past it, without reading
/// further.
async fn read_body(request: IncomingRequest, limit: u64) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::request_too_large(limit);
    let declared = header(&request, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // One buffer, sized from the declared length when there is one (up to
    // a bound, in case the limit is set beyond what memory can hold).
    let capacity = declared.map_or(INITIAL_BODY_CAPACITY, |length| {
        usize::try_from(length).unwrap_or(usize::MAX)
    });
    let mut body = Vec::with_capacity(capacity.min(limit).min(MAX_BODY_CAPACITY));
    let mut stream = request.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid_request(format!(
                "Reading the request body failed: {}",
                e.to_debug_string()
            ))
        })?;
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first allocation for a body of unknown length.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;
/// The largest first allocation for a body of declared length.
const MAX_BODY_CAPACITY: usize = 64 << 20;

fn start_response(status: u16, content_type: &str) -> Option<OutgoingResponse> {
    start_response_with(status, content_type, None)
}

/// [`start_response`] with a `Retry-After` header, when given.
fn start_response_with(
    status: u16,
    content_type: &str,
    retry_after: Option<u64>,
) -> Option<OutgoingResponse> {
    let mut headers = vec![
        ("content-type".to_owned(), content_type.as_bytes().to_vec()),
        ("x-request-id".to_owned(), wasi::request_id().into_bytes()),
    ];
    if content_type == "text/event-stream" {
        headers.push(("cache-control".to_owned(), b"no-cache".to_vec()));
    }
    if let Some(seconds) = retry_after {
        headers.push(("retry-after".to_owned(), seconds.to_string().into_bytes()));
    }
    let fields = Fields::from_list(&headers).ok()?;
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).ok()?;
    Some(response)
}

async fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: Vec<u8>) {
    let Some(response) = start_response(status, content_type) else {
        return;
    };
    if let Err(e) = out.set_with_body(response, body).await {
        eprintln!("writing the response failed: {e:?}");
    }
}

async fn respond_error(out: ResponseOutparam, error: &ApiError) {
    let Some(response) = start_response_with(error.status, "application/json", error.retry_after)
    else {
        return;
    };
    if let Err(e) = out
        .set_with_body(response, error.to_body(&wasi::request_id()))
        .await
    {
        eprintln!("writing the response failed: {e:?}");
    }
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Parses `limit`, `order`, `after`, `before`.
fn list_query(query: &str) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "limit" => {
                out.limit = Some(value.parse().map_err(|_| {
                    ApiError::invalid_param(
                        "limit",
                        format!("'limit' must be an integer, got '{value}'."),
                    )
                })?)
            }
            "order" => {
                out.order = Some(match value.as_ref() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => {
                        return Err(ApiError::invalid_param(
                            "order",
                            format!("'order' must be 'asc' or 'desc', got '{value}'."),
                        ))
                    }
                })
            }
            "after" => out.after = Some(value.into_owned()),
            "before" => out.before = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(out)
}
