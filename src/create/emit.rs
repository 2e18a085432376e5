//! Step 7 of a create, emitting: events go to the client as server-sent
//! events when it asked for a stream, and nowhere otherwise.

use crate::stream::events::{Event, DONE_FRAME};

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

/// The events of one create, on their way to its client.
pub struct Emitter<'a, S: EventSink> {
    sink: &'a mut S,
    /// Whether the client asked for an event stream.
    streaming: bool,
}

impl<'a, S: EventSink> Emitter<'a, S> {
    pub fn new(sink: &'a mut S, streaming: bool) -> Self {
        Emitter { sink, streaming }
    }

    /// Sends `events` as one write; `false` once the client has gone away.
    pub async fn events(&mut self, events: Vec<Event>) -> bool {
        if events.is_empty() || !self.streaming {
            return true;
        }
        let bytes: Vec<u8> = events.iter().flat_map(Event::to_sse).collect();
        self.sink.send(bytes).await
    }

    /// Ends the stream with `data: [DONE]`.
    pub async fn done(&mut self) {
        if self.streaming {
            self.sink.send(DONE_FRAME.to_vec()).await;
        }
    }
}
