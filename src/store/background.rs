//! Background responses while they run: what `GET` shows before the
//! response is saved, the events a stream can be resumed from, the cancel
//! mark, and the lease that tells a live worker from a dead one.
//!
//! # Layout
//!
//! - `{tenant}/bg/{id}`: the [`Job`]: the response as it stands, the end of
//!   its worker's lease, how many event batches are stored. Written only by
//!   the worker (and, once the lease has run out, by a reader that marks it
//!   failed).
//! - `{tenant}/bg/{id}/ev/{n}`: batch `n` of the response's events, as the
//!   server-sent-event frames a stream sends, written with the job in one
//!   batch.
//! - `{tenant}/bg/{id}/input`: the response's input items, written with
//!   the job's first write: what `input_items` lists until it is saved.
//! - `{tenant}/bg/{id}/cancel`: present once a client asked to cancel.
//! - `{tenant}/bg/{id}/deleted`: present once a client deleted the
//!   response while it ran. It hides the job from every reader, also from
//!   a worker's writes that race the delete, until the worker has removed
//!   what it wrote (then it goes too). A key of its own, so a cancel racing
//!   the delete cannot overwrite it.
//!
//! Both marks ([`Mark`]) are written only by clients, so no write of the
//! worker can lose them.
//!
//! The final response is saved as every response is (see the parent
//! module); the job stays so a stream can still be resumed, and goes with
//! the response's thread ([`crate::store::retention`]) or its `DELETE`.

use serde::{Deserialize, Serialize};

use super::{storage, Kv};
use crate::api::items::Item;
use crate::api::response::{Response, ResponseError, ResponseStatus};
use crate::error::ApiError;

/// How long a worker's lease lasts; the worker renews it at least every
/// [`RENEW_SECONDS`] while it runs.
pub const LEASE_SECONDS: i64 = 60;

/// How often a running worker renews its lease, at most this far apart.
pub const RENEW_SECONDS: i64 = 10;

/// A background response while it runs, and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub response: Response,
    /// Seconds since the epoch until which the worker is taken to be alive.
    pub lease_until: i64,
    /// Event batches stored: `0..batches`.
    pub batches: u64,
    /// Seconds since the epoch after which the job is gone for readers,
    /// as its response is (`response_ttl_seconds` after its last write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// What a client asked of a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Stop, and keep the response as `cancelled`.
    Cancel,
    /// Stop, and remove everything: the response was deleted.
    Deleted,
}

impl Job {
    /// Whether the response is still queued or running.
    pub fn running(&self) -> bool {
        matches!(
            self.response.status,
            ResponseStatus::Queued | ResponseStatus::InProgress
        )
    }

    /// A running job whose worker has not renewed its lease by `now` is
    /// taken for dead: its response fails.
    pub fn expire(&mut self, now: i64) -> bool {
        if !self.running() || now <= self.lease_until {
            return false;
        }
        self.response.status = ResponseStatus::Failed;
        self.response.error = Some(ResponseError {
            code: "server_error".to_owned(),
            message: "The server running this background response stopped before it finished."
                .to_owned(),
        });
        true
    }
}

/// The background jobs of one tenant.
pub struct Jobs<'a, K: Kv> {
    kv: &'a K,
    tenant: &'a str,
}

impl<'a, K: Kv> Jobs<'a, K> {
    pub fn new(kv: &'a K, tenant: &'a str) -> Self {
        Jobs { kv, tenant }
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}/bg/{id}", self.tenant)
    }

    fn cancel_key(&self, id: &str) -> String {
        format!("{}/bg/{id}/cancel", self.tenant)
    }

    fn deleted_key(&self, id: &str) -> String {
        format!("{}/bg/{id}/deleted", self.tenant)
    }

    fn mark_key(&self, id: &str, mark: Mark) -> String {
        match mark {
            Mark::Cancel => self.cancel_key(id),
            Mark::Deleted => self.deleted_key(id),
        }
    }

    fn input_key(&self, id: &str) -> String {
        format!("{}/bg/{id}/input", self.tenant)
    }

    fn batch_key(&self, id: &str, n: u64) -> String {
        format!("{}/bg/{id}/ev/{n}", self.tenant)
    }

    /// Writes `job`, and `events` as its next batch (counted in
    /// `job.batches`), in one round trip.
    pub fn write(&self, job: &mut Job, events: Option<Vec<u8>>) -> Result<(), ApiError> {
        self.write_with(job, Vec::new(), events)
    }

    /// Writes `job` with `entries` and `events` as its next batch.
    fn write_with(
        &self,
        job: &mut Job,
        mut entries: Vec<(String, Vec<u8>)>,
        events: Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        let id = job.response.id.clone();
        if let Some(events) = events.filter(|e| !e.is_empty()) {
            entries.push((self.batch_key(&id, job.batches), events));
            job.batches = job.batches.saturating_add(1);
        }
        let value = serde_json::to_vec(&*job)
            .map_err(|e| ApiError::server(format!("A background job could not be encoded: {e}")))?;
        entries.push((self.job_key(&id), value));
        self.kv.set_many(entries).map_err(storage)
    }

    /// The job of response `id`, if it ran in the background.
    pub fn read(&self, id: &str) -> Result<Option<Job>, ApiError> {
        let Some(bytes) = self.kv.get(&self.job_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        crate::api::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::server(format!("A stored background job is damaged: {e}")))
    }

    /// The job of `id` as a reader sees it at `now`, in one round trip
    /// with its mark: none once it expired or was deleted; a running job
    /// whose lease ran out is marked failed, for every later reader too.
    pub fn read_at(&self, id: &str, now: i64) -> Result<Option<Job>, ApiError> {
        let keys = vec![self.job_key(id), self.deleted_key(id)];
        let mut values = self.kv.get_many(keys).map_err(storage)?.into_iter();
        let (Some(Some(bytes)), deleted) = (values.next(), values.next().flatten()) else {
            return Ok(None);
        };
        let mut job: Job = crate::api::from_slice(&bytes)
            .map_err(|e| ApiError::server(format!("A stored background job is damaged: {e}")))?;
        if deleted.is_some() || job.expires_at.is_some_and(|at| now > at) {
            return Ok(None);
        }
        if job.expire(now) {
            self.write(&mut job, None)?;
        }
        Ok(Some(job))
    }

    /// Files a new job with its response's `input`, in one round trip.
    pub fn open(&self, job: &mut Job, input: &[Item]) -> Result<(), ApiError> {
        let value = serde_json::to_vec(input)
            .map_err(|e| ApiError::server(format!("A background job could not be encoded: {e}")))?;
        let key = self.input_key(&job.response.id);
        self.write_with(job, vec![(key, value)], None)
    }

    /// The input items of job `id`, if it is filed.
    pub fn input(&self, id: &str) -> Result<Option<Vec<Item>>, ApiError> {
        let Some(bytes) = self.kv.get(&self.input_key(id)).map_err(storage)? else {
            return Ok(None);
        };
        crate::api::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::server(format!("A stored background job is damaged: {e}")))
    }

    /// Event batches `from..to` of `id`, in order; a batch that is missing
    /// (removed meanwhile) is empty.
    pub fn batches(&self, id: &str, from: u64, to: u64) -> Result<Vec<Vec<u8>>, ApiError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let keys = (from..to).map(|n| self.batch_key(id, n)).collect();
        let values = self.kv.get_many(keys).map_err(storage)?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Asks the worker of `id` to stop, with `mark` saying why.
    pub fn mark(&self, id: &str, mark: Mark) -> Result<(), ApiError> {
        self.kv
            .set_many(vec![(self.mark_key(id, mark), b"1".to_vec())])
            .map_err(storage)
    }

    /// What clients asked of `id`, if anything: a delete over a cancel.
    pub fn marked(&self, id: &str) -> Result<Option<Mark>, ApiError> {
        let keys = vec![self.deleted_key(id), self.cancel_key(id)];
        let marks = self.kv.get_many(keys).map_err(storage)?;
        let mut found = [Mark::Deleted, Mark::Cancel]
            .into_iter()
            .zip(marks)
            .filter_map(|(mark, value)| value.map(|_| mark));
        Ok(found.next())
    }

    /// Every key of the jobs of `ids`, for removal: one read of the jobs
    /// for their batch counts.
    pub fn keys(&self, ids: &[&str]) -> Result<Vec<String>, ApiError> {
        let jobs = self
            .kv
            .get_many(ids.iter().map(|id| self.job_key(id)).collect())
            .map_err(storage)?;
        let mut keys = Vec::new();
        for (id, job) in ids.iter().zip(jobs) {
            let Some(job) = job else { continue };
            let batches = crate::api::from_slice::<Job>(&job).map_or(0, |j| j.batches);
            keys.push(self.job_key(id));
            keys.push(self.input_key(id));
            keys.push(self.cancel_key(id));
            keys.push(self.deleted_key(id));
            keys.extend((0..batches).map(|n| self.batch_key(id, n)));
        }
        Ok(keys)
    }

    /// Removes the job of `id`, if there is one.
    pub fn delete(&self, id: &str) -> Result<bool, ApiError> {
        let keys = self.keys(&[id])?;
        if keys.is_empty() {
            return Ok(false);
        }
        self.kv.delete_many(keys).map_err(storage)?;
        Ok(true)
    }

    /// Deletes `id` while its worker may still run: the `deleted` mark
    /// first (it stops the worker and hides whatever it writes next), then
    /// the job and its events; the worker removes the rest when it ends.
    pub fn delete_running(&self, id: &str) -> Result<(), ApiError> {
        self.mark(id, Mark::Deleted)?;
        let mut keys = self.keys(&[id])?;
        let mark = self.deleted_key(id);
        keys.retain(|key| *key != mark);
        self.kv.delete_many(keys).map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::CreateRequest;
    use crate::store::MemoryKv;

    fn job(id: &str) -> Job {
        let request =
            CreateRequest::parse(br#"{"model":"m","input":"hi","background":true}"#).unwrap();
        let mut response = Response::start(id.into(), 100, &request);
        response.status = ResponseStatus::Queued;
        Job {
            response,
            lease_until: 160,
            batches: 0,
            expires_at: None,
        }
    }

    #[test]
    fn jobs_batches_cancel_and_removal() {
        let kv = MemoryKv::default();
        let jobs = Jobs::new(&kv, "t");
        let mut job = job("resp_1");
        jobs.write(&mut job, None).unwrap();
        jobs.write(&mut job, Some(b"event: a\n\n".to_vec()))
            .unwrap();
        jobs.write(&mut job, Some(b"event: b\n\n".to_vec()))
            .unwrap();
        assert_eq!(job.batches, 2);
        assert_eq!(jobs.read("resp_1").unwrap(), Some(job.clone()));
        assert_eq!(
            jobs.batches("resp_1", 1, 2).unwrap(),
            [b"event: b\n\n".to_vec()]
        );
        assert_eq!(jobs.marked("resp_1").unwrap(), None);
        jobs.mark("resp_1", Mark::Cancel).unwrap();
        assert_eq!(jobs.marked("resp_1").unwrap(), Some(Mark::Cancel));
        assert!(jobs.delete("resp_1").unwrap());
        assert!(kv.values.borrow().is_empty());
        assert!(!jobs.delete("resp_1").unwrap());
    }

    #[test]
    fn a_lapsed_lease_fails_the_response_once() {
        let kv = MemoryKv::default();
        let jobs = Jobs::new(&kv, "t");
        let mut job = job("resp_2");
        jobs.write(&mut job, None).unwrap();
        assert!(jobs.read_at("resp_2", 160).unwrap().unwrap().running());
        let failed = jobs.read_at("resp_2", 161).unwrap().unwrap();
        assert_eq!(failed.response.status, ResponseStatus::Failed);
        assert!(failed.response.error.unwrap().message.contains("stopped"));
        assert_eq!(
            jobs.read("resp_2").unwrap().unwrap().response.status,
            ResponseStatus::Failed
        );
    }

    #[test]
    fn expired_and_deleted_jobs_are_gone_for_readers() {
        let kv = MemoryKv::default();
        let jobs = Jobs::new(&kv, "t");
        let mut expiring = job("resp_3");
        expiring.expires_at = Some(150);
        jobs.write(&mut expiring, None).unwrap();
        assert!(jobs.read_at("resp_3", 150).unwrap().is_some());
        assert!(jobs.read_at("resp_3", 151).unwrap().is_none());

        let mut running = job("resp_4");
        jobs.write(&mut running, Some(b"event: a\n\n".to_vec()))
            .unwrap();
        jobs.delete_running("resp_4").unwrap();
        assert!(jobs.read_at("resp_4", 100).unwrap().is_none());
        // A cancel racing the delete does not undo it.
        jobs.mark("resp_4", Mark::Cancel).unwrap();
        assert_eq!(jobs.marked("resp_4").unwrap(), Some(Mark::Deleted));
        // A worker's write racing the delete stays hidden, and goes with
        // the worker's own removal, mark included.
        jobs.write(&mut running, None).unwrap();
        assert!(jobs.read_at("resp_4", 100).unwrap().is_none());
        assert!(jobs.delete("resp_4").unwrap());
        assert!(jobs.delete("resp_3").unwrap());
        assert!(kv.values.borrow().is_empty());
    }
}
