//! The operations on background responses: reading one that is still
//! running, cancelling it, and the stored events a resumed stream reads.

use super::{missing, Service};
use crate::api::response::{Response, ResponseStatus};
use crate::backend::Backend;
use crate::create::KEEP_ALIVE_FRAME;
use crate::error::ApiError;
use crate::store::background::{Job, Jobs, Mark};
use crate::store::Kv;
use crate::stream::events::{Event, EventKind};

impl<K: Kv, B: Backend> Service<K, B> {
    /// The job of a background response of the caller, as of now.
    pub fn job(&self, api_key: Option<&str>, id: &str) -> Result<Option<Job>, ApiError> {
        let tenant = self.tenant(api_key)?;
        Jobs::new(&self.kv, &tenant).read_at(id, self.env.now())
    }

    /// A response that is not stored (yet): the state of its job, if it
    /// runs in the background.
    pub(super) fn running(&self, api_key: Option<&str>, id: &str) -> Result<Response, ApiError> {
        match self.job(api_key, id)? {
            Some(job) => Ok(job.response),
            None => Err(missing(id)),
        }
    }

    /// The input items of a background response not saved yet.
    pub(super) fn running_input(
        &self,
        api_key: Option<&str>,
        id: &str,
    ) -> Result<Vec<crate::api::items::Item>, ApiError> {
        let tenant = self.tenant(api_key)?;
        let jobs = Jobs::new(&self.kv, &tenant);
        match jobs.read_at(id, self.env.now())? {
            Some(_) => jobs.input(id)?.ok_or_else(|| missing(id)),
            None => Err(missing(id)),
        }
    }

    /// `POST /v1/responses/{id}/cancel`: a running background response is
    /// asked to stop; its worker reads the mark within a second, stops, and
    /// saves it as `cancelled` with what it had produced, and that is the
    /// answer (or whatever it ended as, if it finished first). A finished
    /// one is answered as it is; a response that did not run in the
    /// background is a 400.
    pub async fn cancel(&self, api_key: Option<&str>, id: &str) -> Result<Response, ApiError> {
        let tenant = self.tenant(api_key)?;
        let jobs = Jobs::new(&self.kv, &tenant);
        let Some(job) = jobs.read_at(id, self.env.now())? else {
            // The typed export runs `background` requests to their end.
            let turn = self.stored_turn(api_key, id)?;
            return match turn.response.background {
                true => Ok(turn.response),
                false => Err(not_background("cancelled")),
            };
        };
        if !job.running() {
            return self.finished(&tenant, job);
        }
        jobs.mark(id, Mark::Cancel)?;
        let timer = self.env.timer();
        for _ in 0..CANCEL_POLLS {
            timer.sleep(POLL).await;
            match jobs.read_at(id, self.env.now())? {
                Some(job) if job.running() => continue,
                Some(job) => return self.finished(&tenant, job),
                None => return Err(missing(id)),
            }
        }
        // Its worker has not stopped yet: a host that died holds it until
        // its lease runs out. The answer is what a read shows.
        Ok(job.response)
    }

    /// A finished background response: its saved turn, or its job's
    /// response when it was never saved (its worker died).
    fn finished(&self, tenant: &str, job: Job) -> Result<Response, ApiError> {
        let id = &job.response.id;
        Ok(match self.store(tenant).turn(id, self.env.now())? {
            Some(turn) => turn.response,
            None => job.response,
        })
    }

    /// Removes what the worker of `id` stored after its response was
    /// deleted while it ran, the `deleted` mark with it.
    pub fn forget(&self, tenant: &str, id: &str) -> Result<(), ApiError> {
        self.store(tenant).delete(id, self.env.now())?;
        Jobs::new(&self.kv, tenant).delete(id)?;
        Ok(())
    }

    /// Event batches of background response `id` from batch `from` on,
    /// with its job: what a resumed stream sends next.
    pub fn job_events(
        &self,
        api_key: Option<&str>,
        id: &str,
        from: u64,
    ) -> Result<(Job, Vec<Vec<u8>>), ApiError> {
        let tenant = self.tenant(api_key)?;
        let jobs = Jobs::new(&self.kv, &tenant);
        let Some(job) = jobs.read_at(id, self.env.now())? else {
            self.stored_turn(api_key, id)?;
            return Err(not_background("streamed again"));
        };
        let batches = jobs.batches(id, from, job.batches)?;
        Ok((job, batches))
    }
}

/// How often a resumed stream (or a cancel waiting for its worker) looks
/// at the job while the response runs.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Polls a cancel waits for the worker to stop: 5 s. The worker reads the
/// mark at least once a second.
const CANCEL_POLLS: u32 = 20;

/// The 400 for a background operation on a response that did not run in
/// the background.
fn not_background(what: &str) -> ApiError {
    ApiError::invalid_request(format!(
        "Only a response created with background set to true can be {what}."
    ))
}

impl<K: Kv, B: Backend> Service<K, B> {
    /// `GET /v1/responses/{id}?stream=true&starting_after=N`: the stored
    /// events of background response `id` after sequence number `after`,
    /// then the new ones as its worker (on any instance) stores them, to
    /// its terminal event. The job is read before anything is sent, so an
    /// unknown id is an error, not an empty stream.
    pub async fn resume<S: crate::create::EventSink>(
        &self,
        api_key: Option<&str>,
        id: &str,
        after: Option<u64>,
        sink: &mut S,
    ) -> Result<(), ApiError> {
        let (mut job, mut batches) = self.job_events(api_key, id, 0)?;
        let mut replay = Replay {
            after,
            last: None,
            ended: false,
        };
        let timer = self.env.timer();
        let keep_alive = self.settings.stream_keepalive();
        let mut silent = std::time::Duration::ZERO;
        loop {
            for batch in &batches {
                silent = std::time::Duration::ZERO;
                if !sink.send(replay.frames(batch)).await {
                    return Ok(());
                }
            }
            if !job.running() {
                break;
            }
            timer.sleep(POLL).await;
            silent = silent.saturating_add(POLL);
            // Proxies see traffic, and a client that left is noticed.
            if keep_alive.is_some_and(|every| silent >= every) {
                silent = std::time::Duration::ZERO;
                if !sink.send(KEEP_ALIVE_FRAME.to_vec()).await {
                    return Ok(());
                }
            }
            let from = job.batches;
            (job, batches) = match self.job_events(api_key, id, from) {
                Ok(read) => read,
                // Deleted (or expired) meanwhile: the stream says so.
                Err(error) => {
                    let sequence = replay.last.map_or(0, |n| n.saturating_add(1));
                    sink.send(error_event(&error, sequence).to_sse()).await;
                    sink.send(crate::stream::events::DONE_FRAME.to_vec()).await;
                    return Ok(());
                }
            };
        }
        if !replay.ended {
            // Its worker died (the lease ran out) or its events were lost:
            // the stream still ends, as the response did.
            let tenant = self.tenant(api_key)?;
            let response = self.finished(&tenant, job)?;
            let sequence = replay.last.map_or(0, |n| n.saturating_add(1));
            sink.send(terminal(response, sequence).to_sse()).await;
        }
        sink.send(crate::stream::events::DONE_FRAME.to_vec()).await;
        Ok(())
    }
}

/// The `error` event of a stream that cannot go on.
fn error_event(error: &ApiError, sequence_number: u64) -> Event {
    Event {
        kind: EventKind::Error {
            code: error.code.clone(),
            message: error.message.clone(),
            param: error.param.clone(),
        },
        sequence_number,
    }
}

/// The terminal event of a response that ended as `response` did.
fn terminal(response: Response, sequence_number: u64) -> Event {
    let response = Box::new(response);
    let kind = match response.status {
        ResponseStatus::Completed => EventKind::Completed { response },
        ResponseStatus::Incomplete | ResponseStatus::Cancelled => {
            EventKind::Incomplete { response }
        }
        _ => EventKind::Failed { response },
    };
    Event {
        kind,
        sequence_number,
    }
}

/// The events of stored batches a resumed stream passes on.
struct Replay {
    /// `starting_after`: events up to this sequence number are skipped.
    after: Option<u64>,
    /// The last sequence number seen.
    last: Option<u64>,
    /// Whether a terminal event went by.
    ended: bool,
}

impl Replay {
    /// The frames of `batch` after `starting_after`, as SSE.
    fn frames(&mut self, batch: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut reader = crate::stream::sse::SseReader::default();
        let mut payloads = reader.push(batch);
        payloads.extend(reader.finish());
        for payload in payloads {
            let crate::stream::sse::SseData::Data(data) = payload else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&data) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default();
            let sequence = event["sequence_number"].as_u64();
            self.last = sequence.or(self.last);
            if matches!(
                kind,
                "response.completed" | "response.incomplete" | "response.failed"
            ) {
                self.ended = true;
            }
            if sequence.is_some_and(|n| self.after.is_some_and(|after| n <= after)) {
                continue;
            }
            out.extend_from_slice(format!("event: {kind}\ndata: {data}\n\n").as_bytes());
        }
        out
    }
}
