//! A real MCP server for the tests: tests/python/mcp_server.py, the
//! official MCP Python SDK's FastMCP on Streamable HTTP, on a loopback
//! port, with a log of every HTTP request it received.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The MCP server process, killed on drop.
pub struct McpServer {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpServer {
    /// Starts a server answering with SSE streams, or with JSON bodies;
    /// `None` (with a loud message) when the `mcp` package is missing.
    pub async fn start(json_answers: bool) -> Option<McpServer> {
        let python = super::python();
        let installed = Command::new(&python)
            .args(["-c", "import mcp.server.fastmcp, uvicorn"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("\n*** SKIPPED: the `mcp` Python package is not installed (scripts/test installs it) ***\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("requests.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mcp_server.py");
        let mut command = Command::new(&python);
        command
            .arg(script)
            .arg(port.to_string())
            .arg("--log")
            .arg(&log);
        if json_answers {
            command.arg("--json");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the MCP server starts");
        let server = McpServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}/mcp"),
            log,
            _dir: dir,
        };
        // Up to 30 s for the server to listen.
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the MCP server did not start listening");
    }

    /// Every request received so far: method, path, headers, body.
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The JSON-RPC methods received so far, in order.
    pub fn methods(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r["body"].as_str()?).ok())
            .filter_map(|body| body["method"].as_str().map(str::to_owned))
            .collect()
    }
}
