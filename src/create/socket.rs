//! A create as the host's WebSocket mode runs it (`GET /v1/responses`
//! upgraded, one `response.create` message per turn): always streamed,
//! never in the background, its events queued for the host to pull one at
//! a time, and able to continue the connection's last unstored response
//! from the host's memory instead of the store.
//!
//! The memory is [`Remembered`]: the response's id and every item a
//! continuation replays (its input, which already holds what it continued,
//! then its output). The host keeps the JSON the component hands it after a
//! turn and passes it back with the next one; a turn whose
//! `previous_response_id` names it continues from those items, any other
//! id is looked up in the store as over HTTP.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

use crate::api::items::Item;
use crate::api::request::{CreateRequest, Input};
use crate::api::response::{Response, ResponseStatus};
use crate::error::ApiError;
use crate::stream::sse::{SseData, SseReader};

/// The last unstored response of a connection, as its host keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The response's id.
    pub id: String,
    /// What a continuation of it replays: its input, then its output.
    pub items: Vec<Item>,
}

impl Remembered {
    /// What a connection keeps of `response` once its events are over:
    /// its items, as JSON, when it completed without being stored (a
    /// stored one continues from the store) and they fit in `limit` bytes.
    pub fn after(response: &Response, input: &[Item], limit: u64) -> Option<String> {
        if response.store || response.status != ResponseStatus::Completed {
            return None;
        }
        let remembered = Remembered {
            id: response.id.clone(),
            items: input.iter().chain(&response.output).cloned().collect(),
        };
        crate::api::to_json(&remembered)
            .ok()
            .filter(|json| json.len() as u64 <= limit)
    }

    /// The memory a host passed back.
    pub fn parse(json: &str) -> Result<Remembered, ApiError> {
        crate::api::from_slice(json.as_bytes()).map_err(|e| {
            ApiError::server(format!(
                "The connection's memory of its last response is unreadable: {e}"
            ))
        })
    }
}

/// What a WebSocket turn brings besides its body.
#[derive(Debug, Default)]
pub struct Turn {
    /// The connection's last unstored response, if it has one.
    pub remembered: Option<Remembered>,
}

impl Turn {
    /// Makes `request` a WebSocket turn: streamed (the transport implies
    /// it), not in the background (which the mode does not have), and,
    /// when it continues the remembered response, that response's items
    /// before its input, its `previous_response_id` taken out of it and
    /// returned, to be put back once the state is resolved.
    pub fn apply(self, request: &mut CreateRequest) -> Result<Option<String>, ApiError> {
        if request.background == Some(true) {
            return Err(ApiError::invalid_param(
                "background",
                "'background' is not supported over a WebSocket connection.",
            ));
        }
        request.stream = Some(true);
        let Some(remembered) = self.remembered else {
            return Ok(None);
        };
        if request.previous_response_id.as_deref() != Some(remembered.id.as_str()) {
            return Ok(None);
        }
        let mut items = remembered.items;
        items.extend(
            request
                .input
                .take()
                .map(Input::into_items)
                .unwrap_or_default(),
        );
        request.input = Some(Input::Items(items));
        Ok(request.previous_response_id.take())
    }
}

/// The events of a create, queued as the JSON of each (the `data` of its
/// server-sent event) until the host pulls them. Keep-alive comments are
/// dropped: a WebSocket has its own. Once [`EventQueue::leave`] says the
/// client is gone, it takes nothing more, and the create stops as it does
/// when a stream's client goes away.
#[derive(Debug, Clone, Default)]
pub struct EventQueue(Rc<RefCell<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    reader: SseReader,
    events: VecDeque<String>,
    gone: bool,
}

/// What a queue whose client has gone answers a write with.
#[derive(Debug)]
pub struct ClientGone;

impl EventQueue {
    /// The oldest event not yet pulled.
    pub fn pop(&self) -> Option<String> {
        self.0.borrow_mut().events.pop_front()
    }

    /// Whether an event waits to be pulled.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().events.is_empty()
    }

    /// The client went away: what is queued is dropped, and writes fail.
    pub fn leave(&self) {
        let mut queue = self.0.borrow_mut();
        queue.gone = true;
        queue.events.clear();
    }
}

/// Taken as a [`LiveSink`](super::LiveSink) is: it never waits, the turn
/// pulls.
impl futures::Sink<Vec<u8>> for EventQueue {
    type Error = ClientGone;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.0.borrow().gone {
            true => Poll::Ready(Err(ClientGone)),
            false => Poll::Ready(Ok(())),
        }
    }

    fn start_send(self: Pin<&mut Self>, bytes: Vec<u8>) -> Result<(), Self::Error> {
        let mut queue = self.0.borrow_mut();
        if queue.gone {
            return Err(ClientGone);
        }
        for data in queue.reader.push(&bytes) {
            if let SseData::Data(json) = data {
                queue.events.push_back(json);
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{EventSink, LiveSink};

    fn request(body: &str) -> CreateRequest {
        CreateRequest::parse(body.as_bytes()).expect("request")
    }

    fn remembered(id: &str) -> Remembered {
        Remembered {
            id: id.to_owned(),
            items: vec![Item::user_text("first"), Item::user_text("answer")],
        }
    }

    #[test]
    fn a_turn_continuing_the_remembered_response_replays_its_items() {
        let mut req = request(r#"{"model":"m","input":"next","previous_response_id":"resp_1"}"#);
        let turn = Turn {
            remembered: Some(remembered("resp_1")),
        };
        let previous = turn.apply(&mut req).expect("applied");
        assert_eq!(previous.as_deref(), Some("resp_1"));
        assert_eq!(req.previous_response_id, None);
        assert_eq!(req.stream, Some(true));
        let items = req.input.expect("input").into_items();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2], Item::user_text("next"));
    }

    #[test]
    fn another_previous_id_is_left_to_the_store() {
        let mut req = request(r#"{"model":"m","input":"next","previous_response_id":"resp_2"}"#);
        let turn = Turn {
            remembered: Some(remembered("resp_1")),
        };
        assert_eq!(turn.apply(&mut req).expect("applied"), None);
        assert_eq!(req.previous_response_id.as_deref(), Some("resp_2"));
        assert_eq!(req.input.expect("input").into_items().len(), 1);
    }

    #[test]
    fn background_is_refused() {
        let mut req = request(r#"{"model":"m","input":"x","background":true}"#);
        let error = Turn::default().apply(&mut req).expect_err("refused");
        assert_eq!(error.status, 400);
        assert_eq!(error.param.as_deref(), Some("background"));
    }

    #[test]
    fn memory_round_trips_through_json() {
        let json = serde_json::to_string(&remembered("resp_1")).expect("json");
        assert_eq!(
            Remembered::parse(&json).expect("parsed"),
            remembered("resp_1")
        );
        assert_eq!(Remembered::parse("{").expect_err("bad").status, 500);
    }

    #[test]
    fn the_queue_keeps_event_data_and_drops_comments() {
        let queue = EventQueue::default();
        let mut sink = LiveSink::new(queue.clone());
        let bytes = b": keep-alive\n\nevent: a\ndata: {\"x\":1}\n\ndata: {\"y\"".to_vec();
        assert!(futures::executor::block_on(sink.send(bytes)));
        assert_eq!(queue.pop().as_deref(), Some(r#"{"x":1}"#));
        assert!(queue.is_empty());
        assert!(futures::executor::block_on(sink.send(b":2}\n\n".to_vec())));
        assert_eq!(queue.pop().as_deref(), Some(r#"{"y":2}"#));
        futures::executor::block_on(sink.send(b"data: {}\n\n".to_vec()));
        queue.leave();
        assert!(queue.is_empty());
        assert!(!futures::executor::block_on(
            sink.send(b"data: {}\n\n".to_vec())
        ));
    }
}
