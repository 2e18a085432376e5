//! Object ids and timestamps.
//!
//! Ids carry OpenAI's prefixes (`resp_`, `msg_`, `fc_`, ...) followed by 192
//! random bits from the host's cryptographic source (`wasi:random`), so they
//! are unguessable: an id is all it takes to read a stored response.

/// A new id with `prefix`, e.g. `new_id("resp")` → `resp_3f9c…`.
pub fn new_id(prefix: &str) -> String {
    let bytes = random_bytes();
    let mut id = String::with_capacity(prefix.len() + 1 + bytes.len() * 2);
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(target_arch = "wasm32")]
fn random_bytes() -> Vec<u8> {
    wasi::random::random::get_random_bytes(24)
}

/// Native builds (unit tests only) draw from the standard library's
/// randomly seeded hasher: unique, not meant to be secret.
#[cfg(not(target_arch = "wasm32"))]
fn random_bytes() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    (0..3)
        .flat_map(|_| {
            let mut h = state.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            h.finish().to_le_bytes()
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_are_unique() {
        let a = new_id("resp");
        let b = new_id("resp");
        assert!(a.starts_with("resp_"));
        assert_eq!(a.len(), "resp_".len() + 48);
        assert_ne!(a, b);
    }
}
