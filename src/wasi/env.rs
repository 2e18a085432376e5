//! The host's clocks and its cryptographic random source, as the service's
//! [`Env`].

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use spin_executor::CancelOnDropToken;
use wasi::clocks::monotonic_clock;

use crate::ids::{Clock, Entropy, Env, Timer};

/// The wall clock (`wasi:clocks/wall-clock` under the standard library).
struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// `wasi:random/random`, the host's cryptographic source.
struct HostRandom;

impl Entropy for HostRandom {
    fn fill(&self, bytes: &mut [u8]) {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let random = wasi::random::random::get_random_bytes(len);
        for (byte, random) in bytes.iter_mut().zip(random) {
            *byte = random;
        }
    }
}

/// Sleeps on `wasi:clocks/monotonic-clock`.
struct MonotonicTimer;

impl Timer for MonotonicTimer {
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Box::pin(Sleep {
            until: monotonic_clock::now().saturating_add(nanos),
            waiting: None,
        })
    }
}

/// Completes at the instant `until`. While pending it keeps exactly one
/// registration with the executor: each poll replaces the last, and
/// dropping the future withdraws it, so an abandoned sleep neither wakes
/// the request nor piles up in the executor's poll list.
struct Sleep {
    until: monotonic_clock::Instant,
    waiting: Option<CancelOnDropToken>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.until {
            self.waiting = None;
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.until);
        let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
        self.waiting = Some(token.into());
        Poll::Pending
    }
}

/// The environment of a request served by the host.
pub fn host_env() -> Env {
    Env::new(Rc::new(WallClock), Rc::new(HostRandom)).with_timer(Rc::new(MonotonicTimer))
}
