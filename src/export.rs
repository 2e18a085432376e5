//! The typed `edge:responses/responses` export, on the same service as the
//! HTTP routes.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use crate::api::{limits, to_json};
use crate::create::socket::{EventQueue, Remembered, Turn};
use crate::create::{Create, LiveSink};
use crate::error::ApiError;
use crate::service::{ListQuery, Order};
use crate::wasi;

mod bindings {
    wit_bindgen::generate!({
        world: "edge-responses",
        path: "wit",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        with: {
            "wasi:http/outgoing-handler@0.2.6": spin_sdk::wit::wasi::http0_2_6::outgoing_handler,
            "wasi:http/types@0.2.6": spin_sdk::wit::wasi::http0_2_6::types,
            "wasi:io/error@0.2.6": spin_sdk::wit::wasi::io0_2_6::error,
            "wasi:io/poll@0.2.6": spin_sdk::wit::wasi::io0_2_6::poll,
            "wasi:io/streams@0.2.6": spin_sdk::wit::wasi::io0_2_6::streams,
            "wasi:clocks/monotonic-clock@0.2.6": spin_sdk::wit::wasi::clocks0_2_6::monotonic_clock,
            "wasi:keyvalue/store@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::store,
            "wasi:keyvalue/batch@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::batch,
            "wasi:keyvalue/atomics@0.2.0-draft2": spin_sdk::wit::wasi::keyvalue::atomics,
            "wasi:config/store@0.2.0-draft-2024-09-27": spin_sdk::wit::wasi::config::store,
        },
    });
}

use bindings::exports::edge::responses::responses as wit;

struct Component;

bindings::export!(Component with_types_in bindings);

impl From<ApiError> for wit::Error {
    fn from(e: ApiError) -> Self {
        wit::Error {
            status: e.status,
            message: e.message,
            type_: e.kind,
            param: e.param,
            code: e.code,
        }
    }
}

impl wit::Guest for Component {
    type EventStream = SocketTurn;

    fn authenticate(api_key: Option<String>) -> Result<(), wit::Error> {
        wasi::service()?.tenant(api_key.as_deref())?;
        Ok(())
    }

    fn create_stream(
        api_key: Option<String>,
        request_id: Option<String>,
        request: String,
        remembered: Option<String>,
    ) -> Result<wit::EventStream, wit::Error> {
        wasi::begin_request(request_id);
        let turn = SocketTurn::start(api_key, request, remembered)?;
        Ok(wit::EventStream::new(turn))
    }

    fn create(api_key: Option<String>, request: String) -> Result<String, wit::Error> {
        spin_sdk::http::run(async move {
            let service = wasi::service()?;
            checked(&service, api_key.as_deref(), &request)?;
            service.create(api_key.as_deref(), request.as_bytes()).await
        })
        .and_then(|r| to_json(&r))
        .map_err(Into::into)
    }

    fn get(api_key: Option<String>, id: String) -> Result<String, wit::Error> {
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        Ok(to_json(&service.get(api_key.as_deref(), id)?)?)
    }

    fn delete(api_key: Option<String>, id: String) -> Result<String, wit::Error> {
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        Ok(to_json(&service.delete(api_key.as_deref(), id)?)?)
    }

    fn list_input_items(
        api_key: Option<String>,
        id: String,
        query: wit::ListQuery,
    ) -> Result<String, wit::Error> {
        let query = ListQuery {
            limit: query.limit,
            order: query.order.map(|o| match o {
                wit::Order::Asc => Order::Asc,
                wit::Order::Desc => Order::Desc,
            }),
            after: query.after,
            before: query.before,
        };
        let service = wasi::service()?;
        service.tenant(api_key.as_deref())?;
        let id = limits::response_id(&id)?;
        let list = service.list_input_items(api_key.as_deref(), id, &query)?;
        Ok(to_json(&list)?)
    }
}

/// A typed create's caller and size, checked in that order, as over HTTP.
fn checked(
    service: &wasi::WasiService,
    api_key: Option<&str>,
    request: &str,
) -> Result<(), ApiError> {
    service.tenant(api_key)?;
    let limit = service.settings.max_request_bytes;
    if request.len() as u64 > limit {
        return Err(ApiError::request_too_large(limit));
    }
    Ok(())
}

/// The work of a WebSocket turn: it ends with what the connection keeps.
type Work = Pin<Box<dyn Future<Output = Option<String>>>>;

/// One WebSocket turn (see [`crate::create::socket`]): its work runs only
/// while the host pulls events, up to the next one, so a slow connection
/// holds the response back instead of queueing its events.
pub struct SocketTurn {
    queue: EventQueue,
    work: RefCell<Option<Work>>,
    remembered: RefCell<Option<String>>,
}

/// How a turn's start went, told by its work to [`SocketTurn::start`].
type Started = Rc<RefCell<Option<Result<(), ApiError>>>>;

impl SocketTurn {
    /// Runs the turn up to its first event: errors before it (the caller,
    /// the size, the request, the state it continues) are the call's.
    fn start(
        api_key: Option<String>,
        request: String,
        remembered: Option<String>,
    ) -> Result<SocketTurn, ApiError> {
        let queue = EventQueue::default();
        let started = Started::default();
        let work = Box::pin(Self::work(
            api_key,
            request,
            remembered,
            queue.clone(),
            started.clone(),
        ));
        let turn = SocketTurn {
            queue,
            work: RefCell::new(Some(work)),
            remembered: RefCell::new(None),
        };
        turn.drive(|| started.borrow().is_some());
        match started.take() {
            Some(Err(error)) => Err(error),
            _ => Ok(turn),
        }
    }

    async fn work(
        api_key: Option<String>,
        request: String,
        remembered: Option<String>,
        queue: EventQueue,
        started: Started,
    ) -> Option<String> {
        let api_key = api_key.as_deref();
        let service = match wasi::service() {
            Ok(service) => service,
            Err(error) => {
                *started.borrow_mut() = Some(Err(error));
                return None;
            }
        };
        let begun = Self::begin(&service, api_key, &request, remembered.as_deref()).await;
        let exchange = match begun {
            Ok(exchange) => exchange,
            Err(error) => {
                *started.borrow_mut() = Some(Err(error));
                return None;
            }
        };
        *started.borrow_mut() = Some(Ok(()));
        drop((request, remembered));
        let tenant = exchange.tenant().to_owned();
        let input = (!exchange.stored()).then(|| exchange.input().to_vec());
        let (response, _) = exchange.run(&mut LiveSink::new(queue)).await;
        crate::http::report(&tenant, &response);
        service.record_usage(&tenant, &response);
        service.after_create();
        service.end_sessions().await;
        let limit = service.settings.max_request_bytes;
        input.and_then(|input| Remembered::after(&response, &input, limit))
    }

    /// Steps 1 to 4 of the turn's create.
    async fn begin<'s>(
        service: &'s wasi::WasiService,
        api_key: Option<&'s str>,
        request: &str,
        remembered: Option<&str>,
    ) -> Result<Create<'s, wasi::WasiKv, wasi::WasiBackend>, ApiError> {
        checked(service, api_key, request)?;
        let turn = Turn {
            remembered: remembered.map(Remembered::parse).transpose()?,
        };
        Create::start_turn(service, api_key, request.as_bytes(), Some(turn)).await
    }

    /// Runs the work until `enough` holds, an event waits, or the work is
    /// done.
    fn drive(&self, enough: impl Fn() -> bool) {
        let mut work = self.work.borrow_mut();
        spin_sdk::http::run(std::future::poll_fn(|cx| {
            if enough() || !self.queue.is_empty() {
                return Poll::Ready(());
            }
            let Some(running) = work.as_mut() else {
                return Poll::Ready(());
            };
            match running.as_mut().poll(cx) {
                Poll::Ready(remembered) => {
                    *self.remembered.borrow_mut() = remembered;
                    *work = None;
                    Poll::Ready(())
                }
                Poll::Pending if enough() || !self.queue.is_empty() => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        }));
    }
}

/// A turn dropped before its end: its client went away. The work goes on
/// only to keep what it produced, as `incomplete`, as a stream's does.
impl Drop for SocketTurn {
    fn drop(&mut self) {
        if self.work.borrow().is_none() {
            return;
        }
        self.queue.leave();
        self.drive(|| false);
    }
}

impl wit::GuestEventStream for SocketTurn {
    fn next(&self) -> Option<String> {
        if self.queue.is_empty() {
            self.drive(|| false);
        }
        self.queue.pop()
    }

    fn remembered(&self) -> Option<String> {
        self.remembered.borrow().clone()
    }
}
