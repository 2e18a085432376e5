//! [`Kv`] on `wasi:keyvalue` store, batch and atomics (the `default` bucket).
//!
//! Spin 4.0.2's Redis store implements `get-many` with `KEYS` instead of
//! `MGET`: with one key the host panics and the request dies with an empty
//! 500, with more Redis rejects the command. So one key is always a plain
//! `get`, and a `get-many` that fails is retried as single `get`s (correct,
//! slower).

use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

use crate::error::ApiError;
use crate::store::{Kv, KvError};

/// The host's default key-value bucket.
pub struct WasiKv {
    bucket: store::Bucket,
}

impl WasiKv {
    pub fn open() -> Result<Self, ApiError> {
        let bucket = store::open("default").map_err(|e| {
            ApiError::server(format!(
                "Opening the key-value store failed: {}",
                describe(&e)
            ))
        })?;
        Ok(Self { bucket })
    }
}

fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => {
            "no such store (is `key_value_stores = [\"default\"]` set?)".into()
        }
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(message) => message.clone(),
    }
}

fn err(e: store::Error) -> KvError {
    KvError(describe(&e))
}

impl Kv for WasiKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket.get(key).map_err(err)
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        match keys.as_slice() {
            [] => return Ok(Vec::new()),
            [key] => return Ok(vec![self.get(key)?]),
            _ => {}
        }
        // Hosts may return pairs in any order and may omit missing keys.
        let pairs = match batch::get_many(&self.bucket, &keys) {
            Ok(pairs) => pairs,
            Err(_) => return keys.iter().map(|key| self.get(key)).collect(),
        };
        let mut found: std::collections::HashMap<String, Vec<u8>> = pairs
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key, v)))
            .collect();
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        batch::set_many(&self.bucket, &entries).map_err(err)
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        batch::delete_many(&self.bucket, &keys).map_err(err)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.bucket, key, delta).map_err(err)
    }
}
