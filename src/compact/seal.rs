//! The `encrypted_content` of a compaction item: the summary, sealed by
//! this server.
//!
//! OpenAI's blob is encrypted with keys only OpenAI has; this server cannot
//! make one, nor read one. Its own is
//!
//! ```text
//! erc1.<payload>.<tag>
//! payload = base64url(JSON [summary, model, created_at])
//! tag     = base64url(HMAC-SHA256(key, "erc1." + payload))
//! key     = HMAC-SHA256(tenant_secret, "edge-responses/compaction/v1:" + tenant id)
//! ```
//!
//! base64url without padding. The tag binds the summary to the tenant it
//! was made for: a changed character, a blob of another tenant, or one
//! made before `tenant_secret` changed fails the check. Without a
//! `tenant_secret` the key is derived from a fixed label instead, so the
//! check still catches damage and blobs from elsewhere, but anyone who
//! knows the format can seal a summary of their choosing. That gains a
//! client nothing it cannot do with a plain message (a summary is replayed
//! as a `user` message), so compaction works without a secret.
//!
//! The summary is sealed, not encrypted: it is text the model wrote from
//! the client's own conversation, and the client may read it.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// What starts every blob this server makes (edge-responses compaction,
/// version 1).
const PREFIX: &str = "erc1.";

/// The key's label when `tenant_secret` is unset.
const NO_SECRET: &[u8] = b"edge-responses compaction without tenant_secret";

/// What a blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub summary: String,
    /// The model that wrote it.
    pub model: String,
    /// When, in seconds since the epoch.
    pub created_at: i64,
}

/// Why a blob does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Not in this server's format (another server's blob, or garbage).
    Foreign,
    /// In the format, but the tag does not match: changed, or sealed for
    /// another tenant or with another `tenant_secret`.
    Tampered,
}

/// Seals and opens the blobs of one tenant.
pub struct Seal {
    key: [u8; 32],
}

impl Seal {
    /// The seal of `tenant` (the tenant id, see `crate::auth`), keyed by
    /// `secret` when there is one.
    pub fn new(secret: Option<&str>, tenant: &str) -> Seal {
        let secret = secret.map_or(NO_SECRET, str::as_bytes);
        let mut mac = hmac(secret);
        mac.update(b"edge-responses/compaction/v1:");
        mac.update(tenant.as_bytes());
        Seal {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The blob of `sealed`.
    pub fn seal(&self, sealed: &Sealed) -> String {
        let payload = (&sealed.summary, &sealed.model, sealed.created_at);
        // Strings and a number always serialize.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let mut blob = String::with_capacity(PREFIX.len() + json.len() * 4 / 3 + 48);
        blob.push_str(PREFIX);
        base64url_push(&mut blob, &json);
        let tag = self.tag(&blob);
        blob.push('.');
        base64url_push(&mut blob, &tag);
        blob
    }

    /// What `blob` holds, if this seal made it and it is unchanged.
    pub fn open(&self, blob: &str) -> Result<Sealed, Broken> {
        let (signed, payload, tag) = parts(blob).ok_or(Broken::Foreign)?;
        let tag = base64url_decode(tag).ok_or(Broken::Foreign)?;
        if tag.len() != 32 {
            return Err(Broken::Foreign);
        }
        let mut mac = hmac(&self.key);
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag).map_err(|_| Broken::Tampered)?;
        read_payload(payload).ok_or(Broken::Tampered)
    }

    fn tag(&self, signed: &str) -> [u8; 32] {
        let mut mac = hmac(&self.key);
        mac.update(signed.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The summary in `blob`, read without checking its tag: for replaying
/// items that were checked when they came in (and are stored as they
/// came). `None` for a blob not in this server's format.
pub fn summary_unchecked(blob: &str) -> Option<String> {
    let (_signed, payload, _tag) = parts(blob)?;
    read_payload(payload).map(|sealed| sealed.summary)
}

/// `(signed, payload, tag)` of a blob in this server's format: `signed` is
/// what the tag is computed over, the prefix and the payload.
fn parts(blob: &str) -> Option<(&str, &str, &str)> {
    let (payload, tag) = blob.strip_prefix(PREFIX)?.split_once('.')?;
    Some((&blob[..PREFIX.len() + payload.len()], payload, tag))
}

fn read_payload(payload: &str) -> Option<Sealed> {
    let fields: Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    Some(Sealed {
        summary: fields.get(0)?.as_str()?.to_owned(),
        model: fields[1].as_str().unwrap_or_default().to_owned(),
        created_at: fields[2].as_i64().unwrap_or_default(),
    })
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends `bytes` in base64url, without padding.
fn base64url_push(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
}

/// Decodes base64url without padding; `None` for anything else.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // The unused low bits of the last character are zero in a canonical
    // encoding: one text per byte string, so a changed character never
    // decodes to the same bytes.
    if acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> Sealed {
        Sealed {
            summary: "Goal: ship on Tuesday. ünïcödé".into(),
            model: "m".into(),
            created_at: 1_800_000_000,
        }
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut text = String::new();
            base64url_push(&mut text, &bytes);
            assert!(!text.contains('='));
            assert_eq!(base64url_decode(&text).unwrap(), bytes, "{len}");
        }
        let mut text = String::new();
        base64url_push(&mut text, b"\xfb\xff");
        assert_eq!(text, "-_8");
        assert_eq!(
            base64url_decode("-_9"),
            None,
            "non-canonical last character"
        );
        assert_eq!(base64url_decode("a+b="), None);
        assert_eq!(base64url_decode("abcde"), None);
    }

    #[test]
    fn a_blob_opens_only_unchanged_and_for_its_tenant() {
        let seal = Seal::new(Some("secret"), "tenant-a");
        let blob = seal.seal(&sealed());
        assert!(blob.starts_with(PREFIX));
        assert_eq!(seal.open(&blob), Ok(sealed()));
        assert_eq!(summary_unchecked(&blob), Some(sealed().summary));

        // Every one-character change is refused.
        for i in PREFIX.len()..blob.len() {
            let mut changed = blob.clone().into_bytes();
            changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).unwrap();
            if changed != blob {
                assert!(seal.open(&changed).is_err(), "change at {i}");
            }
        }
        assert_eq!(
            Seal::new(Some("secret"), "tenant-b").open(&blob),
            Err(Broken::Tampered)
        );
        assert_eq!(
            Seal::new(Some("other"), "tenant-a").open(&blob),
            Err(Broken::Tampered)
        );
        assert_eq!(
            Seal::new(None, "tenant-a").open(&blob),
            Err(Broken::Tampered)
        );
        let unkeyed = Seal::new(None, "open");
        assert_eq!(unkeyed.open(&unkeyed.seal(&sealed())), Ok(sealed()));
    }

    #[test]
    fn foreign_blobs_are_told_apart() {
        let seal = Seal::new(None, "open");
        for foreign in [
            "",
            "gAAAAABpM0Yj-abc=",
            "erc1.",
            "erc1.abc",
            "erc1.a.b.c",
            "erc2.e30.AAAA",
        ] {
            assert_eq!(seal.open(foreign), Err(Broken::Foreign), "{foreign}");
            assert_eq!(summary_unchecked(foreign), None, "{foreign}");
        }
    }
}
