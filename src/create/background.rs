//! A background response's [`EventSink`]: its events are kept in the
//! store in batches (so its stream can be resumed from any instance), its
//! lease renewed while it runs, its cancel mark checked, and its client,
//! if it is listening, sent the events live until it goes away; the work
//! goes on without it.

use futures::future::Either;

use super::emit::{EventSink, KEEP_ALIVE_FRAME};
use crate::api::response::{Response, ResponseStatus};
use crate::error::ApiError;
use crate::ids::Env;
use crate::store::background::{Job, Jobs, Mark, LEASE_SECONDS, RENEW_SECONDS};
use crate::store::Kv;

/// Writes of events a batch holds, at most.
const BATCH_WRITES: usize = 16;

/// Bytes past which a batch is written at once.
const BATCH_BYTES: usize = 64 << 10;

/// How often a background response's emitter ticks while its backend (or a
/// tool) is silent: each tick reads the cancel mark.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait for a listening client to take one write; past it the
/// client is let go, as if it had left.
const LIVE_WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a background response's events go.
pub struct BackgroundSink<'a, K: Kv, S: EventSink> {
    jobs: Jobs<'a, K>,
    job: Job,
    env: &'a Env,
    /// The client's stream, while it listens.
    live: Option<&'a mut S>,
    /// How often the client's stream gets a keep-alive, if ever.
    keep_alive: Option<i64>,
    /// When the client's stream was last written.
    live_at: i64,
    /// `response_ttl_seconds`: how long the job outlives its last write.
    ttl: Option<i64>,
    batch: Vec<u8>,
    writes: usize,
    renewed_at: i64,
    /// When the cancel mark was last read.
    checked_at: i64,
    mark: Option<Mark>,
}

/// How a background response is kept and shown while it runs.
pub struct Upkeep {
    /// The live client's keep-alive interval (`stream_keepalive_seconds`).
    pub keep_alive: Option<std::time::Duration>,
    /// `response_ttl_seconds`.
    pub ttl: Option<i64>,
}

impl<'a, K: Kv, S: EventSink> BackgroundSink<'a, K, S> {
    /// Files `queued` (the response as the create answered it) as its job,
    /// with its `input`;
    /// the work then runs through the sink, sending to `live` too.
    pub fn start(
        jobs: Jobs<'a, K>,
        queued: Response,
        input: &[crate::api::items::Item],
        env: &'a Env,
        live: Option<&'a mut S>,
        upkeep: Upkeep,
    ) -> Result<Self, ApiError> {
        let now = env.now();
        let mut job = Job {
            response: queued,
            lease_until: now.saturating_add(LEASE_SECONDS),
            batches: 0,
            expires_at: None,
        };
        let ttl = upkeep.ttl;
        job.expires_at = ttl.map(|ttl| now.saturating_add(ttl));
        jobs.open(&mut job, input)?;
        job.response.status = ResponseStatus::InProgress;
        let keep_alive = upkeep
            .keep_alive
            .map(|every| i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
        Ok(BackgroundSink {
            jobs,
            job,
            env,
            live,
            keep_alive,
            live_at: now,
            ttl,
            batch: Vec::new(),
            writes: 0,
            renewed_at: now,
            checked_at: now,
            mark: None,
        })
    }

    /// Writes the events not yet written and the finished response; `true`
    /// when the response was deleted while it ran, and what the worker
    /// stored must go.
    pub fn finish(mut self, response: Response) -> bool {
        self.job.response = response;
        self.flush();
        // Its final write may have raced a delete: look once more.
        self.read_mark();
        self.mark == Some(Mark::Deleted)
    }

    /// Writes the batch with the job, renewing the lease, and reads the
    /// cancel mark. A store that fails here costs the stored events, not
    /// the response, which is saved on its own.
    fn flush(&mut self) {
        let now = self.env.now();
        self.job.lease_until = now.saturating_add(LEASE_SECONDS);
        self.job.expires_at = self.ttl.map(|ttl| now.saturating_add(ttl));
        let batch = std::mem::take(&mut self.batch);
        if let Err(error) = self.jobs.write(&mut self.job, Some(batch)) {
            eprintln!(
                "edge-responses: background job {}: {}",
                self.job.response.id, error.message
            );
        }
        self.writes = 0;
        self.renewed_at = now;
        self.read_mark();
    }

    /// Reads the marks clients left, until the response is deleted.
    fn read_mark(&mut self) {
        self.checked_at = self.env.now();
        if self.mark != Some(Mark::Deleted) {
            let marked = self.jobs.marked(&self.job.response.id);
            self.mark = marked.ok().flatten().or(self.mark);
        }
    }

    /// Sends `bytes` to the client while it listens; a keep-alive only
    /// once its stream has been silent for the keep-alive interval.
    async fn send_live(&mut self, bytes: Vec<u8>, keep_alive: bool, now: i64) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if keep_alive {
            let due = self
                .keep_alive
                .is_some_and(|every| now >= self.live_at.saturating_add(every));
            if !due {
                return;
            }
        }
        self.live_at = now;
        // A client that stops reading is let go: the work does not wait.
        let limit = self.env.timer().sleep(LIVE_WRITE_LIMIT);
        let taken = {
            let write = std::pin::pin!(live.send(bytes));
            matches!(
                futures::future::select(write, limit).await,
                Either::Left((true, _))
            )
        };
        if !taken {
            self.live = None;
        }
    }
}

impl<K: Kv, S: EventSink> EventSink for BackgroundSink<'_, K, S> {
    /// Keeps the events, passes them on, renews the lease when due, and
    /// reads the cancel mark at most once a second (the emitter ticks
    /// every second while the backend is silent).
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        let keep_alive = bytes == KEEP_ALIVE_FRAME;
        let now = self.env.now();
        if !keep_alive {
            self.batch.extend_from_slice(&bytes);
            self.writes += 1;
        }
        self.send_live(bytes, keep_alive, now).await;
        // The first events go out at once: readers see it in progress.
        let first = self.job.batches == 0;
        let due = now >= self.renewed_at.saturating_add(RENEW_SECONDS);
        if first || due || self.writes >= BATCH_WRITES || self.batch.len() >= BATCH_BYTES {
            self.flush();
        } else if now != self.checked_at {
            self.read_mark();
        }
        self.mark.is_none()
    }

    fn cancelled(&self) -> bool {
        self.mark.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use futures::future::LocalBoxFuture;

    use super::*;
    use crate::api::request::CreateRequest;
    use crate::ids::{fixed, Timer};
    use crate::store::MemoryKv;

    /// Sleeps that end at once.
    struct Instant;

    impl Timer for Instant {
        fn sleep(&self, _: std::time::Duration) -> LocalBoxFuture<'static, ()> {
            Box::pin(futures::future::ready(()))
        }
    }

    /// A client that never takes a write.
    struct Stuck(usize);

    impl EventSink for Stuck {
        async fn send(&mut self, _: Vec<u8>) -> bool {
            self.0 += 1;
            futures::future::pending().await
        }
    }

    #[test]
    fn a_client_that_stops_reading_is_let_go() {
        let kv = MemoryKv::default();
        let (env, _) = fixed::env(100);
        let env = env.with_timer(Rc::new(Instant));
        let request =
            CreateRequest::parse(br#"{"model":"m","input":"hi","background":true}"#).unwrap();
        let queued = Response::start("resp_1".into(), 100, &request);
        let mut stuck = Stuck(0);
        let upkeep = Upkeep {
            keep_alive: None,
            ttl: None,
        };
        let jobs = Jobs::new(&kv, "t");
        let mut sink =
            BackgroundSink::start(jobs, queued, &[], &env, Some(&mut stuck), upkeep).unwrap();
        let sent = futures::executor::block_on(async {
            [
                sink.send(b"a".to_vec()).await,
                sink.send(b"b".to_vec()).await,
            ]
        });
        assert_eq!(sent, [true, true], "the work goes on");
        assert!(sink.live.is_none());
        drop(sink);
        assert_eq!(stuck.0, 1, "written once, then let go");
    }
}
