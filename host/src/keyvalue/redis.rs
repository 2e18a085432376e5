//! A Redis (or Valkey) database behind `wasi:keyvalue`.
//!
//! Owns the connection and every command the key-value interfaces send.
//! The layout is that of Spin's Redis store: one database is one store (the
//! `default` label), keys are stored as they are, values as plain strings of
//! bytes, and counters as the decimal text `INCRBY` keeps. A database written
//! by `spin up` and one written by this host are interchangeable, and any
//! number of hosts can serve from one database at once.
//!
//! Each batch is one command, and so applied at once (`MGET`, `MSET`,
//! `DEL key...`); compare-and-swap is one Lua script, which Redis runs
//! without interleaving other clients' commands. The calls of every
//! instance share one multiplexed connection that pipelines them and
//! reconnects by itself; every call is bounded by a response timeout.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, RedisError, Script, Value};

use super::store::{KeyPage, StoreError, StoreResult, SwapOutcome};

/// Longest wait for a connection to the server, at startup and on reconnects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the answer to one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnection attempts after the connection drops, with backoff between
/// them; a call made meanwhile fails instead of waiting.
const RECONNECT_ATTEMPTS: usize = 4;

/// `SCAN` calls one `list-keys` page makes at most while they find no keys;
/// an empty page with a cursor is valid, and the caller asks again.
const SCAN_ROUNDS: usize = 16;

/// Compare-and-swap: `KEYS[1]` becomes `ARGV[3]` if it holds `ARGV[2]`
/// (when `ARGV[1]` is `1`) or is missing (when `ARGV[1]` is `0`). Returns
/// `1` when swapped, else `{0}` (missing now) or `{0, current value}`.
const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local unchanged
if ARGV[1] == '1' then
  unchanged = current == ARGV[2]
else
  unchanged = current == false
end
if unchanged then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
if current == false then
  return {0}
end
return {0, current}
";

/// A Redis database holding one key-value store.
pub struct RedisStore {
    conn: ConnectionManager,
    swap: Script,
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://HOST:PORT[/DB]`) and checks
    /// that it answers.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let client = Client::open(url).map_err(redis_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let connecting = ConnectionManager::new_with_config(client, config);
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| StoreError("redis: timed out connecting".to_owned()))?
            .map_err(redis_error)?;
        let store = Self {
            conn,
            swap: Script::new(SWAP_SCRIPT),
        };
        store.query(&::redis::cmd("PING")).await?;
        Ok(store)
    }

    /// The value of `key`, if set.
    pub async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        bytes(self.query(::redis::cmd("GET").arg(key)).await?)
    }

    /// Sets `key` to `value`.
    pub async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.query(::redis::cmd("SET").arg(key).arg(value)).await?;
        Ok(())
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, key: &str) -> StoreResult<()> {
        self.query(::redis::cmd("DEL").arg(key)).await?;
        Ok(())
    }

    /// Whether `key` is set.
    pub async fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(integer(self.query(::redis::cmd("EXISTS").arg(key)).await?)? > 0)
    }

    /// A page of keys by `SCAN` from `cursor` (a previous page's), asking for
    /// about `limit`. As with any `SCAN`, a key written or removed while the
    /// pages are read may be listed or not, and a key may come twice.
    pub async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> StoreResult<KeyPage> {
        let mut cursor = match cursor {
            None => 0,
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| StoreError(format!("invalid list-keys cursor {text:?}")))?,
        };
        let mut keys = Vec::new();
        for _ in 0..SCAN_ROUNDS {
            let mut scan = ::redis::cmd("SCAN");
            scan.arg(cursor).arg("COUNT").arg(limit.max(1));
            let (next, found) = scan_page(self.query(&scan).await?)?;
            cursor = next;
            keys.extend(found);
            if !keys.is_empty() || cursor == 0 {
                break;
            }
        }
        let cursor = (cursor != 0).then(|| cursor.to_string());
        Ok(KeyPage { keys, cursor })
    }

    /// The values of `keys`, in the order asked, by one `MGET`.
    pub async fn get_many(&self, keys: Vec<String>) -> StoreResult<Vec<(String, Option<Vec<u8>>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = match self.query(::redis::cmd("MGET").arg(&keys)).await? {
            Value::Array(values) if values.len() == keys.len() => values,
            other => return Err(unexpected("MGET", &other)),
        };
        keys.into_iter()
            .zip(values)
            .map(|(key, value)| Ok((key, bytes(value)?)))
            .collect()
    }

    /// Sets every pair by one `MSET`, which Redis applies at once.
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> StoreResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut mset = ::redis::cmd("MSET");
        for (key, value) in pairs {
            mset.arg(key).arg(value.as_slice());
        }
        self.query(&mset).await?;
        Ok(())
    }

    /// Removes every key by one `DEL`.
    pub async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query(::redis::cmd("DEL").arg(keys)).await?;
        Ok(())
    }

    /// `INCRBY`: the counter is decimal text, as Spin's Redis store keeps
    /// it; a value that is not an integer, or an overflow, is an error.
    pub async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        integer(
            self.query(::redis::cmd("INCRBY").arg(key).arg(delta))
                .await?,
        )
    }

    /// Replaces `key` with `value` if it still holds `expected`, in one
    /// script run.
    pub async fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> StoreResult<SwapOutcome> {
        let mut conn = self.conn.clone();
        let outcome: Value = self
            .swap
            .key(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        swap_outcome(outcome)
    }

    async fn query(&self, command: &Cmd) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        command.query_async(&mut conn).await.map_err(redis_error)
    }
}

fn redis_error(err: RedisError) -> StoreError {
    StoreError(format!("redis: {err}"))
}

fn unexpected(command: &str, value: &Value) -> StoreError {
    StoreError(format!("redis: unexpected answer to {command}: {value:?}"))
}

/// A string value, or `None` for a missing key.
fn bytes(value: Value) -> StoreResult<Option<Vec<u8>>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        other => Err(unexpected("GET", &other)),
    }
}

fn integer(value: Value) -> StoreResult<i64> {
    match value {
        Value::Int(n) => Ok(n),
        other => Err(unexpected("an integer command", &other)),
    }
}

/// `SCAN`'s answer: the next cursor and the keys found.
fn scan_page(value: Value) -> StoreResult<(u64, Vec<String>)> {
    let Value::Array(parts) = value else {
        return Err(unexpected("SCAN", &value));
    };
    let mut parts = parts.into_iter();
    let (Some(cursor), Some(Value::Array(found)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError(
            "redis: SCAN answered without a key list".to_owned(),
        ));
    };
    let cursor = bytes(cursor)?
        .and_then(|text| String::from_utf8(text).ok())
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError("redis: SCAN answered without a cursor".to_owned()))?;
    let keys = found
        .into_iter()
        .filter_map(|key| bytes(key).ok().flatten())
        .map(|key| String::from_utf8_lossy(&key).into_owned())
        .collect();
    Ok((cursor, keys))
}

/// The swap script's answer.
fn swap_outcome(value: Value) -> StoreResult<SwapOutcome> {
    match value {
        Value::Int(1) => Ok(SwapOutcome::Swapped),
        Value::Array(parts) => match parts.as_slice() {
            [Value::Int(0)] => Ok(SwapOutcome::Changed(None)),
            [Value::Int(0), current] => Ok(SwapOutcome::Changed(bytes(current.clone())?)),
            _ => Err(unexpected("the swap script", &Value::Array(parts))),
        },
        other => Err(unexpected("the swap script", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scripted_backend::redis::RedisServer;

    async fn open(test: &str) -> Option<(RedisServer, RedisStore)> {
        let server = RedisServer::start(test)?;
        let store = RedisStore::connect(&server.url()).await.expect("connects");
        Some((server, store))
    }

    #[tokio::test]
    async fn get_set_delete_exists_keep_bytes() {
        let Some((_server, kv)) = open("get_set_delete_exists_keep_bytes").await else {
            return;
        };
        assert_eq!(kv.get("a").await.unwrap(), None);
        assert!(!kv.exists("a").await.unwrap());
        let binary = [0u8, 255, 10, 13, 0];
        kv.set("a", &binary).await.unwrap();
        assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&binary[..]));
        assert!(kv.exists("a").await.unwrap());
        kv.set("empty", b"").await.unwrap();
        assert_eq!(kv.get("empty").await.unwrap(), Some(Vec::new()));
        kv.delete("a").await.unwrap();
        kv.delete("a").await.unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn batch_operations() {
        let Some((_server, kv)) = open("batch_operations").await else {
            return;
        };
        assert!(kv.get_many(Vec::new()).await.unwrap().is_empty());
        kv.set_many(&[]).await.unwrap();
        kv.delete_many(&[]).await.unwrap();
        let pairs = vec![
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ];
        kv.set_many(&pairs).await.unwrap();
        let got = kv
            .get_many(vec!["b".into(), "missing".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("b".to_owned(), Some(b"2".to_vec())),
                ("missing".to_owned(), None),
                ("a".to_owned(), Some(b"1".to_vec())),
            ]
        );
        kv.delete_many(&["a".into(), "missing".into()])
            .await
            .unwrap();
        assert_eq!(kv.list_keys(None, 10).await.unwrap().keys, ["b"]);
    }

    #[tokio::test]
    async fn increment_keeps_decimal_text_as_spin_does() {
        let Some((_server, kv)) = open("increment_keeps_decimal_text").await else {
            return;
        };
        assert_eq!(kv.increment("n", 5).await.unwrap(), 5);
        assert_eq!(kv.increment("n", -7).await.unwrap(), -2);
        assert_eq!(kv.get("n").await.unwrap(), Some(b"-2".to_vec()));

        kv.set("text", b"abc").await.unwrap();
        assert!(kv.increment("text", 1).await.is_err());
        kv.set("max", i64::MAX.to_string().as_bytes())
            .await
            .unwrap();
        assert!(kv.increment("max", 1).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_increments_are_atomic() {
        let Some((_server, kv)) = open("concurrent_increments_are_atomic").await else {
            return;
        };
        let kv = std::sync::Arc::new(kv);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let kv = kv.clone();
            tasks.spawn(async move {
                for _ in 0..25 {
                    kv.increment("n", 1).await.unwrap();
                }
            });
        }
        tasks.join_all().await;
        assert_eq!(kv.increment("n", 0).await.unwrap(), 200);
    }

    #[tokio::test]
    async fn swap_succeeds_only_on_unchanged_value() {
        let Some((_server, kv)) = open("swap_succeeds_only_on_unchanged").await else {
            return;
        };
        let swap = |expected: Option<&'static [u8]>, value: &'static [u8]| {
            let kv = &kv;
            async move { kv.swap("k", expected, value).await.unwrap() }
        };
        assert_eq!(swap(None, b"v1").await, SwapOutcome::Swapped);
        assert_eq!(
            swap(None, b"v2").await,
            SwapOutcome::Changed(Some(b"v1".to_vec()))
        );
        assert_eq!(
            swap(Some(b"v2"), b"v3").await,
            SwapOutcome::Changed(Some(b"v1".to_vec()))
        );
        assert_eq!(swap(Some(b"v1"), b"v2").await, SwapOutcome::Swapped);
        assert_eq!(kv.get("k").await.unwrap(), Some(b"v2".to_vec()));
        // An empty value is a value, not a missing key.
        kv.set("k", b"").await.unwrap();
        assert_eq!(
            swap(None, b"x").await,
            SwapOutcome::Changed(Some(Vec::new()))
        );
        assert_eq!(swap(Some(b""), b"x").await, SwapOutcome::Swapped);
        kv.delete("k").await.unwrap();
        assert_eq!(swap(Some(b"x"), b"y").await, SwapOutcome::Changed(None));
    }

    #[tokio::test]
    async fn list_keys_pages_through_every_key() {
        let Some((_server, kv)) = open("list_keys_pages_through_every_key").await else {
            return;
        };
        let pairs: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("key-{i:03}"), b"x".to_vec()))
            .collect();
        kv.set_many(&pairs).await.unwrap();

        let mut seen = std::collections::BTreeSet::new();
        let (mut cursor, mut pages) = (None, 0);
        loop {
            let page = kv.list_keys(cursor.as_deref(), 20).await.unwrap();
            pages += 1;
            seen.extend(page.keys);
            cursor = page.cursor;
            if cursor.is_none() || pages > 1000 {
                break;
            }
        }
        assert!(
            pages > 1,
            "300 keys in pages of about 20 take several pages"
        );
        let expected: std::collections::BTreeSet<String> =
            pairs.into_iter().map(|(key, _)| key).collect();
        assert_eq!(seen, expected);
        assert!(kv.list_keys(Some("not a cursor"), 20).await.is_err());
    }

    #[tokio::test]
    async fn calls_go_on_after_the_server_restarts() {
        let Some((mut server, kv)) = open("calls_go_on_after_the_server_restarts").await else {
            return;
        };
        kv.set("k", b"before").await.unwrap();
        server.restart();
        // The first calls may fail while the connection is re-made.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match kv.set("k", b"after").await {
                Ok(()) => break,
                Err(err) => assert!(
                    std::time::Instant::now() < deadline,
                    "no reconnect in time: {err}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(kv.get("k").await.unwrap(), Some(b"after".to_vec()));
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_to_open_in_time() {
        // Port 9 (discard) has no listener on loopback.
        let started = std::time::Instant::now();
        let result = RedisStore::connect("redis://127.0.0.1:9").await;
        assert!(result.is_err());
        assert!(started.elapsed() < CONNECT_TIMEOUT * 2);
        assert!(RedisStore::connect("not a url").await.is_err());
    }
}
