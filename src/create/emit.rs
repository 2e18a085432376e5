//! Step 7 of a create, emitting: events go to the client as server-sent
//! events when it asked for a stream, and nowhere otherwise. While the
//! stream waits on the backend, SSE comments keep it alive, so proxies that
//! drop idle connections (60 s is common) let long silences through.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};

use crate::ids::Timer;
use crate::stream::events::{Event, DONE_FRAME};

/// An SSE comment: clients skip it, proxies see traffic.
pub const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// Where streamed events go.
pub trait EventSink {
    /// Writes bytes to the client; `false` once the client has gone away
    /// (or, for a background response, asked to cancel it).
    #[allow(async_fn_in_trait)]
    async fn send(&mut self, bytes: Vec<u8>) -> bool;

    /// Whether the work stopped because its client cancelled it.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A live stream's bytes, to whatever carries them: an HTTP answer's body
/// or a WebSocket turn's queue. One type for all of them, so the pipeline,
/// generic over its sink, is compiled once for every live stream (each copy
/// costs the component tens of kilobytes).
///
/// Once a write fails (the client went away) it writes nothing more: the
/// sinks of outgoing bodies must not be written after an error.
pub struct LiveSink(Option<BodySink>);

/// The bytes' way to the client.
type BodySink = std::pin::Pin<Box<dyn futures::Sink<Vec<u8>, Error = ()>>>;

impl LiveSink {
    pub fn new<S: futures::Sink<Vec<u8>> + 'static>(sink: S) -> Self {
        LiveSink(Some(Box::pin(futures::SinkExt::sink_map_err(sink, |_| ()))))
    }
}

impl EventSink for LiveSink {
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        let Some(sink) = self.0.as_mut() else {
            return false;
        };
        let sent = futures::SinkExt::send(sink, bytes).await.is_ok();
        if !sent {
            self.0 = None;
        }
        sent
    }
}

/// The sink of a non-streaming request: events are dropped.
pub struct Discard;

impl EventSink for Discard {
    async fn send(&mut self, _bytes: Vec<u8>) -> bool {
        true
    }
}

/// How often a silent stream gets a keep-alive comment.
#[derive(Clone)]
pub struct KeepAlive {
    pub timer: Rc<dyn Timer>,
    pub every: Duration,
}

/// The events of one create, on their way to its client.
pub struct Emitter<'a, S: EventSink> {
    sink: &'a mut S,
    /// Whether the client asked for an event stream.
    streaming: bool,
    keep_alive: Option<KeepAlive>,
}

impl<'a, S: EventSink> Emitter<'a, S> {
    pub fn new(sink: &'a mut S, streaming: bool) -> Self {
        Emitter {
            sink,
            streaming,
            keep_alive: None,
        }
    }

    /// Keeps the stream alive while [`wait`](Self::wait) waits.
    pub fn with_keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.keep_alive = keep_alive.filter(|k| !k.every.is_zero());
        self
    }

    /// Sends `events` as one write; `false` once the client has gone away.
    pub async fn events(&mut self, events: Vec<Event>) -> bool {
        if events.is_empty() || !self.streaming {
            return true;
        }
        let bytes: Vec<u8> = events.iter().flat_map(Event::to_sse).collect();
        self.sink.send(bytes).await
    }

    /// Waits for `future`, sending a keep-alive comment each time the
    /// stream has been silent for the keep-alive interval; `None` once the
    /// client has gone away.
    pub async fn wait<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let keep_alive = match &self.keep_alive {
            Some(keep_alive) if self.streaming => keep_alive.clone(),
            _ => return Some(future.await),
        };
        let mut future = std::pin::pin!(future);
        loop {
            let sleep = keep_alive.timer.sleep(keep_alive.every);
            match select(future.as_mut(), sleep).await {
                Either::Left((output, _)) => return Some(output),
                Either::Right(((), _)) => {
                    if !self.sink.send(KEEP_ALIVE_FRAME.to_vec()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the client cancelled the work (see [`EventSink::cancelled`]).
    pub fn cancelled(&self) -> bool {
        self.sink.cancelled()
    }

    /// Ends the stream with `data: [DONE]`.
    pub async fn done(&mut self) {
        if self.streaming {
            self.sink.send(DONE_FRAME.to_vec()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::future::LocalBoxFuture;

    use super::*;

    /// A timer whose sleeps end at once.
    struct Instant;

    impl Timer for Instant {
        fn sleep(&self, _duration: Duration) -> LocalBoxFuture<'static, ()> {
            Box::pin(futures::future::ready(()))
        }
    }

    /// Pending for its first `polls` polls, then `7`.
    struct Slow {
        polls: Cell<usize>,
    }

    impl Future for Slow {
        type Output = u32;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            match self.polls.get() {
                0 => Poll::Ready(7),
                n => {
                    self.polls.set(n - 1);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    struct Collect(Vec<u8>, bool);

    impl EventSink for Collect {
        async fn send(&mut self, bytes: Vec<u8>) -> bool {
            self.0.extend(bytes);
            self.1
        }
    }

    fn keep_alive(every: u64) -> Option<KeepAlive> {
        Some(KeepAlive {
            timer: Rc::new(Instant),
            every: Duration::from_secs(every),
        })
    }

    fn wait_with(sink: &mut Collect, streaming: bool, every: u64, polls: usize) -> Option<u32> {
        let mut out = Emitter::new(sink, streaming).with_keep_alive(keep_alive(every));
        let slow = Slow {
            polls: Cell::new(polls),
        };
        futures::executor::block_on(out.wait(slow))
    }

    #[test]
    fn each_silent_interval_sends_one_comment() {
        let mut sink = Collect(Vec::new(), true);
        assert_eq!(wait_with(&mut sink, true, 15, 3), Some(7));
        assert_eq!(sink.0, KEEP_ALIVE_FRAME.repeat(3));
    }

    #[test]
    fn plain_requests_and_a_zero_interval_get_none() {
        let mut sink = Collect(Vec::new(), true);
        assert_eq!(wait_with(&mut sink, false, 15, 3), Some(7));
        assert_eq!(wait_with(&mut sink, true, 0, 3), Some(7));
        assert!(sink.0.is_empty());
    }

    #[test]
    fn a_client_gone_stops_the_wait() {
        let mut sink = Collect(Vec::new(), false);
        assert_eq!(wait_with(&mut sink, true, 15, 3), None);
        assert_eq!(sink.0, KEEP_ALIVE_FRAME);
    }

    #[test]
    fn a_live_stream_is_not_written_after_a_failed_write() {
        // An outgoing body's sink fails a write once its client is gone,
        // and panics if written again.
        let body = futures::sink::unfold((), |(), _bytes: Vec<u8>| async { Err::<(), ()>(()) });
        let mut sink = LiveSink::new(body);
        let sent = futures::executor::block_on(async {
            [
                sink.send(b"a".to_vec()).await,
                sink.send(b"b".to_vec()).await,
            ]
        });
        assert_eq!(sent, [false, false]);
    }
}
