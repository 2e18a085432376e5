//! Request ids: every request carries one in `x-request-id`, the client's
//! when it sent a valid one, else one made here. The component reads it from
//! its request (and sends it on to backends), the client gets it back in the
//! response, and the request log line carries it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// The header that carries the id, both ways.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept from a client.
const MAX_LEN: usize = 128;

/// Whether `id` may be used as it is: 1 to 128 characters of letters,
/// digits, `.`, `_`, `:` and `-`, so it goes into headers and log lines
/// without escaping. The component applies the same rule.
pub(crate) fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// The id of a request with these `x-request-id` values: the first one when
/// it is valid, else a new one.
pub(crate) fn for_request<'a>(mut sent: impl Iterator<Item = &'a HeaderValue>) -> String {
    match sent.next() {
        Some(value) if is_valid(value.as_bytes()) => {
            // Valid ids are ASCII.
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        }
        _ => generate(),
    }
}

/// A new id: `req_` and 24 hex digits, 96 bits from the operating system's
/// random source (one `getrandom` call, well under a microsecond).
pub(crate) fn generate() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = fallback_bytes();
    }
    let mut id = String::with_capacity(4 + 2 * bytes.len());
    id.push_str("req_");
    for byte in bytes {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Where the system has no random source to offer: a process-wide counter
/// mixed with the time and the process id. Unique within the process, and
/// across processes unless two start in the same nanosecond with one pid.
fn fallback_bytes() -> [u8; 12] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut hasher = Sha256::new();
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 12];
    bytes.copy_from_slice(&digest[..12]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(values: &[&str]) -> String {
        let values: Vec<HeaderValue> = values
            .iter()
            .map(|v| HeaderValue::from_str(v).expect("header value"))
            .collect();
        for_request(values.iter())
    }

    fn is_generated(id: &str) -> bool {
        id.len() == 28
            && id.starts_with("req_")
            && id[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn a_valid_id_is_kept() {
        assert_eq!(id_for(&["client-7.a:b_c"]), "client-7.a:b_c");
        let longest = "x".repeat(128);
        assert_eq!(id_for(&[&longest]), longest);
        // The first of several.
        assert_eq!(id_for(&["first", "second"]), "first");
    }

    #[test]
    fn an_invalid_or_missing_id_is_replaced() {
        let too_long = "x".repeat(129);
        for bad in ["", "a b", "a/b", "é", "a\tb", too_long.as_str()] {
            let id = id_for(&[bad]);
            assert!(is_generated(&id), "{bad:?} gave {id}");
        }
        assert!(is_generated(&id_for(&[])));
        // An invalid first value is not rescued by a valid second one.
        assert!(is_generated(&id_for(&["bad value", "good"])));
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid(id.as_bytes())));
        let fallback: std::collections::HashSet<[u8; 12]> =
            (0..1000).map(|_| fallback_bytes()).collect();
        assert_eq!(fallback.len(), 1000);
    }
}
