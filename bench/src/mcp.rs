//! The MCP phase: what one remote MCP tool round trip costs through
//! edge-responses beyond the MCP server's own time (`--only mcp` runs it
//! alone).
//!
//! The MCP server is `tests/python/mcp_server.py` (the official MCP Python
//! SDK's FastMCP on Streamable HTTP, answering with SSE streams, its
//! default), a child process on a loopback port. The host serves the
//! component in this process, on a runtime of its own, with a store of its
//! own and `mcp_allowed_servers` naming that server; the scripted backend
//! is the bench's. The bench holds one keep-alive connection to each of
//! the host, the MCP server and the backend; each round takes four
//! samples:
//!
//! - `direct`: the bench as the MCP client, sending what one first-turn
//!   response sends: `initialize`, `notifications/initialized` (with the
//!   `Mcp-Session-Id` the server handed out), `tools/list`, and
//!   `tools/call` of `add`, with the component's headers, each answer read
//!   to its end (so the connection is reused) and checked (the call must
//!   give `3`). The MCP server's own time, plus a minimal client's.
//! - `plain`: a non-streaming create without tools; the backend answers
//!   with text at once.
//! - `mcp`: the same create with the `mcp` tool (`require_approval:
//!   never`); the backend answers first with a call of `calc__add`
//!   `{"a":1,"b":2}`, then with text. Every answer is checked: its output
//!   is `mcp_list_tools`, `mcp_call` (output `3`), `message`.
//! - `model`: the second chat-completions request of that loop (the tool
//!   result fed back), captured once from the backend's log and sent
//!   straight to the backend: the model call the loop adds.
//!
//! What the round trip adds is `p50(mcp) - p50(plain) - p50(direct) -
//! p50(model)`: the host's outbound requests (and any connection it opens
//! to the MCP server rather than reuse), the component's JSON-RPC and SSE
//! handling, the second trip through the model loop, and the larger
//! response it stores. The four probes run back to back in every round, in
//! an order that rotates each round, so drift (the server's sessions pile
//! up: the bench's own client does not end its sessions; the component
//! ends each with a `DELETE` after its answer) and
//! whatever one probe leaves behind for the next fall on all four alike.
//! The median of the per-round differences is reported too: it pairs
//! samples taken within milliseconds of each other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use edge_responses_host::Server;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use scripted_backend::{Backend, Reply, DEFAULT_MODEL};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::client::{Conn, Probe, Sample, Watch};
use crate::report::{Row, Section, Target, Unit};
use crate::stats::Percentiles;
use crate::{host_config, progress, workspace_root, REPLY_TEXT};

/// The MCP server script, relative to the workspace.
const SERVER_SCRIPT: &str = "tests/python/mcp_server.py";

/// The `server_label` of the tool; the model sees `calc__add`.
const LABEL: &str = "calc";

/// HTTP requests one first-turn response sends to the MCP server.
const REQUESTS_PER_ROUND: usize = 4;

/// The protocol version asked for, as the component asks.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Target for what the round trip adds, p50.
const ADDED_TARGET_MS: f64 = 5.0;

/// The phase's result: numbers, or why there are none.
pub enum Outcome {
    Measured(McpCost),
    /// The `mcp` Python package is missing.
    Skipped(String),
    /// A round trip went wrong (a missed target in the report).
    Failed(String),
}

/// Percentiles of the four probes, and what the round trip adds.
pub struct McpCost {
    pub rounds: usize,
    pub direct: Percentiles,
    pub plain: Percentiles,
    pub mcp: Percentiles,
    pub model: Percentiles,
    /// Median of `mcp - plain - direct - model` per round, in ms.
    pub paired_added: f64,
    /// The captured second chat-completions request, in bytes.
    pub model_request_bytes: usize,
}

impl McpCost {
    /// `p50(mcp) - p50(plain) - p50(direct) - p50(model)`, in ms.
    pub fn added(&self) -> f64 {
        self.mcp.p50 - self.parts()
    }

    /// The p50s of the parts the round trip is made of, in ms.
    fn parts(&self) -> f64 {
        self.plain.p50 + self.direct.p50 + self.model.p50
    }
}

/// The MCP server process, killed on drop.
struct McpServer {
    child: Child,
    port: u16,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter: `EDGE_RESPONSES_PYTHON`, else the workspace's
/// `.venv/bin/python`, else `python3` (as the tests choose).
fn python(root: &Path) -> PathBuf {
    if let Some(python) = std::env::var_os("EDGE_RESPONSES_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = root.join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

impl McpServer {
    /// Starts the server with SSE answers on a free loopback port; `Err`
    /// with the reason when the `mcp` package is missing.
    async fn start(root: &Path) -> anyhow::Result<Result<McpServer, String>> {
        let python = python(root);
        let installed = Command::new(&python)
            .args(["-c", "import mcp.server.fastmcp, uvicorn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            return Ok(Err(format!(
                "{} cannot import the `mcp` package (pip install -r tests/python/requirements.txt)",
                python.display()
            )));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("finding a free port")?
            .port();
        let child = Command::new(&python)
            .arg(root.join(SERVER_SCRIPT))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {SERVER_SCRIPT}"))?;
        let server = McpServer { child, port };
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Ok(server));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{SERVER_SCRIPT} did not listen on port {port} within 30 s");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An MCP client on one keep-alive HTTP/1.1 connection.
struct McpClient {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

/// One answer of the MCP server.
struct Answer {
    status: StatusCode,
    session: Option<String>,
    body: Bytes,
}

impl McpClient {
    async fn connect(port: u16) -> anyhow::Result<McpClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("connecting to the MCP server")?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake with the MCP server")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(McpClient {
            sender,
            host: format!("127.0.0.1:{port}"),
        })
    }

    /// POSTs one JSON-RPC message with the headers the component sends,
    /// and reads the answer to its end.
    async fn post(&mut self, message: &Value, session: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/mcp")
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        let request = request.body(Full::new(Bytes::from(message.to_string())))?;
        self.sender
            .ready()
            .await
            .context("the MCP connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("MCP {}", message["method"]))?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            session,
            body,
        })
    }

    /// A JSON-RPC request and the `result` of its answer.
    async fn request(
        &mut self,
        id: u64,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> anyhow::Result<(Value, Option<String>)> {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self.post(&message, session).await?;
        if !answer.status.is_success() {
            bail!("MCP {method} answered {}", answer.status);
        }
        let reply = answer_of(&answer.body, id)
            .with_context(|| format!("MCP {method}: no answer to request {id}"))?;
        if let Some(error) = reply.get("error") {
            bail!("MCP {method} failed: {error}");
        }
        Ok((reply["result"].clone(), answer.session))
    }

    /// One first-turn response's worth of MCP traffic; the time it took.
    async fn round(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        });
        let (_, session) = self.request(1, "initialize", params, None).await?;
        let session = session.context("initialize: no Mcp-Session-Id")?;
        let session = Some(session.as_str());
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = self.post(&initialized, session).await?;
        if !answer.status.is_success() {
            bail!("notifications/initialized answered {}", answer.status);
        }
        let (tools, _) = self.request(2, "tools/list", json!({}), session).await?;
        if tools["tools"][0]["name"] != "add" {
            bail!("tools/list: {tools}");
        }
        let call = json!({"name": "add", "arguments": {"a": 1, "b": 2}});
        let (result, _) = self.request(3, "tools/call", call, session).await?;
        let elapsed = start.elapsed();
        if result["content"][0]["text"] != "3" {
            bail!("tools/call add: {result}");
        }
        Ok(elapsed)
    }
}

/// The message answering request `id` in a JSON body or an SSE stream.
fn answer_of(body: &[u8], id: u64) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let is_answer = |message: &Value| message["id"] == json!(id);
    if let Ok(message) = serde_json::from_str::<Value>(text) {
        return is_answer(&message).then_some(message);
    }
    text.lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(is_answer)
}

/// The four probes of a round and their connections.
struct Probes {
    direct: McpClient,
    edge: Conn,
    backend: Conn,
    plain: Probe,
    mcp: Probe,
    model: Probe,
}

/// The samples of one round, in ms, by probe.
type Round = [f64; 4];

/// The probes, as indexes into a [`Round`].
const DIRECT: usize = 0;
const PLAIN: usize = 1;
const MCP: usize = 2;
const MODEL: usize = 3;

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The backend's two replies for one create with the `mcp` tool.
fn script(backend: &Backend) {
    backend.push_all([
        Reply::new().tool_call("call_add", format!("{LABEL}__add"), r#"{"a":1,"b":2}"#),
        Reply::text(REPLY_TEXT),
    ]);
}

/// Fails unless `sample` is a response that listed the tools, called
/// `add` with output `3` and answered.
fn check_mcp_answer(sample: &Sample) -> anyhow::Result<()> {
    let response: Value =
        serde_json::from_slice(&sample.body).context("the response is not JSON")?;
    let types: Vec<&str> = response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["type"].as_str())
        .collect();
    let call = &response["output"][1];
    if types != ["mcp_list_tools", "mcp_call", "message"] || call["output"] != "3" {
        bail!("the response is not one MCP round trip: {response}");
    }
    Ok(())
}

impl Probes {
    /// One sample of probe `which`, in ms.
    async fn take(&mut self, which: usize, backend: &Backend) -> anyhow::Result<f64> {
        Ok(match which {
            DIRECT => millis(self.direct.round().await?),
            PLAIN => millis(self.edge.exchange(&self.plain).await?.total),
            MCP => {
                script(backend);
                let sample = self.edge.exchange(&self.mcp).await?;
                if backend.pending_replies() != 0 {
                    bail!("the component did not call the backend twice");
                }
                check_mcp_answer(&sample)?;
                millis(sample.total)
            }
            _ => millis(self.backend.exchange(&self.model).await?.total),
        })
    }

    /// `count` rounds, the probes' order rotating each round.
    async fn rounds(&mut self, count: usize, backend: &Backend) -> anyhow::Result<Vec<Round>> {
        let mut rounds = Vec::with_capacity(count);
        for index in 0..count {
            let mut round = [0.0; 4];
            for step in 0..4 {
                let which = (index + step) % 4;
                round[which] = self.take(which, backend).await?;
            }
            rounds.push(round);
        }
        Ok(rounds)
    }
}

/// Sends `probe` once with the backend's request log on; the body of the
/// second chat-completions request the component sent (the tool result fed
/// back to the model).
async fn capture_second_chat(
    backend: &Backend,
    conn: &mut Conn,
    probe: &Probe,
) -> anyhow::Result<Vec<u8>> {
    script(backend);
    let (sent, chats) = crate::recorded(backend, conn, probe).await;
    check_mcp_answer(&sent?)?;
    let offered = chats
        .first()
        .map(|chat| chat.tools().len())
        .unwrap_or_default();
    match chats.as_slice() {
        [_, second] if offered == 3 => Ok(second.raw_body.clone()),
        _ => bail!(
            "expected two chat requests, the first offering the server's 3 tools; got {} ({offered} tools)",
            chats.len()
        ),
    }
}

/// Runs the phase: `warmup` rounds, then `rounds` measured ones. A
/// failure is reported, not returned, so the phases after it still run.
pub fn run(
    rounds: usize,
    warmup: usize,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
) -> Outcome {
    match try_run(rounds, warmup, component, state_dir, backend) {
        Ok(outcome) => outcome,
        Err(err) => {
            let err = format!("{err:#}");
            progress(&format!("MCP round trip failed: {err}"));
            Outcome::Failed(err)
        }
    }
}

fn try_run(
    rounds: usize,
    warmup: usize,
    component: &Path,
    state_dir: &Path,
    backend: &Backend,
) -> anyhow::Result<Outcome> {
    let root = workspace_root();
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = match client_runtime.block_on(McpServer::start(&root))? {
        Ok(server) => server,
        Err(reason) => {
            eprintln!("\n*** SKIPPED the MCP phase: {reason} ***\n");
            return Ok(Outcome::Skipped(reason));
        }
    };
    let store = tempfile::tempdir().context("creating a temporary store directory")?;
    let mut config = host_config(component, state_dir, store.path(), &backend.url());
    config
        .variables
        .insert("mcp_allowed_servers".to_owned(), server.origin());
    let host_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let host = host_runtime.block_on(Server::start(config))?;
    progress(&format!(
        "MCP round trip: host on {}, MCP server ({SERVER_SCRIPT}, SSE answers) on {}",
        host.url(),
        server.url()
    ));
    let measured = client_runtime.block_on(measure(rounds, warmup, &host, &server, backend));
    host_runtime.block_on(host.shutdown());
    drop(server);
    measured.map(Outcome::Measured)
}

async fn measure(
    rounds: usize,
    warmup: usize,
    host: &Server,
    server: &McpServer,
    backend: &Backend,
) -> anyhow::Result<McpCost> {
    let question = "What is 1 + 2?";
    let plain = Probe::responses(&json!({ "model": DEFAULT_MODEL, "input": question }));
    let tool = json!({"type": "mcp", "server_label": LABEL, "server_url": server.url(),
                      "require_approval": "never"});
    let mcp =
        Probe::responses(&json!({ "model": DEFAULT_MODEL, "input": question, "tools": [tool] }))
            .keeping_body();
    let mut edge = Conn::connect(host.addr()).await?;
    let model = capture_second_chat(backend, &mut edge, &mcp).await?;
    let model_request_bytes = model.len();
    let mut probes = Probes {
        direct: McpClient::connect(server.port).await?,
        edge,
        backend: Conn::connect(backend.addr()).await?,
        plain,
        mcp,
        model: Probe::chat(model, Watch::Nothing),
    };

    progress(&format!(
        "MCP round trip: warming up ({warmup} rounds), then {rounds} rounds of four requests each"
    ));
    probes.rounds(warmup, backend).await?;
    let samples = probes.rounds(rounds, backend).await?;

    let column = |which: usize| {
        Percentiles::of(
            samples
                .iter()
                .map(|round| Duration::from_secs_f64(round[which] / 1000.0)),
        )
    };
    let mut paired: Vec<f64> = samples
        .iter()
        .map(|round| round[MCP] - round[PLAIN] - round[DIRECT] - round[MODEL])
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_added = paired
        .get(paired.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default();
    Ok(McpCost {
        rounds,
        direct: column(DIRECT),
        plain: column(PLAIN),
        mcp: column(MCP),
        model: column(MODEL),
        paired_added,
        model_request_bytes,
    })
}

impl Outcome {
    pub fn section(&self) -> Section {
        let title = "Remote MCP round trip: a create that lists and calls one MCP tool (FastMCP, SSE answers) vs its parts, concurrency 1";
        let columns = ["with mcp".into(), "parts".into(), "added".into()];
        let target = |pass| Target::new(format!("added <= {ADDED_TARGET_MS} ms"), pass);
        let metric = "create with one MCP call, p50";
        let cost = match self {
            Outcome::Measured(cost) => cost,
            Outcome::Skipped(reason) => {
                let row = Row::columns(metric, Unit::Millis, [None; 3])
                    .note(format!("skipped: {reason}"));
                return Section::new(title, vec![row]).with_columns(columns);
            }
            Outcome::Failed(err) => {
                let row = Row::columns(metric, Unit::Millis, [None; 3])
                    .target(target(false))
                    .note(format!("failed: {err}"));
                return Section::new(title, vec![row]).with_columns(columns);
            }
        };
        let added = cost.added();
        let per_request = added / REQUESTS_PER_ROUND as f64;
        let part = |label: &str, p: Percentiles, note: &str| {
            Row::columns(label, Unit::Millis, [None, Some(p.p50), None])
                .note(format!("p99 {:.3} ms; {note}", p.p99))
        };
        let rows = vec![
            Row::columns(
                metric,
                Unit::Millis,
                [Some(cost.mcp.p50), Some(cost.parts()), Some(added)],
            )
            .target(target(added <= ADDED_TARGET_MS))
            .note(format!(
                "{} rounds; parts = the three rows below; median of per-round differences {:.3} ms",
                cost.rounds, cost.paired_added
            )),
            Row::columns(
                "create with one MCP call, p99",
                Unit::Millis,
                [Some(cost.mcp.p99), None, None],
            ),
            part(
                "create without tools, p50",
                cost.plain,
                "the backend answers text at once",
            ),
            part(
                "MCP server straight, 4 requests, p50",
                cost.direct,
                "initialize, notifications/initialized, tools/list, tools/call from the bench on one keep-alive connection",
            ),
            part(
                "second model call straight to the backend, p50",
                cost.model,
                &format!(
                    "the tool result fed back, {:.1} KiB",
                    cost.model_request_bytes as f64 / 1024.0
                ),
            ),
            Row::columns(
                "added per MCP HTTP request, p50",
                Unit::Millis,
                [None, None, Some(per_request)],
            )
            .note(format!("added / {REQUESTS_PER_ROUND}")),
        ];
        Section::new(title, rows).with_columns(columns)
    }

    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Skipped(reason) => json!({ "skipped": reason }),
            Outcome::Failed(err) => json!({ "error": err }),
            Outcome::Measured(cost) => json!({
                "server": format!("{SERVER_SCRIPT} (FastMCP, Streamable HTTP, SSE answers)"),
                "rounds": cost.rounds,
                "requests_per_round": REQUESTS_PER_ROUND,
                "create_with_mcp": cost.mcp.to_json(),
                "create_without_tools": cost.plain.to_json(),
                "mcp_server_direct": cost.direct.to_json(),
                "second_model_call_direct": cost.model.to_json(),
                "second_model_request_bytes": cost.model_request_bytes,
                "added_p50_ms": cost.added(),
                "added_per_request_p50_ms": cost.added() / REQUESTS_PER_ROUND as f64,
                "added_paired_median_ms": cost.paired_added,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_answer_in_json_and_in_sse() {
        let json = br#"{"jsonrpc":"2.0","id":2,"result":{}}"#;
        assert!(answer_of(json, 2).is_some());
        assert!(answer_of(json, 3).is_none());
        let sse = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[]}}\r\n\r\n";
        assert_eq!(answer_of(sse, 3).expect("found")["id"], 3);
        assert!(answer_of(sse, 1).is_none());
    }

    #[test]
    fn added_subtracts_every_part() {
        let p = |p50| Percentiles {
            p50,
            p99: p50,
            count: 1,
        };
        let cost = McpCost {
            rounds: 1,
            direct: p(6.0),
            plain: p(1.0),
            mcp: p(10.0),
            model: p(0.5),
            paired_added: 2.5,
            model_request_bytes: 0,
        };
        assert_eq!(cost.added(), 2.5);
        let outcome = Outcome::Measured(cost);
        let section = outcome.section();
        assert_eq!(section.rows[0].added, Some(2.5));
        assert!(section.rows[0].target.as_ref().is_some_and(|t| t.pass));
        assert_eq!(outcome.to_json()["added_per_request_p50_ms"], 0.625);
        let failed = Outcome::Failed("no answer".into()).section();
        assert!(failed.rows[0].target.as_ref().is_some_and(|t| !t.pass));
        let skipped = Outcome::Skipped("no mcp".into()).section();
        assert!(skipped.rows[0].target.is_none());
    }
}
