//! The component's MCP client (`edge_responses::mcp::client`) against real
//! MCP servers from the official MCP Python SDK (tests/python/mcp_server.py,
//! Streamable HTTP on loopback), answering with SSE streams and with JSON:
//! initialize, tools/list, tools/call, a tool that fails, an unknown tool.
//! The client runs natively here, over a small reqwest backend; in the
//! component it goes through wasi:http.

mod common;

use common::mcp::McpServer;
use edge_responses::backend::{Answer, Backend, BodyStream, Method, Outbound};
use edge_responses::error::ApiError;
use edge_responses::mcp::client::{McpError, Server};
use serde_json::json;

/// Outbound HTTP over reqwest, for running the client natively.
struct Reqwest(reqwest::Client);

struct Body(Option<reqwest::Response>);

impl BodyStream for Body {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        let response = self.0.as_mut()?;
        match response.chunk().await {
            Ok(Some(bytes)) => Some(Ok(bytes.to_vec())),
            Ok(None) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
}

impl Backend for Reqwest {
    type Body = Body;

    async fn send(&self, request: Outbound) -> Result<Answer<Body>, ApiError> {
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.0.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| ApiError::backend(e.to_string()))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: response.status().as_u16(),
            content_type: header("content-type"),
            session: header("mcp-session-id"),
            body: Body(Some(response)),
        })
    }
}

async fn scenario(json_answers: bool) {
    let Some(server) = McpServer::start(json_answers).await else {
        return;
    };
    let backend = Reqwest(reqwest::Client::new());
    let mut client = Server::new(&backend, server.url.clone(), Vec::new());
    client.initialize().await.expect("initialize");
    let tools = client.list_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add", "fail", "slow"]);
    assert_eq!(tools[0].annotations.as_ref().unwrap()["readOnlyHint"], true);
    assert_eq!(tools[0].description.as_deref(), Some("Adds two integers."));
    assert_eq!(tools[0].input_schema["properties"]["a"]["type"], "integer");

    let sum = client
        .call_tool("add", json!({"a": 2, "b": 40}))
        .await
        .expect("tools/call");
    assert_eq!(sum.output, "42");
    assert!(!sum.is_error);
    let failed = client
        .call_tool("fail", json!({"reason": "testing"}))
        .await
        .expect("a failing tool is a result");
    assert!(failed.is_error);
    assert!(
        failed.output.contains("failed on purpose: testing"),
        "{}",
        failed.output
    );
    let unknown = client.call_tool("nope", json!({})).await;
    match unknown {
        Ok(result) => assert!(result.is_error, "{result:?}"),
        Err(error) => assert!(matches!(error, McpError::Rpc { .. }), "{error}"),
    }
    let methods = server.methods();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call",
            "tools/call"
        ]
    );

    // Ending the session: the server accepts the DELETE, and the session
    // is gone.
    let end = client.end_session().expect("a session to end");
    let ended = backend.send(end.clone()).await.expect("an answer");
    assert!((200..300).contains(&ended.status), "{}", ended.status);
    let again = backend.send(end).await.expect("an answer");
    assert_eq!(again.status, 404, "the session is gone");
}

#[tokio::test(flavor = "current_thread")]
async fn the_official_sdk_server_answering_with_event_streams() {
    scenario(false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_official_sdk_server_answering_with_json() {
    scenario(true).await;
}
