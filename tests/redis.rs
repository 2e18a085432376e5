//! Many hosts on one Redis: two hosts serve the built component from one
//! Redis database (`--store redis://...`), in front of the same scripted
//! backend, and behave as one service: conversations continue on either
//! host, concurrent continuations each replay their own history, deletes
//! and stored responses are seen on both at once.
//!
//! Each test starts its own `redis-server` on a free loopback port, without
//! persistence, killed when the test ends. Without `redis-server` on `PATH`
//! the tests print a `*** SKIPPED ***` line and pass; `scripts/ensure-redis`
//! installs it.

mod common;

use std::path::Path;

use common::{component, output_text, send, start_backend};
use edge_responses_host::{Config, KvStats, Server, StoreLocation};
use scripted_backend::redis::RedisServer as Redis;
use scripted_backend::{Backend, Reply};
use serde_json::{json, Value};

/// Two hosts on one Redis database, in front of one backend.
struct Pair {
    backend: Backend,
    hosts: [Server; 2],
    client: reqwest::Client,
    _state: tempfile::TempDir,
    _redis: Redis,
}

impl Pair {
    async fn start(test: &str) -> Option<Pair> {
        let redis = Redis::start(test)?;
        let backend = start_backend();
        let state = tempfile::tempdir().expect("temp dir");
        let a = serve(&redis.url(), &state.path().join("a"), &backend).await;
        let b = serve(&redis.url(), &state.path().join("b"), &backend).await;
        Some(Pair {
            backend,
            hosts: [a, b],
            client: reqwest::Client::new(),
            _state: state,
            _redis: redis,
        })
    }

    /// `POST /v1/responses` on host `host`; asserts a 200.
    async fn create(&self, host: usize, body: &Value) -> Value {
        let url = format!("{}/v1/responses", self.hosts[host].url());
        let (status, response) = send(self.client.post(url).json(body)).await;
        assert_eq!(status, 200, "host {host}: {response}");
        response
    }

    async fn get(&self, host: usize, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.hosts[host].url());
        send(self.client.get(url)).await
    }

    async fn delete(&self, host: usize, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.hosts[host].url());
        send(self.client.delete(url)).await
    }

    /// The messages of the backend's chat request whose last message is the
    /// user's `input`.
    fn messages_ending_with(&self, input: &str) -> Vec<Value> {
        let matching: Vec<Vec<Value>> = self
            .backend
            .chat_requests()
            .into_iter()
            .map(|request| request.messages().to_vec())
            .filter(|messages| messages.last() == Some(&user(input)))
            .collect();
        assert_eq!(matching.len(), 1, "one chat request ends with {input:?}");
        matching.into_iter().next().unwrap_or_default()
    }

    async fn shutdown(self) {
        for host in self.hosts {
            host.shutdown().await;
        }
    }
}

async fn serve(redis_url: &str, state: &Path, backend: &Backend) -> Server {
    let mut config = Config::new(component());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.state_dir = state.to_path_buf();
    config.store = Some(redis_url.into());
    config.cache = Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"));
    config
        .variables
        .insert("backend_url".to_owned(), backend.url());
    // As on SQLite (tests/common): no removal steps or usage totals to vary
    // the counts.
    config
        .variables
        .insert("retention_sweep_every".to_owned(), "0".to_owned());
    config
        .variables
        .insert("usage_tracking".to_owned(), "false".to_owned());
    let server = Server::start(config).await.expect("host starts");
    assert_eq!(server.store(), &StoreLocation::Redis(redis_url.to_owned()));
    server
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// The scripted backend's default answer to `input`.
fn echo(input: &str) -> String {
    format!("Hello! You said: {input}")
}

fn request(input: &str, previous: Option<&str>) -> Value {
    let mut body = json!({"model": "m", "input": input});
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    body
}

fn id(response: &Value) -> String {
    response["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_continues_alternately_on_two_hosts() {
    let Some(pair) = Pair::start("a_conversation_continues_alternately_on_two_hosts").await else {
        return;
    };
    let mut history: Vec<Value> = Vec::new();
    let mut previous: Option<String> = None;
    for turn in 0..6 {
        let host = turn % 2;
        let input = format!("turn {turn} on host {host}");
        let response = pair
            .create(host, &request(&input, previous.as_deref()))
            .await;
        assert_eq!(output_text(&response), echo(&input));

        history.push(user(&input));
        assert_eq!(
            pair.messages_ending_with(&input),
            history,
            "turn {turn} replays every earlier turn, whichever host served it"
        );
        history.push(assistant(&echo(&input)));
        previous = Some(id(&response));
    }
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_continuations_on_two_hosts_each_replay_their_own_history() {
    const BRANCHES: usize = 50;
    let Some(pair) =
        Pair::start("concurrent_continuations_on_two_hosts_each_replay_their_own_history").await
    else {
        return;
    };
    let parent = pair.create(0, &request("the parent", None)).await;
    let parent_id = id(&parent);

    let pair = std::sync::Arc::new(pair);
    let mut branches = tokio::task::JoinSet::new();
    for i in 0..BRANCHES {
        let (pair, parent_id) = (pair.clone(), parent_id.clone());
        branches.spawn(async move {
            let input = format!("branch {i}");
            let response = pair.create(i % 2, &request(&input, Some(&parent_id))).await;
            (input, response)
        });
    }
    let answers = branches.join_all().await;
    assert_eq!(answers.len(), BRANCHES);
    let mut ids = std::collections::BTreeSet::new();
    for (input, response) in &answers {
        assert_eq!(output_text(response), echo(input));
        assert_eq!(response["previous_response_id"], json!(parent_id));
        ids.insert(id(response));
        let expected = vec![
            user("the parent"),
            assistant(&echo("the parent")),
            user(input),
        ];
        assert_eq!(pair.messages_ending_with(input), expected, "{input}");
    }
    assert_eq!(
        ids.len(),
        BRANCHES,
        "every continuation is a response of its own"
    );

    // Each branch goes on with its own history, on the other host.
    for (i, (input, response)) in answers.iter().enumerate().take(4) {
        let next = format!("after {input}");
        pair.create((i + 1) % 2, &request(&next, Some(&id(response))))
            .await;
        let expected = vec![
            user("the parent"),
            assistant(&echo("the parent")),
            user(input),
            assistant(&echo(input)),
            user(&next),
        ];
        assert_eq!(pair.messages_ending_with(&next), expected);
    }
    if let Ok(pair) = std::sync::Arc::try_unwrap(pair) {
        pair.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_response_is_followed_and_cancelled_from_the_other_host() {
    let Some(pair) =
        Pair::start("a_background_response_is_followed_and_cancelled_from_the_other_host").await
    else {
        return;
    };
    let (reply, gate) = Reply::chunks(["first ", "second"]).pause_before(2);
    pair.backend.push(reply);
    let queued = pair
        .create(0, &json!({"model": "m", "input": "bg", "background": true}))
        .await;
    assert_eq!(queued["status"], "queued");
    let path = format!("/v1/responses/{}", id(&queued));
    gate.reached().await;
    // Host 1 sees it running, and streams its events so far and the rest.
    let (_, running) = pair.get(1, &path).await;
    assert_eq!(running["status"], "in_progress", "{running}");
    let url = format!("{}{path}?stream=true", pair.hosts[1].url());
    let follow = pair.client.get(url).send();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        gate.release();
    };
    let (followed, ()) = tokio::join!(follow, release);
    let text = followed.unwrap().text().await.unwrap();
    let events: Vec<(String, String)> = common::parse_sse(&text);
    assert_eq!(events[0].0, "response.created");
    let (last, data) = &events[events.len() - 2];
    assert_eq!(last, "response.completed", "{text}");
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(common::output_text(&done["response"]), "first second");

    // A second one, cancelled from host 1 while host 0 runs it.
    let pieces: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    pair.backend
        .push(Reply::chunks(pieces).delay_between_chunks(std::time::Duration::from_millis(100)));
    let queued = pair
        .create(
            0,
            &json!({"model": "m", "input": "long", "background": true}),
        )
        .await;
    let path = format!("/v1/responses/{}", id(&queued));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let url = format!("{}{path}/cancel", pair.hosts[1].url());
    let (status, cancelled) = send(pair.client.post(url).json(&json!({}))).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    let mut last = Value::Null;
    for _ in 0..100 {
        last = pair.get(1, &path).await.1;
        if last["status"] != "in_progress" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "cancelled", "{last}");
    assert!(!common::output_text(&last).contains("w39"));
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_host_is_seen_on_the_other_at_once() {
    let Some(pair) = Pair::start("a_delete_on_one_host_is_seen_on_the_other_at_once").await else {
        return;
    };
    let response = pair.create(0, &request("short-lived", None)).await;
    let path = format!("/v1/responses/{}", id(&response));
    let (status, _) = pair.get(1, &path).await;
    assert_eq!(status, 200);

    let (status, deleted) = pair.delete(1, &path).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    for host in [0, 1] {
        let (status, body) = pair.get(host, &path).await;
        assert_eq!(status, 404, "host {host}: {body}");
        let continuation = request("again", Some(&id(&response)));
        let url = format!("{}/v1/responses", pair.hosts[host].url());
        let (status, body) = send(pair.client.post(url).json(&continuation)).await;
        assert_eq!(status, 404, "host {host}: {body}");
    }
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_reads_the_same_on_both_hosts() {
    let Some(pair) = Pair::start("a_stored_response_reads_the_same_on_both_hosts").await else {
        return;
    };
    let created = pair
        .create(
            0,
            &json!({"model": "m", "input": "keep me", "metadata": {"k": "v"}}),
        )
        .await;
    let path = format!("/v1/responses/{}", id(&created));
    let (status_a, on_a) = pair.get(0, &path).await;
    let (status_b, on_b) = pair.get(1, &path).await;
    assert_eq!((status_a, status_b), (200, 200));
    assert_eq!(on_b, on_a, "the identical object on both hosts");
    assert_eq!(on_b["id"], created["id"]);
    assert_eq!(on_b["output"], created["output"]);
    assert_eq!(on_b["metadata"], json!({"k": "v"}));

    let items = format!("{path}/input_items");
    let (_, items_a) = pair.get(0, &items).await;
    let (_, items_b) = pair.get(1, &items).await;
    assert_eq!(items_b, items_a);
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_makes_the_same_key_value_calls_as_on_sqlite() {
    let Some(pair) =
        Pair::start("a_continuation_makes_the_same_key_value_calls_as_on_sqlite").await
    else {
        return;
    };
    let sqlite = common::Harness::start().await;

    let mut counts: Vec<KvStats> = Vec::new();
    // On Redis: create on host A, continue on host B.
    let first = pair.create(0, &request("one", None)).await;
    let before = pair.hosts[1].kv_stats();
    pair.create(1, &request("two", Some(&id(&first)))).await;
    counts.push(pair.hosts[1].kv_stats().since(&before));
    // On SQLite: the same two requests on one host.
    let (_, first) = sqlite.post("/v1/responses", &request("one", None)).await;
    let before = sqlite.server.kv_stats();
    let (status, _) = sqlite
        .post("/v1/responses", &request("two", Some(&id(&first))))
        .await;
    assert_eq!(status, 200);
    counts.push(sqlite.server.kv_stats().since(&before));

    assert!(counts[0].total() > 0);
    assert_eq!(
        counts[0], counts[1],
        "Redis: {} / SQLite: {}",
        counts[0], counts[1]
    );
    pair.shutdown().await;
}
