//! Admission control: how many component instances may live at once, and
//! what happens to a request that finds none free.
//!
//! Owns the sizing rule (a memory budget divided by what one instance
//! reserves, clamped to what the address space and the kernel's mapping
//! limit allow), the wait for a free instance (bounded by a queue timeout,
//! after which the request is turned away as overloaded), and parsing the
//! two settings (`--max-memory`, `--queue-timeout`).
//!
//! The instance pool itself (wasmtime's pooling allocator) is sized from the
//! same count in `engine`, and the outbound connection pool in `outbound`
//! keeps as many idle connections per backend as there can be instances.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory the host sets aside for each live instance, which is what an
/// instance streaming a response was measured to add to the host's
/// resident memory (see `host/README.md`, "Capacity"): the pages of linear
/// memory it touches (the component declares 4 MiB, of which a request
/// writes a few hundred KiB), its native stack, and the host state and
/// connection buffers of its request and of its backend call.
pub const INSTANCE_MEMORY: u64 = 384 << 10;

/// The default memory budget: 2 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 2 << 30;

/// How long a request waits for a free instance by default.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a shutdown looks whether instances are still alive.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How long a shutdown waits, by default, for instances still running
/// (background responses) once connections are closed.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Fewest instances, however small the budget.
const MIN_INSTANCES: u32 = 1;

/// Most instances, however large the budget: every live instance holds a
/// few memory mappings (see [`MAPPINGS_PER_INSTANCE`]), and each pooled
/// linear memory reserves 4 GiB of address space.
pub(crate) const MAX_INSTANCES: u32 = 16_384;

/// Memory mappings (`/proc/PID/maps` lines) one pooled instance holds at
/// most while it runs or after it ran: its stack and guard page, its linear
/// memory (copy-on-write image, zeroed heap, inaccessible rest) and its
/// tables, with margin.
const MAPPINGS_PER_INSTANCE: u64 = 8;

/// Mappings left for everything else in the process.
const MAPPINGS_RESERVED: u64 = 8_192;

/// How many instances may live at once within `max_memory` bytes.
pub fn instance_limit(max_memory: u64) -> u32 {
    let by_memory = u32::try_from(max_memory / INSTANCE_MEMORY).unwrap_or(u32::MAX);
    let by_mappings = max_map_count()
        .map(|count| count.saturating_sub(MAPPINGS_RESERVED) / MAPPINGS_PER_INSTANCE)
        .map_or(u32::MAX, |count| u32::try_from(count).unwrap_or(u32::MAX));
    by_memory
        .min(by_mappings)
        .clamp(MIN_INSTANCES, MAX_INSTANCES)
}

/// The kernel's limit on memory mappings per process, where it says.
fn max_map_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    text.trim().parse().ok()
}

/// A request that waited its full queue timeout without finding a free
/// instance. `retry_after` is what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    pub retry_after: Duration,
}

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every instance is busy")
    }
}

impl std::error::Error for Overloaded {}

/// The gate in front of one instance pool: at most as many permits as the
/// pool has instances, each held for an instance's lifetime.
///
/// The pool may be shared with other servers in the process (see
/// `engine`); the gauges count this server's instances and waiters only.
#[derive(Clone)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    gauges: Gauges,
}

/// How many instances are alive, and how many requests wait for one.
#[derive(Clone)]
pub(crate) struct Gauges {
    pub(crate) in_use: IntGauge,
    pub(crate) waiting: IntGauge,
}

/// The right to run one instance: a permit from the pool, counted in the
/// `in_use` gauge until it is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, in_use: &IntGauge) -> Self {
        in_use.inc();
        Slot {
            _permit: permit,
            in_use: in_use.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// Counts one waiting request in a gauge for as long as it lives, however
/// the wait ends (admitted, timed out, or the client gone).
struct Waiting(IntGauge);

impl Waiting {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Admission {
    pub(crate) fn new(slots: Arc<Semaphore>, queue_timeout: Duration, gauges: Gauges) -> Self {
        Self {
            slots,
            queue_timeout,
            gauges,
        }
    }

    /// Waits up to the queue timeout for a free instance; hold the slot
    /// while the instance lives.
    pub(crate) async fn admit(&self) -> Result<Slot, Overloaded> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot::new(permit, &self.gauges.in_use));
        }
        let _waiting = Waiting::new(&self.gauges.waiting);
        let waiting = self.slots.clone().acquire_owned();
        match tokio::time::timeout(self.queue_timeout, waiting).await {
            Ok(Ok(permit)) => Ok(Slot::new(permit, &self.gauges.in_use)),
            // The semaphore is never closed; a closed one admits nobody.
            Ok(Err(_)) | Err(_) => Err(Overloaded {
                retry_after: self.retry_after(),
            }),
        }
    }

    /// Waits up to `timeout` until none of this server's instances is
    /// alive (background responses run on after their answer); the number
    /// still alive then.
    pub(crate) async fn drain(&self, timeout: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let alive = self.gauges.in_use.get();
            if alive <= 0 || tokio::time::Instant::now() >= deadline {
                return alive.max(0);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// The wait suggested to a turned-away client: about as long as it
    /// queued, between 1 and 30 seconds.
    fn retry_after(&self) -> Duration {
        let secs = self.queue_timeout.as_secs_f64().ceil();
        Duration::from_secs_f64(secs.clamp(1.0, 30.0))
    }
}

/// Splits `10.5GiB` into `10.5` and `GiB` (the unit trimmed, maybe empty);
/// `None` when the number does not parse.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses a byte size: a number with an optional unit `B`, `K`, `M`, `G`
/// or `T`, powers of 1024, the unit written with or without `i` and `B`
/// (`2GiB`, `2G`, `2gb`, `512MiB`, `1.5G`, `1073741824`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("expected a size such as 2GiB or 512MiB, got {text:?}"))?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("unknown size unit in {text:?} (use K, M, G or T)")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("size out of range: {text:?}"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number with an optional unit `ms`, `s` (the
/// default) or `m` (`10`, `10s`, `500ms`, `1.5s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = number_and_unit(text)
        .ok_or_else(|| format!("expected a duration such as 10s or 500ms, got {text:?}"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        _ => {
            return Err(format!(
                "unknown duration unit in {text:?} (use ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration out of range: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2 gb"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "G", "2X", "-1G", "0", "1e999"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_default_to_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10h", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_budget_divides_into_instances_within_bounds() {
        assert_eq!(instance_limit(2 * INSTANCE_MEMORY), 2);
        assert_eq!(instance_limit(0), MIN_INSTANCES);
        assert!(instance_limit(u64::MAX) <= MAX_INSTANCES);
        let default = instance_limit(DEFAULT_MAX_MEMORY);
        assert!(
            default >= 5_000,
            "the default budget holds {default} instances"
        );
    }

    fn gauges() -> Gauges {
        Gauges {
            in_use: IntGauge::new("in_use", "in use").expect("gauge"),
            waiting: IntGauge::new("waiting", "waiting").expect("gauge"),
        }
    }

    fn admission(slots: usize, queue_timeout: Duration) -> (Admission, Gauges) {
        let gauges = gauges();
        let slots = Arc::new(Semaphore::new(slots));
        (Admission::new(slots, queue_timeout, gauges.clone()), gauges)
    }

    #[tokio::test]
    async fn a_full_pool_turns_requests_away_after_the_queue_timeout() {
        let (admission, gauges) = admission(1, Duration::from_millis(50));
        let held = admission.admit().await.expect("a free slot");
        assert_eq!(gauges.in_use.get(), 1);
        let turned_away = admission.admit().await.expect_err("no free slot");
        assert_eq!(turned_away.retry_after, Duration::from_secs(1));
        assert_eq!((gauges.in_use.get(), gauges.waiting.get()), (1, 0));
        drop(held);
        assert_eq!(gauges.in_use.get(), 0);
        assert!(admission.admit().await.is_ok());
        assert_eq!(gauges.in_use.get(), 0);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_next_free_slot() {
        let (admission, gauges) = admission(1, Duration::from_secs(10));
        let held = admission.admit().await.expect("a free slot");
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        for _ in 0..500 {
            if gauges.waiting.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(gauges.waiting.get(), 1);
        drop(held);
        let slot = waiting.await.expect("task").expect("the freed slot");
        assert_eq!((gauges.in_use.get(), gauges.waiting.get()), (1, 0));
        drop(slot);
        assert_eq!(gauges.in_use.get(), 0);
    }
}
