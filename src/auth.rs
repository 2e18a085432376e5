//! Who is calling: API key checks and the tenant their data is stored under.

use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::hex;

/// The tenant of an open service (no `api_keys` configured).
pub const OPEN_TENANT: &str = "open";

/// Checks `presented` against the configured keys and returns the caller's
/// tenant: a hash of their key, so stored data never contains a key.
pub fn tenant(settings: &Settings, presented: Option<&str>) -> Result<String, ApiError> {
    if settings.api_keys.is_empty() {
        return Ok(OPEN_TENANT.to_owned());
    }
    let Some(key) = presented.filter(|k| !k.is_empty()) else {
        return Err(ApiError::unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header as `Bearer <key>`.",
        ));
    };
    let digest = Sha256::digest(key.as_bytes());
    let known = settings
        .api_keys
        .iter()
        .any(|k| Sha256::digest(k.as_bytes()) == digest);
    if !known {
        return Err(ApiError::unauthorized("Incorrect API key provided."));
    }
    Ok(hex(&digest[..12]))
}

/// The key of an `Authorization: Bearer <key>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(keys: &[&str]) -> Settings {
        Settings {
            api_keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn open_service_has_one_tenant() {
        assert_eq!(tenant(&settings(&[]), None).unwrap(), OPEN_TENANT);
    }

    #[test]
    fn keys_are_checked_and_scoped() {
        let s = settings(&["k1", "k2"]);
        assert_eq!(tenant(&s, None).unwrap_err().status, 401);
        assert_eq!(tenant(&s, Some("nope")).unwrap_err().status, 401);
        let (a, b) = (
            tenant(&s, Some("k1")).unwrap(),
            tenant(&s, Some("k2")).unwrap(),
        );
        assert_ne!(a, b);
        assert!(!a.contains("k1"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
