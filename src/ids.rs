//! Time, waiting and fresh ids, as the service is given them.
//!
//! Ids carry OpenAI's prefixes (`resp_`, `msg_`, `fc_`, ...) followed by 192
//! bits from an [`Entropy`] source in hex. The component's source is the
//! host's cryptographic `wasi:random`, so ids are unguessable: an id is all
//! it takes to read a stored response. The clock and the entropy come in
//! through [`Env`], so the core touches neither the host nor the wall
//! clock, and tests fix both. So does the [`Timer`] that paces keep-alives:
//! without one, nothing ever waits for time to pass.

use std::rc::Rc;
use std::time::Duration;

use futures::future::LocalBoxFuture;

/// Seconds since the Unix epoch.
pub trait Clock {
    fn now(&self) -> i64;
}

/// Random bytes.
pub trait Entropy {
    fn fill(&self, bytes: &mut [u8]);
}

/// Waiting for time to pass.
pub trait Timer {
    /// A future that completes once `duration` has passed.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()>;
}

/// The timer of an environment that has none: its sleeps never end.
struct Never;

impl Timer for Never {
    fn sleep(&self, _duration: Duration) -> LocalBoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}

/// The clock, the entropy and the timer of one request; cheap to clone.
#[derive(Clone)]
pub struct Env {
    clock: Rc<dyn Clock>,
    entropy: Rc<dyn Entropy>,
    timer: Rc<dyn Timer>,
}

/// Random bytes in an id.
const ID_BYTES: usize = 24;

impl Env {
    /// An environment whose sleeps never end (see [`Env::with_timer`]).
    pub fn new(clock: Rc<dyn Clock>, entropy: Rc<dyn Entropy>) -> Self {
        Env {
            clock,
            entropy,
            timer: Rc::new(Never),
        }
    }

    /// The same environment, waiting on `timer`.
    pub fn with_timer(self, timer: Rc<dyn Timer>) -> Self {
        Env { timer, ..self }
    }

    /// The environment's timer.
    pub fn timer(&self) -> Rc<dyn Timer> {
        Rc::clone(&self.timer)
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A random number, for choices like which requests do upkeep.
    pub fn random_u32(&self) -> u32 {
        let mut bytes = [0u8; 4];
        self.entropy.fill(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    /// A new id with `prefix`, e.g. `new_id("resp")` → `resp_3f9c…`.
    pub fn new_id(&self, prefix: &str) -> String {
        let mut bytes = [0u8; ID_BYTES];
        self.entropy.fill(&mut bytes);
        let mut id = String::with_capacity(prefix.len() + 1 + ID_BYTES * 2);
        id.push_str(prefix);
        id.push('_');
        push_hex(&mut id, &bytes);
        id
    }
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// A fixed clock and counting entropy, for tests: every run makes the same
/// ids and timestamps.
#[cfg(test)]
pub mod fixed {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::{Clock, Entropy, Env};

    /// A clock that says what it is told.
    #[derive(Debug, Default)]
    pub struct FixedClock(pub Cell<i64>);

    impl Clock for FixedClock {
        fn now(&self) -> i64 {
            self.0.get()
        }
    }

    /// Entropy that counts: the n-th id ends in n.
    #[derive(Debug, Default)]
    pub struct Counter(Cell<u64>);

    impl Entropy for Counter {
        fn fill(&self, bytes: &mut [u8]) {
            self.0.set(self.0.get() + 1);
            bytes.fill(0);
            let n = self.0.get().to_be_bytes();
            let len = bytes.len();
            let at = len.saturating_sub(n.len());
            bytes[at..].copy_from_slice(&n[n.len() - (len - at)..]);
        }
    }

    /// An environment at `time` with counting ids, and its clock.
    pub fn env(time: i64) -> (Env, Rc<FixedClock>) {
        let clock = Rc::new(FixedClock(Cell::new(time)));
        let env = Env::new(clock.clone(), Rc::new(Counter::default()));
        (env, clock)
    }
}

/// Whether `id` may be used as a request id (`x-request-id`) as it is:
/// 1 to 128 characters of letters, digits, `.`, `_`, `:` and `-`, so that
/// it can go into headers and log lines unescaped.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id("req_0123abcd"));
        assert!(valid_request_id("a.b:c-d_e"));
        let long = "x".repeat(129);
        for bad in ["", "a b", "a\r\nb", "é", long.as_str()] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn ids_have_prefix_and_are_unique() {
        let (env, clock) = fixed::env(1_700_000_000);
        let a = env.new_id("resp");
        let b = env.new_id("resp");
        assert!(a.starts_with("resp_"));
        assert_eq!(a.len(), "resp_".len() + 48);
        assert!(a.ends_with("01") && b.ends_with("02"), "{a} {b}");
        assert_eq!(env.now(), 1_700_000_000);
        clock.0.set(5);
        assert_eq!(env.now(), 5);
        assert_eq!(hex(&[0, 0xab, 0x1f]), "00ab1f");
    }
}
