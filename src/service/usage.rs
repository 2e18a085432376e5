//! Usage per tenant: what a create counts against its tenant's limits
//! before it runs, what it adds to the tenant's totals after its client
//! has the answer, and the operator's view of the totals.

use serde_json::{json, Value};

use super::Service;
use crate::api::response::Response;
use crate::auth;
use crate::backend::Backend;
use crate::error::ApiError;
use crate::store::usage::{day_of, until_tomorrow, Usage};
use crate::store::Kv;

/// Days `GET /v1/usage` reads at most.
const MAX_DAYS: i64 = 31;

impl<K: Kv, B: Backend> Service<K, B> {
    /// Counts a create of `tenant` against its limits: a 429 with
    /// `Retry-After` once it has made `tenant_requests_per_minute` this
    /// minute, or used `tenant_tokens_per_day` today. Free without limits.
    pub fn admit(&self, tenant: &str) -> Result<(), ApiError> {
        let usage = Usage::new(&self.kv);
        let now = self.env.now();
        if let Some(limit) = self.settings.tenant_tokens_per_day {
            if usage.tokens_today(tenant, now)? >= limit {
                return Err(ApiError::rate_limited(
                    "tokens",
                    format!(
                        "Rate limit reached: {limit} tokens per day. Try again tomorrow (UTC)."
                    ),
                    u64::try_from(until_tomorrow(now)).unwrap_or(1),
                ));
            }
        }
        if let Some(limit) = self.settings.tenant_requests_per_minute {
            if usage.count_request(tenant, now)? > limit {
                return Err(ApiError::rate_limited(
                    "requests",
                    format!("Rate limit reached: {limit} requests per minute."),
                    u64::try_from(60 - now.rem_euclid(60)).unwrap_or(1),
                ));
            }
        }
        Ok(())
    }

    /// Adds a finished create to its tenant's totals. Run after the client
    /// has its answer; a store that fails here costs the count, not the
    /// response.
    pub fn record_usage(&self, tenant: &str, response: &Response) {
        let settings = &self.settings;
        if !settings.usage_tracking && settings.tenant_tokens_per_day.is_none() {
            return;
        }
        let (input, output) = response
            .usage
            .as_ref()
            .map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
        let recorded =
            Usage::new(&self.kv).record(tenant, &response.model, self.env.now(), input, output);
        if let Err(error) = recorded {
            eprintln!(
                "edge-responses: usage of {}: {}",
                response.id, error.message
            );
        }
    }

    /// `GET /v1/usage?days=N` (admin key): each tenant's requests and
    /// tokens by model and day, for the last `N` days (1 to 31, default 1:
    /// today).
    pub fn usage(&self, admin_key: Option<&str>, days: Option<&str>) -> Result<Value, ApiError> {
        auth::admin(&self.settings, admin_key)?;
        let days = match days {
            None => 1,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|d| (1..=MAX_DAYS).contains(d))
                .ok_or_else(|| {
                    ApiError::invalid_param("days", format!("days must be 1 to {MAX_DAYS}."))
                })?,
        };
        let today = day_of(self.env.now());
        let usage = Usage::new(&self.kv);
        let mut data = Vec::new();
        for day in (today - days + 1)..=today {
            data.extend(usage.day(day)?);
        }
        Ok(json!({"object": "list", "data": data}))
    }
}
