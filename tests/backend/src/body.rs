//! Response bodies: a complete buffer, or frames produced on the fly by an
//! async script that lives inside the body itself.
//!
//! A streamed body owns its producer future and polls it from `poll_frame`,
//! so the script runs on the connection's task, each frame reaches hyper as
//! soon as it is produced, and everything stops when the connection goes
//! away.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

type Producer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How many produced frames may wait for hyper to take them.
const CHANNEL_CAPACITY: usize = 16;

/// A response body.
pub(crate) enum ScriptBody {
    Full(Option<Bytes>),
    Streamed {
        producer: Option<Producer>,
        frames: mpsc::Receiver<Item>,
        length: Option<u64>,
    },
}

/// What a producer hands to the body.
pub(crate) enum Item {
    Data(Bytes),
    /// Fail the body: hyper then closes the connection mid-response.
    Abort,
}

/// The producer's end of a streamed body.
pub(crate) struct Sink {
    frames: mpsc::Sender<Item>,
}

/// The error a deliberately aborted body reports to hyper.
#[derive(Debug)]
pub(crate) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("response aborted by script")
    }
}

impl Error for Aborted {}

impl ScriptBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ScriptBody::Full(Some(bytes.into()))
    }

    /// A body whose frames come from `script`; `length`, when known, is sent
    /// as `content-length` (otherwise the body is chunked).
    pub(crate) fn streamed<F, Fut>(length: Option<u64>, script: F) -> Self
    where
        F: FnOnce(Sink) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (sender, frames) = mpsc::channel(CHANNEL_CAPACITY);
        ScriptBody::Streamed {
            producer: Some(Box::pin(script(Sink { frames: sender }))),
            frames,
            length,
        }
    }
}

impl Sink {
    /// Queues a data frame; `false` once the client has gone away.
    pub(crate) async fn send(&self, bytes: impl Into<Bytes>) -> bool {
        self.frames.send(Item::Data(bytes.into())).await.is_ok()
    }

    /// Fails the body, which makes hyper drop the connection.
    pub(crate) async fn abort(&self) {
        let _ = self.frames.send(Item::Abort).await;
    }

    /// Waits until the body has handed every queued frame to hyper and hyper
    /// has had a chance to flush them.
    pub(crate) async fn drained(&self) {
        while self.frames.capacity() < self.frames.max_capacity() && !self.frames.is_closed() {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            ScriptBody::Full(bytes) => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            ScriptBody::Streamed {
                producer, frames, ..
            } => {
                if let Some(running) = producer {
                    if running.as_mut().poll(cx).is_ready() {
                        *producer = None;
                    }
                }
                frames.poll_recv(cx).map(|item| match item? {
                    Item::Data(bytes) => Some(Ok(Frame::data(bytes))),
                    Item::Abort => Some(Err(Aborted)),
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ScriptBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ScriptBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ScriptBody::Full(None) => SizeHint::with_exact(0),
            ScriptBody::Streamed {
                length: Some(length),
                ..
            } => SizeHint::with_exact(*length),
            ScriptBody::Streamed { .. } => SizeHint::default(),
        }
    }
}
