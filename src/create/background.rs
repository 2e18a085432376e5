//! A background response's [`EventSink`]: its events are kept in the
//! store in batches (so its stream can be resumed from any instance), its
//! lease renewed while it runs, its cancel mark checked, and its client,
//! if it is listening, sent the events live until it goes away; the work
//! goes on without it.

use super::emit::{EventSink, KEEP_ALIVE_FRAME};
use crate::api::response::{Response, ResponseStatus};
use crate::error::ApiError;
use crate::ids::Env;
use crate::store::background::{Job, Jobs, LEASE_SECONDS, RENEW_SECONDS};
use crate::store::Kv;

/// Writes of events a batch holds, at most.
const BATCH_WRITES: usize = 16;

/// Bytes past which a batch is written at once.
const BATCH_BYTES: usize = 64 << 10;

/// Writes of events between two reads of the cancel mark, at most.
const CANCEL_CHECK_WRITES: usize = 4;

/// Where a background response's events go.
pub struct BackgroundSink<'a, K: Kv, S: EventSink> {
    jobs: Jobs<'a, K>,
    job: Job,
    env: &'a Env,
    /// The client's stream, while it listens.
    live: Option<&'a mut S>,
    batch: Vec<u8>,
    writes: usize,
    renewed_at: i64,
    cancelled: bool,
}

impl<'a, K: Kv, S: EventSink> BackgroundSink<'a, K, S> {
    /// Files `queued` (the response as the create answered it) as its job;
    /// the work then runs through the sink, sending to `live` too.
    pub fn start(
        jobs: Jobs<'a, K>,
        queued: Response,
        env: &'a Env,
        live: Option<&'a mut S>,
    ) -> Result<Self, ApiError> {
        let now = env.now();
        let mut job = Job {
            response: queued,
            lease_until: now.saturating_add(LEASE_SECONDS),
            batches: 0,
        };
        jobs.write(&mut job, None)?;
        job.response.status = ResponseStatus::InProgress;
        Ok(BackgroundSink {
            jobs,
            job,
            env,
            live,
            batch: Vec::new(),
            writes: 0,
            renewed_at: now,
            cancelled: false,
        })
    }

    /// Writes the events not yet written and the finished response.
    pub fn finish(mut self, response: Response) {
        self.job.response = response;
        self.flush();
    }

    /// Writes the batch with the job, renewing the lease, and reads the
    /// cancel mark. A store that fails here costs the stored events, not
    /// the response, which is saved on its own.
    fn flush(&mut self) {
        let now = self.env.now();
        self.job.lease_until = now.saturating_add(LEASE_SECONDS);
        let batch = std::mem::take(&mut self.batch);
        if let Err(error) = self.jobs.write(&mut self.job, Some(batch)) {
            eprintln!(
                "edge-responses: background job {}: {}",
                self.job.response.id, error.message
            );
        }
        self.writes = 0;
        self.renewed_at = now;
        self.check_cancel();
    }

    /// Reads the cancel mark, until it is found.
    fn check_cancel(&mut self) {
        if !self.cancelled {
            self.cancelled = self.jobs.cancelling(&self.job.response.id).unwrap_or(false);
        }
    }
}

impl<K: Kv, S: EventSink> EventSink for BackgroundSink<'_, K, S> {
    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        let keep_alive = bytes == KEEP_ALIVE_FRAME;
        if !keep_alive {
            self.batch.extend_from_slice(&bytes);
            self.writes += 1;
        }
        if let Some(live) = self.live.as_mut() {
            if !live.send(bytes).await {
                self.live = None;
            }
        }
        // The first events go out at once: readers see it in progress.
        let first = self.job.batches == 0;
        let due = self.env.now() >= self.renewed_at.saturating_add(RENEW_SECONDS);
        if first || due || self.writes >= BATCH_WRITES || self.batch.len() >= BATCH_BYTES {
            self.flush();
        } else if self.writes.is_multiple_of(CANCEL_CHECK_WRITES) {
            self.check_cancel();
        }
        !self.cancelled
    }

    fn cancelled(&self) -> bool {
        self.cancelled
    }
}
