//! Percentiles of measured durations.

use std::time::Duration;

/// p50 and p99 of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub count: usize,
}

impl Percentiles {
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Percentiles {
        let mut sorted: Vec<Duration> = samples.into_iter().collect();
        sorted.sort_unstable();
        Percentiles {
            p50: millis(nearest_rank(&sorted, 50.0)),
            p99: millis(nearest_rank(&sorted, 99.0)),
            count: sorted.len(),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "p50_ms": self.p50, "p99_ms": self.p99, "samples": self.count })
    }
}

/// The nearest-rank percentile `p` (0-100) of `samples`, in milliseconds;
/// zero when there are none.
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    millis(nearest_rank(&sorted, p))
}

/// The nearest-rank percentile `p` (0-100) of sorted samples; zero when
/// there are none.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples = (1..=100).map(Duration::from_millis);
        let p = Percentiles::of(samples);
        assert_eq!((p.p50, p.p99, p.count), (50.0, 99.0, 100));
        let one = Percentiles::of([Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(Percentiles::of([]).p50, 0.0);
        let unsorted: Vec<_> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&unsorted, 90.0), 9.0);
        assert_eq!(percentile_ms(&[], 90.0), 0.0);
    }
}
