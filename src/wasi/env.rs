//! The host's clock and its cryptographic random source, as the service's
//! [`Env`].

use std::rc::Rc;

use crate::ids::{Clock, Entropy, Env};

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

/// The environment of a request served by the host.
pub fn host_env() -> Env {
    Env::new(Rc::new(WallClock), Rc::new(HostRandom))
}
