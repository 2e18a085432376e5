//! The Responses API operations, one implementation behind both entry
//! points (the HTTP routes and the typed `responses` export).
//!
//! [`Service`] holds what a request runs with: settings, the key-value
//! store, the backend client, what backends taught the instance, and the
//! clock and id source. It is generic over the store and the backend, so
//! the WASI glue stays thin and the whole API runs natively in tests.
//! Creating is the pipeline in [`crate::create`]; reading, deleting and
//! listing are here.

mod background;
mod conversations;
mod list;
mod models;
#[cfg(test)]
mod tests;
mod usage;

pub use list::{ListQuery, Order};

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::api::response::Response;
use crate::auth;
use crate::backend::dialect::Learned;
use crate::backend::{Backend, Outbound};
use crate::config::Settings;
use crate::create::{Create, Discard};
use crate::error::ApiError;
use crate::ids::Env;
use crate::store::conversations::Conversations;
use crate::store::retention::{self, Due, Status, Sweep};
use crate::store::{Kv, ResponseStore, Turn};

/// The service for one request.
pub struct Service<K, B> {
    pub settings: Settings,
    pub kv: K,
    pub backend: B,
    /// What backends taught the instance about their parameters.
    pub learned: Rc<Learned>,
    /// The clock and the source of ids.
    pub env: Env,
    /// MCP sessions finished responses leave open, to end once their
    /// client has the answer ([`Service::end_sessions`]).
    pub sessions: RefCell<Vec<Outbound>>,
}

impl<K: Kv, B: Backend> Service<K, B> {
    pub(crate) fn store(&self, tenant: &str) -> ResponseStore<'_, K> {
        ResponseStore::new(&self.kv, tenant)
    }

    pub(crate) fn conversations(&self, tenant: &str) -> Conversations<'_, K> {
        Conversations::new(&self.kv, tenant)
    }

    pub(crate) fn tenant(&self, api_key: Option<&str>) -> Result<String, ApiError> {
        auth::tenant(&self.settings, api_key)
    }

    /// Upkeep after a create has been answered: one create in
    /// `retention_sweep_every` runs a bounded step of removing expired data
    /// (the component has no timer of its own). Returns what the step did.
    pub fn after_create(&self) -> Option<Sweep> {
        let every = self.settings.retention_sweep_every;
        if every == 0 || (every > 1 && !self.env.random_u32().is_multiple_of(every)) {
            return None;
        }
        match retention::sweep(&self.kv, self.due()) {
            Ok(sweep) => Some(sweep),
            Err(error) => {
                eprintln!(
                    "edge-responses: removing expired data failed: {}",
                    error.message
                );
                None
            }
        }
    }

    /// Ends the MCP sessions finished responses left open: one `DELETE`
    /// each, sent after the client has its answer, all of them within
    /// `mcp_timeout_seconds`; a server that fails it, or is not reached in
    /// time, is only logged (it expires the session itself).
    pub async fn end_sessions(&self) {
        let ending = std::mem::take(&mut *self.sessions.borrow_mut());
        if ending.is_empty() {
            return;
        }
        let all = std::pin::pin!(async {
            for request in ending {
                if let Err(error) = self.backend.send(request).await {
                    eprintln!(
                        "edge-responses: ending an MCP session failed: {}",
                        error.message
                    );
                }
            }
        });
        let timeout = std::time::Duration::from_secs(self.settings.mcp_timeout_seconds);
        let limit = self.env.timer().sleep(timeout);
        if let futures::future::Either::Right(_) = futures::future::select(all, limit).await {
            eprintln!("edge-responses: ending MCP sessions: no answer within {timeout:?}");
        }
    }

    fn due(&self) -> Due {
        Due {
            now: self.env.now(),
            grace: self.settings.retention_grace_seconds,
        }
    }

    /// `GET /v1/admin/retention`: how many conversations are stored and how
    /// many wait for removal, counted on the expiry index up to the TTL
    /// from now.
    pub fn retention_status(&self, admin_key: Option<&str>) -> Result<Value, ApiError> {
        auth::admin(&self.settings, admin_key)?;
        let due = self.due();
        let ttl = self.settings.response_ttl_seconds.unwrap_or(0);
        let horizon = due.now.saturating_add(ttl).saturating_add(due.grace);
        let Status {
            pending,
            scheduled,
            sweep_at,
        } = retention::status(&self.kv, due, horizon)?;
        Ok(json!({
            "object": "retention.status",
            "conversations": {"stored": pending + scheduled, "pending_removal": pending},
            "sweep_at": sweep_at,
            "response_ttl_seconds": self.settings.response_ttl_seconds,
            "retention_grace_seconds": due.grace,
        }))
    }

    /// `POST /v1/admin/retention/sweep`: one bounded removal step now.
    pub fn sweep_now(&self, admin_key: Option<&str>) -> Result<Value, ApiError> {
        auth::admin(&self.settings, admin_key)?;
        let sweep = retention::sweep(&self.kv, self.due())?;
        let mut body = serde_json::to_value(sweep)
            .map_err(|e| ApiError::server(format!("Encoding failed: {e}")))?;
        body["object"] = json!("retention.sweep");
        Ok(body)
    }

    /// The client's key, when it is to be passed on to backends that have
    /// none of their own.
    pub(crate) fn client_key<'k>(&self, api_key: Option<&'k str>) -> Option<&'k str> {
        api_key.filter(|_| self.settings.forward_client_key)
    }

    /// Starts a create: validates it and resolves its state; a plain one
    /// also opens its backend call. Errors here are answered as plain HTTP
    /// errors.
    pub async fn start<'s>(
        &'s self,
        api_key: Option<&'s str>,
        body: &[u8],
    ) -> Result<Create<'s, K, B>, ApiError> {
        Create::start(self, api_key, body).await
    }

    /// A non-streaming create: the finished Response, or the error that
    /// ended it.
    pub async fn create(&self, api_key: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
        let create = self.start(api_key, body).await?;
        let (response, failure) = create.run(&mut Discard).await;
        self.end_sessions().await;
        match failure {
            Some(error) => Err(error),
            None => Ok(response),
        }
    }

    /// The caller's stored turn of response `id`, or 404.
    fn stored_turn(&self, api_key: Option<&str>, id: &str) -> Result<Turn, ApiError> {
        let tenant = self.tenant(api_key)?;
        self.store(&tenant)
            .turn(id, self.env.now())?
            .ok_or_else(|| missing(id))
    }

    /// `GET /v1/responses/{id}`.
    /// A background response that is still running is read from its job.
    pub fn get(&self, api_key: Option<&str>, id: &str) -> Result<Response, ApiError> {
        match self.stored_turn(api_key, id) {
            Ok(turn) => Ok(turn.response),
            Err(error) if error.status == 404 => self.running(api_key, id),
            Err(error) => Err(error),
        }
    }

    /// `DELETE /v1/responses/{id}`.
    /// A background response still running is stopped, and its worker
    /// removes what it stores after that.
    pub fn delete(&self, api_key: Option<&str>, id: &str) -> Result<Value, ApiError> {
        let tenant = self.tenant(api_key)?;
        let jobs = crate::store::background::Jobs::new(&self.kv, &tenant);
        let running = jobs
            .read_at(id, self.env.now())?
            .filter(|job| job.running());
        // A running one is marked first: its worker's save cannot slip in
        // between.
        let marked = match running {
            Some(_) => jobs.delete_running(id).map(|()| true)?,
            None => false,
        };
        let deleted = self.store(&tenant).delete(id, self.env.now())?;
        let job = marked || jobs.delete(id)?;
        if !deleted && !job {
            return Err(missing(id));
        }
        Ok(json!({"id": id, "object": "response.deleted", "deleted": true}))
    }

    /// `GET /v1/responses/{id}/input_items`.
    pub fn list_input_items(
        &self,
        api_key: Option<&str>,
        id: &str,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let input = match self.stored_turn(api_key, id) {
            Ok(turn) => turn.input,
            Err(error) if error.status == 404 => self.running_input(api_key, id)?,
            Err(error) => return Err(error),
        };
        list::page(input, query)
    }
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("Response with id '{id}' not found."))
}
