//! What an agent's turn costs in storage: a conversation of turns that each
//! resend the same 30 KB of tools and 4 KB of instructions (what agent
//! clients do), continued with `previous_response_id`, measured as the
//! growth of the host's SQLite file's keys and values per turn, against
//! the same conversation without tools or instructions.

use std::path::Path;

use anyhow::Context as _;
use edge_responses_host::Server;
use scripted_backend::DEFAULT_MODEL;
use serde_json::{json, Value};

use crate::client::{Conn, Probe};
use crate::report::{Row, Section, Unit};

/// Turns per conversation.
const TURNS: usize = 10;

/// Tools of an agent: 60 functions with a long description each.
fn agent_tools() -> Value {
    let tools: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "type": "function",
                "name": format!("tool_{i}"),
                "description": format!("Tool number {i}. {}", "It does one thing well. ".repeat(18)),
                "parameters": {"type": "object", "properties": {
                    "path": {"type": "string"}, "limit": {"type": "integer"}}},
            })
        })
        .collect();
    Value::Array(tools)
}

/// Stored bytes per turn, with and without the agent's tools.
pub struct StorageCost {
    pub tools_bytes: usize,
    pub instructions_bytes: usize,
    pub with_tools: f64,
    pub without_tools: f64,
}

/// Bytes of every key and value in the store.
fn stored_bytes(store: &Path) -> anyhow::Result<u64> {
    let db = rusqlite::Connection::open(store).context("opening the store")?;
    let bytes: i64 = db
        .query_row(
            "SELECT COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) FROM spin_key_value",
            [],
            |row| row.get(0),
        )
        .context("measuring the store")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Bytes the store grows by per turn after the first, for turns made of
/// `extra` fields.
async fn per_turn(server: &Server, extra: &Value) -> anyhow::Result<f64> {
    let mut conn = Conn::connect(server.addr()).await?;
    let mut previous: Option<String> = None;
    let mut after_first = 0;
    for turn in 0..TURNS {
        let mut body = json!({
            "model": DEFAULT_MODEL,
            "input": format!("Step {turn}: read the next file and tell me what it does."),
            "previous_response_id": previous,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let sample = conn
            .exchange(&Probe::responses(&body).keeping_body())
            .await?;
        let answer: Value = serde_json::from_slice(&sample.body)?;
        previous = answer["id"].as_str().map(str::to_owned);
        if turn == 0 {
            after_first = stored_bytes(server.store_path())?;
        }
    }
    let grown = stored_bytes(server.store_path())?.saturating_sub(after_first);
    Ok(grown as f64 / (TURNS - 1) as f64)
}

/// Measures both conversations on `server`.
pub async fn measure(server: &Server) -> anyhow::Result<StorageCost> {
    let tools = agent_tools();
    let instructions = "You are a careful coding assistant. ".repeat(115);
    let with = json!({"tools": tools, "instructions": instructions});
    Ok(StorageCost {
        tools_bytes: tools.to_string().len(),
        instructions_bytes: instructions.len(),
        with_tools: per_turn(server, &with).await?,
        without_tools: per_turn(server, &json!({})).await?,
    })
}

impl StorageCost {
    pub fn section(&self) -> Section {
        let kib = |bytes: f64| bytes / 1024.0;
        let repeated = (self.tools_bytes + self.instructions_bytes) as f64;
        Section::new(
            format!("Storage per agent turn ({TURNS} turns, previous_response_id, SQLite keys and values)"),
            vec![
                Row::value("stored per turn, with 30 KB of tools and 4 KB of instructions", Unit::KiB, kib(self.with_tools))
                    .note(format!(
                        "tools {:.1} KiB and instructions {:.1} KiB sent every turn, stored once per conversation; a format that stored them with each turn would add {:.1} KiB a turn",
                        kib(self.tools_bytes as f64),
                        kib(self.instructions_bytes as f64),
                        kib(repeated)
                    )),
                Row::value("stored per turn, same turns without tools or instructions", Unit::KiB, kib(self.without_tools)),
            ],
        )
    }
}
