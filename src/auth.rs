//! Who is calling: API key checks and the tenant their data is stored under.
//!
//! `api_keys` lists the keys clients may present, separated by commas,
//! spaces or newlines. Each entry is either
//!
//! - `name:key`: a key of the tenant `name`. Several keys may share a name,
//!   and then they share its data, so a key is rotated by listing the new
//!   one under the same name, deploying, then removing the old one; or
//! - a bare `key`: a tenant of its own, named after the key itself, whose
//!   data is lost when the key is replaced.
//!
//! The tenant id that prefixes every stored key is derived, never stored or
//! configured (see [`tenant`]): with `tenant_secret` set it is an HMAC keyed
//! by that secret, so someone who can read the store can neither test
//! guessed keys nor guessed names against it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::config::Settings;
use crate::error::ApiError;
use crate::ids::hex;

/// The tenant of an open service (no `api_keys` configured).
pub const OPEN_TENANT: &str = "open";

/// The longest tenant name `api_keys` accepts.
pub const MAX_TENANT_NAME: usize = 64;

/// One entry of `api_keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The tenant the key belongs to; `None` for a bare key, which is a
    /// tenant of its own.
    pub tenant: Option<String>,
    /// What the client presents as `Authorization: Bearer <key>`.
    pub key: String,
}

/// Never prints the key: settings may end up in a log.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("tenant", &self.tenant)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    /// A bare key: a tenant of its own.
    pub fn bare(key: impl Into<String>) -> Self {
        ApiKey {
            tenant: None,
            key: key.into(),
        }
    }

    /// A key of the tenant `name`.
    pub fn named(name: impl Into<String>, key: impl Into<String>) -> Self {
        ApiKey {
            tenant: Some(name.into()),
            key: key.into(),
        }
    }

    /// Reads one entry of `api_keys` (`position` counts from 1, for errors).
    ///
    /// The first `:` ends the tenant name, which must be 1 to
    /// [`MAX_TENANT_NAME`] ASCII letters, digits, `.`, `_` or `-`; the key
    /// after it may contain further `:`. An entry without `:` is a bare key.
    /// A bare key that contains `:` is written with a leading `:` (an empty
    /// name): `:abc:def` is the key `abc:def`. The rule is strict rather
    /// than guessing from the shape of the prefix, so a mistyped name is a
    /// configuration error instead of silently becoming a key of its own
    /// tenant. OpenAI-style keys (`sk-...`) contain no `:` and need neither.
    ///
    /// Errors name the entry by position and never repeat its text, as part
    /// of it may be a key and configuration errors reach clients.
    fn parse(entry: &str, position: usize) -> Result<Self, ApiError> {
        let invalid = |why: &str| {
            ApiError::server(format!(
                "The `api_keys` setting is not valid: entry {position} {why}."
            ))
        };
        let Some((name, key)) = entry.split_once(':') else {
            return Ok(ApiKey::bare(entry));
        };
        if key.is_empty() {
            return Err(invalid("has no key after its `:` (expected `name:key`)"));
        }
        if name.is_empty() {
            return Ok(ApiKey::bare(key));
        }
        if !valid_name(name) {
            return Err(invalid(&format!(
                "has a tenant name that is not 1 to {MAX_TENANT_NAME} letters, digits, `.`, `_` or `-` \
                 (expected `name:key`; write a key that contains `:` with a leading `:`)"
            )));
        }
        Ok(ApiKey::named(name, key))
    }

    /// What the tenant id is derived from: the name, or else the key.
    /// The prefixes keep a name from ever deriving the id of a key.
    fn label(&self) -> String {
        match &self.tenant {
            Some(name) => format!("name:{name}"),
            None => format!("key:{}", self.key),
        }
    }

    /// The id this key's data is stored under.
    ///
    /// - With `secret`: hex of the first 16 bytes of
    ///   HMAC-SHA256(secret, `name:<name>` or `key:<key>`).
    /// - Without, a named key: hex of the first 16 bytes of
    ///   SHA-256(`name:<name>`); a name is not a secret.
    /// - Without, a bare key: hex of the first 12 bytes of SHA-256(key),
    ///   as before named keys and `tenant_secret` existed, so a deployment
    ///   that sets no secret keeps its data. Setting `tenant_secret` moves
    ///   bare keys to new ids: their earlier data is no longer reachable.
    fn tenant_id(&self, secret: Option<&str>) -> Result<String, ApiError> {
        match (secret, &self.tenant) {
            (Some(secret), _) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| {
                    ApiError::server("The `tenant_secret` setting cannot key an HMAC.")
                })?;
                mac.update(self.label().as_bytes());
                Ok(hex(&mac.finalize().into_bytes()[..16]))
            }
            (None, Some(_)) => Ok(hex(&Sha256::digest(self.label().as_bytes())[..16])),
            (None, None) => Ok(hex(&Sha256::digest(self.key.as_bytes())[..12])),
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_TENANT_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses the `api_keys` setting (see [`ApiKey::parse`] for an entry).
/// One key listed under two different tenants is an error, as it could
/// only reach one of them.
pub fn parse_api_keys(value: &str) -> Result<Vec<ApiKey>, ApiError> {
    let keys = value
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| ApiKey::parse(entry, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in keys.iter().enumerate() {
        if let Some(j) = keys[..i]
            .iter()
            .position(|b| b.key == a.key && b.tenant != a.tenant)
        {
            return Err(ApiError::server(format!(
                "The `api_keys` setting is not valid: entries {} and {} give the same key to different tenants.",
                j + 1,
                i + 1
            )));
        }
    }
    Ok(keys)
}

/// The configured key equal to `presented`, if any, found in time that does
/// not depend on where `presented` first differs from a key, nor on which
/// key matched: SHA-256 digests are compared in constant time, and every
/// key is compared.
fn find_key<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let digest = Sha256::digest(presented.as_bytes());
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, entry) in keys.iter().enumerate() {
        let matches = Sha256::digest(entry.key.as_bytes())
            .as_slice()
            .ct_eq(digest.as_slice());
        index.conditional_assign(&(i as u64), matches);
        found |= matches;
    }
    if bool::from(found) {
        keys.get(usize::try_from(index).ok()?)
    } else {
        None
    }
}

/// Checks `presented` against the configured keys and returns the caller's
/// tenant, an id derived from their key's tenant name (or, for a bare key,
/// from the key), so stored data never contains a key.
pub fn tenant(settings: &Settings, presented: Option<&str>) -> Result<String, ApiError> {
    if settings.api_keys.is_empty() {
        return Ok(OPEN_TENANT.to_owned());
    }
    let Some(key) = presented.filter(|k| !k.is_empty()) else {
        return Err(ApiError::unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header as `Bearer <key>`.",
        ));
    };
    let Some(entry) = find_key(&settings.api_keys, key) else {
        return Err(ApiError::unauthorized("Incorrect API key provided."));
    };
    entry.tenant_id(settings.tenant_secret.as_deref())
}

/// Checks `presented` against `admin_key`, in constant time. Without an
/// `admin_key` the admin routes do not exist (404).
pub fn admin(settings: &Settings, presented: Option<&str>) -> Result<(), ApiError> {
    let Some(admin_key) = settings.admin_key.as_deref() else {
        return Err(ApiError::not_found(
            "The admin API is off: it needs the `admin_key` setting.",
        ));
    };
    let presented = Sha256::digest(presented.unwrap_or_default().as_bytes());
    let expected = Sha256::digest(admin_key.as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        return Ok(());
    }
    Err(ApiError::unauthorized("Incorrect admin key provided."))
}

/// The key of an `Authorization: Bearer <key>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(keys: &str, secret: Option<&str>) -> Settings {
        Settings {
            api_keys: parse_api_keys(keys).unwrap(),
            tenant_secret: secret.map(str::to_owned),
            ..Settings::default()
        }
    }

    #[test]
    fn open_service_has_one_tenant() {
        assert_eq!(tenant(&settings("", None), None).unwrap(), OPEN_TENANT);
        assert_eq!(
            tenant(&settings("", Some("s")), Some("any")).unwrap(),
            OPEN_TENANT
        );
    }

    #[test]
    fn keys_are_checked_and_scoped() {
        let s = settings("k1,k2", None);
        assert_eq!(tenant(&s, None).unwrap_err().status, 401);
        assert_eq!(tenant(&s, Some("")).unwrap_err().status, 401);
        assert_eq!(tenant(&s, Some("nope")).unwrap_err().status, 401);
        assert_eq!(tenant(&s, Some("k")).unwrap_err().status, 401);
        assert_eq!(tenant(&s, Some("k12")).unwrap_err().status, 401);
        let (a, b) = (
            tenant(&s, Some("k1")).unwrap(),
            tenant(&s, Some("k2")).unwrap(),
        );
        assert_ne!(a, b);
        assert!(!a.contains("k1"));
    }

    #[test]
    fn bare_keys_without_a_secret_keep_the_legacy_tenant() {
        // hex(SHA-256(key)[..12]), computed by the code before named keys.
        let s = settings("sk-legacy-0123456789", None);
        assert_eq!(
            tenant(&s, Some("sk-legacy-0123456789")).unwrap(),
            "598e0ba3a6a185707a369590"
        );
    }

    #[test]
    fn named_keys_share_a_tenant() {
        for secret in [None, Some("s3cret")] {
            let s = settings("team-a:k1, team-a:k2 team-b:k3", secret);
            let a1 = tenant(&s, Some("k1")).unwrap();
            assert_eq!(a1, tenant(&s, Some("k2")).unwrap());
            assert_ne!(a1, tenant(&s, Some("k3")).unwrap());
            assert_eq!(a1.len(), 32);
            assert!(!a1.contains("team-a"));
            // The name, not the key, decides: another key of team-a, in
            // another configuration, reaches the same data.
            assert_eq!(
                a1,
                tenant(&settings("team-a:k9", secret), Some("k9")).unwrap()
            );
            // The entry is `name:key`: the whole entry is not a key.
            assert_eq!(tenant(&s, Some("team-a:k1")).unwrap_err().status, 401);
        }
    }

    #[test]
    fn the_secret_decides_the_tenant() {
        let keys = "team-a:k1,bare";
        let ids = |secret| {
            let s = settings(keys, secret);
            (
                tenant(&s, Some("k1")).unwrap(),
                tenant(&s, Some("bare")).unwrap(),
            )
        };
        let (plain, one, other) = (ids(None), ids(Some("s3cret")), ids(Some("other")));
        assert_ne!(plain.0, one.0);
        assert_ne!(plain.1, one.1);
        assert_ne!(one.0, other.0);
        assert_ne!(one.1, other.1);
        assert_eq!(one, ids(Some("s3cret")));
        assert_eq!(one.1.len(), 32);
        // HMAC-SHA256(secret, label), first 16 bytes; a name and a key
        // spelled alike derive different ids.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"name:team-a");
        assert_eq!(one.0, hex(&mac.finalize().into_bytes()[..16]));
        assert_eq!(
            hex(&Sha256::digest(b"name:team-a")[..16]),
            plain.0,
            "without a secret, a named key is SHA-256 of its label"
        );
        let twin = settings("x:y,x", Some("s3cret"));
        assert_ne!(
            tenant(&twin, Some("y")).unwrap(),
            tenant(&twin, Some("x")).unwrap()
        );
    }

    #[test]
    fn entries_and_their_errors() {
        let keys = parse_api_keys(" team-a:k1,team_a.2:k:2 ,:x:y, plain\nteam-a:k1").unwrap();
        assert_eq!(
            keys,
            [
                ApiKey::named("team-a", "k1"),
                ApiKey::named("team_a.2", "k:2"),
                ApiKey::bare("x:y"),
                ApiKey::bare("plain"),
                ApiKey::named("team-a", "k1"),
            ]
        );
        let long = format!("{}:k", "n".repeat(MAX_TENANT_NAME));
        assert!(parse_api_keys(&long).is_ok());
        for bad in [
            "team-a:",
            ":",
            "ok:k,tëam:k",
            "a/b:k",
            &format!("{}:k", "n".repeat(MAX_TENANT_NAME + 1)),
            "team-a:k1,team-b:k1",
            "k1,team-b:k1",
        ] {
            let error = parse_api_keys(bad).unwrap_err();
            assert_eq!(error.status, 500, "{bad}");
            assert!(error.message.contains("api_keys"), "{bad}");
            assert!(!error.message.contains("k1"), "{bad}: {}", error.message);
        }
        let error = parse_api_keys("ok:k,a/b:secret-part").unwrap_err();
        assert!(error.message.contains("entry 2"), "{}", error.message);
        assert!(!error.message.contains("a/b"), "{}", error.message);
        assert!(!format!("{keys:?}").contains("k1"));
        // Through the settings, like every other bad setting.
        let pairs = [("backend_url", "http://x"), ("api_keys", "ok:k,a/b:k")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(Settings::from_pairs(pairs).unwrap_err().status, 500);
    }

    #[test]
    fn every_key_is_compared() {
        let keys = parse_api_keys("a:k1,b:k2,c:k3").unwrap();
        assert_eq!(find_key(&keys, "k3"), Some(&keys[2]));
        assert_eq!(find_key(&keys, "k1"), Some(&keys[0]));
        assert_eq!(find_key(&keys, "k4"), None);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
