//! Usage per tenant: requests and tokens by model and day (UTC), kept with
//! atomic increments so that every instance and host adds to the same
//! totals, and the counts the per-tenant limits read.
//!
//! # Layout
//!
//! - `{tenant}/usage/{day}/{model}/requests`, `.../input`, `.../output`:
//!   the day's counts for one model (`day` is days since the epoch).
//! - `{tenant}/usage/{day}/tokens`: the day's tokens over every model, what
//!   a tokens-per-day limit reads.
//! - `_usage/{day}/len` and `_usage/{day}/{n}`: the day's index,
//!   `{tenant}\n{model}` filed by the first request of each pair, so an
//!   operator can list a day without a key scan.
//! - `{tenant}/rate/{minute}`: requests in one minute, for a
//!   requests-per-minute limit; a minute's key is removed by the first
//!   request of a later one, so each tenant keeps at most one.

use serde::Serialize;

use super::{counter, storage, Kv};
use crate::error::ApiError;

const DAY: i64 = 86_400;

/// One tenant's use of one model on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub tenant: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The usage counters of a store.
pub struct Usage<'a, K: Kv> {
    kv: &'a K,
}

/// Days since the epoch of `time`.
pub fn day_of(time: i64) -> i64 {
    time.div_euclid(DAY)
}

/// Seconds from `time` to the next midnight (UTC).
pub fn until_tomorrow(time: i64) -> i64 {
    (day_of(time) + 1) * DAY - time
}

impl<'a, K: Kv> Usage<'a, K> {
    pub fn new(kv: &'a K) -> Self {
        Usage { kv }
    }

    fn count_key(tenant: &str, day: i64, model: &str, what: &str) -> String {
        format!("{tenant}/usage/{day}/{model}/{what}")
    }

    fn tokens_key(tenant: &str, day: i64) -> String {
        format!("{tenant}/usage/{day}/tokens")
    }

    fn rate_key(tenant: &str, minute: i64) -> String {
        format!("{tenant}/rate/{minute}")
    }

    /// Adds one request of `model` with its tokens to `tenant`'s day.
    pub fn record(
        &self,
        tenant: &str,
        model: &str,
        now: i64,
        input: u64,
        output: u64,
    ) -> Result<(), ApiError> {
        let day = day_of(now);
        let add = |key: String, n: u64| {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.kv.increment(&key, n).map_err(storage)
        };
        if add(Self::count_key(tenant, day, model, "requests"), 1)? == 1 {
            let n = self
                .kv
                .increment(&format!("_usage/{day}/len"), 1)
                .map_err(storage)?;
            let entry = format!("{tenant}\n{model}").into_bytes();
            self.kv
                .set_many(vec![(format!("_usage/{day}/{n}"), entry)])
                .map_err(storage)?;
        }
        if input > 0 {
            add(Self::count_key(tenant, day, model, "input"), input)?;
        }
        if output > 0 {
            add(Self::count_key(tenant, day, model, "output"), output)?;
        }
        if input.saturating_add(output) > 0 {
            add(Self::tokens_key(tenant, day), input.saturating_add(output))?;
        }
        Ok(())
    }

    /// `tenant`'s tokens so far on the day of `now`.
    pub fn tokens_today(&self, tenant: &str, now: i64) -> Result<u64, ApiError> {
        let value = self
            .kv
            .get(&Self::tokens_key(tenant, day_of(now)))
            .map_err(storage)?;
        Ok(value.as_deref().and_then(counter).unwrap_or(0))
    }

    /// Counts a request of `tenant` in the minute of `now`; returns the
    /// minute's count so far.
    pub fn count_request(&self, tenant: &str, now: i64) -> Result<u64, ApiError> {
        let minute = now.div_euclid(60);
        let count = self
            .kv
            .increment(&Self::rate_key(tenant, minute), 1)
            .map_err(storage)?;
        if count == 1 {
            // The tenant's earlier minutes are over.
            let old = (1..=2).map(|back| Self::rate_key(tenant, minute - back));
            self.kv.delete_many(old.collect()).map_err(storage)?;
        }
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Every tenant's and model's use on `day`.
    pub fn day(&self, day: i64) -> Result<Vec<UsageRow>, ApiError> {
        let len = self.kv.get(&format!("_usage/{day}/len")).map_err(storage)?;
        let len = len.as_deref().and_then(counter).unwrap_or(0);
        let entries = self
            .kv
            .get_many((1..=len).map(|n| format!("_usage/{day}/{n}")).collect())
            .map_err(storage)?;
        let mut pairs: Vec<(String, String)> = entries
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let entry = String::from_utf8(entry).ok()?;
                let (tenant, model) = entry.split_once('\n')?;
                Some((tenant.to_owned(), model.to_owned()))
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        let keys = pairs
            .iter()
            .flat_map(|(tenant, model)| {
                ["requests", "input", "output"]
                    .map(|what| Self::count_key(tenant, day, model, what))
            })
            .collect();
        let counts = self.kv.get_many(keys).map_err(storage)?;
        let count = |i: usize| {
            counts
                .get(i)
                .and_then(Option::as_deref)
                .and_then(counter)
                .unwrap_or(0)
        };
        Ok(pairs
            .into_iter()
            .enumerate()
            .map(|(i, (tenant, model))| UsageRow {
                date: date(day),
                tenant,
                model,
                requests: count(3 * i),
                input_tokens: count(3 * i + 1),
                output_tokens: count(3 * i + 2),
            })
            .collect())
    }
}

/// `YYYY-MM-DD` of days since the epoch (the proleptic Gregorian calendar).
pub fn date(day: i64) -> String {
    // Howard Hinnant's days-to-civil.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(day_of(1_796_051_414)), "2026-11-30");
        assert_eq!(date(day_of(951_782_400)), "2000-02-29");
        assert_eq!(until_tomorrow(DAY * 5 + 10), DAY - 10);
    }

    #[test]
    fn records_lists_and_limits() {
        let kv = MemoryKv::default();
        let usage = Usage::new(&kv);
        let now = 1_796_051_414;
        usage.record("team-a", "m1", now, 10, 5).unwrap();
        usage.record("team-a", "m1", now, 1, 1).unwrap();
        usage.record("team-a", "m2", now, 0, 0).unwrap();
        usage.record("team-b", "m1", now, 7, 0).unwrap();
        usage.record("team-b", "m1", now + DAY, 100, 100).unwrap();
        let rows = usage.day(day_of(now)).unwrap();
        let summary: Vec<(&str, &str, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.tenant.as_str(),
                    r.model.as_str(),
                    r.requests,
                    r.input_tokens,
                    r.output_tokens,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("team-a", "m1", 2, 11, 6),
                ("team-a", "m2", 1, 0, 0),
                ("team-b", "m1", 1, 7, 0)
            ]
        );
        assert_eq!(usage.tokens_today("team-a", now).unwrap(), 17);
        assert_eq!(usage.tokens_today("team-b", now + DAY).unwrap(), 200);

        assert_eq!(usage.count_request("team-a", now).unwrap(), 1);
        assert_eq!(usage.count_request("team-a", now).unwrap(), 2);
        assert_eq!(usage.count_request("team-a", now + 60).unwrap(), 1);
        let rates = kv
            .values
            .borrow()
            .keys()
            .filter(|k| k.starts_with("team-a/rate/"))
            .count();
        assert_eq!(rates, 1, "an over minute's key is removed");
    }
}
