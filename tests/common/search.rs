//! A scripted web search provider for the tests:
//! tests/python/search_provider.py (Python's standard library alone) on a
//! loopback port, answering SearXNG's, Brave's and Tavily's APIs with
//! results derived from the query, and logging every request.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The provider process, killed on drop.
pub struct SearchProvider {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for SearchProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SearchProvider {
    /// Starts the provider; with `key`, Brave and Tavily requests must
    /// carry it.
    pub fn start(key: Option<&str>) -> SearchProvider {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/search_provider.py"
        );
        let mut command = Command::new(super::python());
        command.arg(script).args(["--port", "0"]);
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the search provider starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the provider says where it listens");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        SearchProvider { child, url }
    }

    /// Every search request received so far.
    pub async fn requests(&self) -> Vec<Value> {
        let log = reqwest::get(format!("{}/_log", self.url))
            .await
            .expect("the log answers");
        log.json::<Vec<Value>>().await.expect("a JSON log")
    }
}
