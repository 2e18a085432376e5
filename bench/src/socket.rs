//! The WebSocket phase: the per-turn latency of an agent loop over one
//! WebSocket (WebSocket mode) against one HTTP request per turn
//! (`--only socket` runs it alone).
//!
//! An agent loop is a chain of turns, each continuing the last with
//! `previous_response_id` and a small new input (what a tool returned).
//! The host serves the component in this process, on a runtime of its own,
//! with a store of its own; the backend is the bench's (instant text).
//! Three chains run side by side, turn by turn in an order that rotates,
//! so the machine's noise falls on all three alike:
//!
//! - `http`: `POST /v1/responses` with `stream: true` on one keep-alive
//!   connection; stored, as an HTTP chain must be. A turn runs from
//!   sending the request to the end of its event stream.
//! - `ws`: `response.create` messages on one WebSocket with `store: false`:
//!   each turn continues from the connection's memory. A turn runs from
//!   sending the message to its `response.completed`.
//! - `ws_stored`: the same with `store: true`: each turn continues from the
//!   store, as over HTTP, so the difference to `http` is the transport.
//!
//! Every turn's answer is checked (completed, the backend's text).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use edge_responses_host::Server;
use futures_util::{SinkExt, StreamExt};
use scripted_backend::{Backend, DEFAULT_MODEL};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Conn, Probe};
use crate::report::{Row, Section, Target, Unit};
use crate::stats::Percentiles;
use crate::{host_config, progress, REPLY_TEXT};

/// Turns per chain: an agent loop of a few tool calls.
pub const TURNS_PER_CHAIN: usize = 10;

/// Longest wait for one turn.
const TURN_TIMEOUT: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The phase's result: numbers, or why there are none.
pub enum Outcome {
    Measured(SocketCost),
    /// A turn went wrong (a missed target in the report).
    Failed(String),
}

/// Per-turn latency of each way, in ms.
pub struct SocketCost {
    pub turns: usize,
    pub http: Percentiles,
    pub ws: Percentiles,
    pub ws_stored: Percentiles,
}

/// Runs `chains` chains of [`TURNS_PER_CHAIN`] turns each way, after
/// `warmup` chains that are not counted.
pub fn run(
    chains: usize,
    warmup: usize,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
) -> Outcome {
    match try_run(chains, warmup, component, state_dir, backend) {
        Ok(cost) => Outcome::Measured(cost),
        Err(err) => {
            let err = format!("{err:#}");
            progress(&format!("WebSocket turns failed: {err}"));
            Outcome::Failed(err)
        }
    }
}

fn try_run(
    chains: usize,
    warmup: usize,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
) -> anyhow::Result<SocketCost> {
    let store = tempfile::tempdir().context("creating a temporary store directory")?;
    let config = host_config(component, state_dir, store.path(), &backend.url());
    let host_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let host = host_runtime.block_on(Server::start(config))?;
    progress(&format!(
        "WebSocket turns: {chains} chains of {TURNS_PER_CHAIN} turns each way, host on {}",
        host.url()
    ));
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = client_runtime.block_on(measure(chains, warmup, host.addr()));
    host_runtime.block_on(host.shutdown());
    measured
}

/// The three ways a chain can go.
#[derive(Clone, Copy)]
enum Way {
    Http,
    Ws,
    WsStored,
}

const WAYS: [Way; 3] = [Way::Http, Way::Ws, Way::WsStored];

/// The clients, one connection each way, and each chain's last response.
struct Clients {
    http: Conn,
    ws: Socket,
    ws_stored: Socket,
    last: [Option<String>; 3],
}

async fn measure(chains: usize, warmup: usize, addr: SocketAddr) -> anyhow::Result<SocketCost> {
    let mut clients = Clients {
        http: Conn::connect(addr).await?,
        ws: connect(addr).await?,
        ws_stored: connect(addr).await?,
        last: [None, None, None],
    };
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for chain in 0..warmup.saturating_add(chains) {
        clients.last = [None, None, None];
        for turn in 0..TURNS_PER_CHAIN {
            // The order rotates, so no way always follows the same one.
            for offset in 0..WAYS.len() {
                let index = (chain + turn + offset) % WAYS.len();
                let took = clients.turn(WAYS[index], index, turn).await?;
                if chain >= warmup {
                    samples[index].push(took);
                }
            }
        }
    }
    let [http, ws, ws_stored] = samples.map(Percentiles::of);
    Ok(SocketCost {
        turns: chains * TURNS_PER_CHAIN,
        http,
        ws,
        ws_stored,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Socket> {
    if !addr.ip().is_loopback() {
        bail!("refusing to connect to {addr}: only loopback addresses are used");
    }
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/responses"))
        .await
        .context("opening a WebSocket")?;
    Ok(ws)
}

/// A turn's create body: the chain's next input, continuing its last
/// response.
fn body(turn: usize, previous: Option<&str>, store: bool) -> Value {
    let mut body = json!({
        "model": DEFAULT_MODEL,
        "input": format!("tool result {turn}"),
        "store": store,
    });
    if let Some(id) = previous {
        body["previous_response_id"] = json!(id);
    }
    body
}

impl Clients {
    /// One turn of `way`'s chain: how long it took.
    async fn turn(&mut self, way: Way, index: usize, turn: usize) -> anyhow::Result<Duration> {
        let previous = self.last[index].as_deref();
        let (took, id) = match way {
            Way::Http => {
                let mut body = body(turn, previous, true);
                body["stream"] = json!(true);
                http_turn(&mut self.http, &body).await?
            }
            Way::Ws => ws_turn(&mut self.ws, body(turn, previous, false)).await?,
            Way::WsStored => ws_turn(&mut self.ws_stored, body(turn, previous, true)).await?,
        };
        self.last[index] = Some(id);
        Ok(took)
    }
}

/// A streamed create over HTTP: its time and its response's id.
async fn http_turn(conn: &mut Conn, body: &Value) -> anyhow::Result<(Duration, String)> {
    let probe = Probe::responses(body).keeping_body();
    let sample = conn.exchange(&probe).await?;
    let text = String::from_utf8_lossy(&sample.body);
    let completed = text
        .split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.completed")
        .context("an HTTP stream ended without response.completed")?;
    Ok((sample.total, checked(&completed)?))
}

/// A turn over a WebSocket: its time and its response's id.
async fn ws_turn(ws: &mut Socket, body: Value) -> anyhow::Result<(Duration, String)> {
    let mut message = body;
    message["type"] = json!("response.create");
    let start = Instant::now();
    ws.send(Message::text(message.to_string())).await?;
    loop {
        let next = tokio::time::timeout(TURN_TIMEOUT, ws.next())
            .await
            .context("a WebSocket turn took too long")?
            .context("the WebSocket closed")??;
        let Message::Text(text) = next else {
            continue;
        };
        let event: Value = serde_json::from_str(&text)?;
        match event["type"].as_str() {
            Some("response.completed") => return Ok((start.elapsed(), checked(&event)?)),
            Some("error" | "response.failed" | "response.incomplete") => {
                bail!("a WebSocket turn failed: {event}")
            }
            _ => {}
        }
    }
}

/// The id of a completed turn whose answer is the backend's text.
fn checked(completed: &Value) -> anyhow::Result<String> {
    let response = &completed["response"];
    let text = response["output"][0]["content"][0]["text"].as_str();
    if text != Some(REPLY_TEXT) {
        bail!("unexpected answer: {response}");
    }
    response["id"]
        .as_str()
        .map(str::to_owned)
        .context("a response without an id")
}

impl SocketCost {
    /// `ws` p50 over `http` p50.
    pub fn ratio(&self) -> f64 {
        self.ws.p50 / self.http.p50
    }
}

impl Outcome {
    pub fn section(&self) -> Section {
        let title = format!(
            "WebSocket mode: per-turn latency of a {TURNS_PER_CHAIN}-turn agent loop, one WebSocket vs one HTTP request per turn"
        );
        let columns = ["WebSocket".into(), "HTTP".into(), "difference".into()];
        let metric = "turn, store: false over the WebSocket vs a stored HTTP chain, p50";
        let target = |pass| Target::new("WebSocket <= HTTP", pass);
        let cost = match self {
            Outcome::Measured(cost) => cost,
            Outcome::Failed(err) => {
                let row = Row::columns(metric, Unit::Millis, [None; 3])
                    .target(target(false))
                    .note(format!("failed: {err}"));
                return Section::new(title, vec![row]).with_columns(columns);
            }
        };
        let pair = |ws: f64, http: f64| [Some(ws), Some(http), Some(ws - http)];
        let rows = vec![
            Row::columns(metric, Unit::Millis, pair(cost.ws.p50, cost.http.p50))
                .target(target(cost.ws.p50 <= cost.http.p50))
                .note(format!(
                    "{} turns each way, chains of {TURNS_PER_CHAIN}, interleaved; {:.2}x",
                    cost.turns,
                    cost.ratio()
                )),
            Row::columns(
                "turn, the same, p99",
                Unit::Millis,
                pair(cost.ws.p99, cost.http.p99),
            ),
            Row::columns(
                "turn, stored chain over the WebSocket vs HTTP, p50",
                Unit::Millis,
                pair(cost.ws_stored.p50, cost.http.p50),
            )
            .note("both continue from the store: the transport alone"),
        ];
        Section::new(title, rows).with_columns(columns)
    }

    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Failed(err) => json!({ "error": err }),
            Outcome::Measured(cost) => json!({
                "turns_per_way": cost.turns,
                "turns_per_chain": TURNS_PER_CHAIN,
                "http_stored_stream": cost.http.to_json(),
                "ws_unstored": cost.ws.to_json(),
                "ws_stored": cost.ws_stored.to_json(),
                "ws_over_http_p50": cost.ratio(),
            }),
        }
    }
}
