//! Usage per tenant through the built component: totals by tenant, model
//! and day read back by an operator (`GET /v1/usage`), and the per-tenant
//! limits (`tenant_requests_per_minute`, `tenant_tokens_per_day`) answered
//! with 429, `Retry-After` and OpenAI's error shape.

mod common;

use std::time::Duration;

use common::Harness;
use scripted_backend::Reply;
use serde_json::{json, Value};

const KEYS: &str = "team-a:sk-a,team-b:sk-b";

async fn create(h: &Harness, key: &str, model: &str) -> reqwest::Response {
    h.client
        .post(h.url("/v1/responses"))
        .bearer_auth(key)
        .json(&json!({"model": model, "input": "hi"}))
        .send()
        .await
        .expect("the host answers")
}

/// `GET /v1/usage` with the admin key, polled until `rows` rows show (the
/// totals are added after each answer).
async fn usage(h: &Harness, rows: usize) -> Vec<Value> {
    for _ in 0..50 {
        let response = h
            .client
            .get(h.url("/v1/usage?days=2"))
            .bearer_auth("admin-1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let data = body["data"].as_array().unwrap().clone();
        let requests: u64 = data.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        if data.len() == rows && requests == 4 {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the usage did not show");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_counted_per_tenant_and_model() {
    let h = Harness::with_variables(&[
        ("api_keys", KEYS),
        ("admin_key", "admin-1"),
        ("usage_tracking", "true"),
    ])
    .await;
    h.backend.set_default(Reply::text("ok").usage(10, 5));
    for (key, model) in [
        ("sk-a", "m1"),
        ("sk-a", "m1"),
        ("sk-a", "m2"),
        ("sk-b", "m1"),
    ] {
        assert_eq!(create(&h, key, model).await.status(), 200);
    }
    let rows = usage(&h, 3).await;
    let mut seen: Vec<(String, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_owned(),
                r["requests"].as_u64().unwrap(),
                r["input_tokens"].as_u64().unwrap(),
                r["output_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("m1".to_owned(), 1, 10, 5),
            ("m1".to_owned(), 2, 20, 10),
            ("m2".to_owned(), 1, 10, 5)
        ]
    );
    // Tenants appear by their ids, never their keys.
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains("sk-a") && !text.contains("sk-b"));
    let tenants: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants.len(), 2);
    assert!(rows.iter().all(|r| r["date"].as_str().unwrap().len() == 10));

    // Operators only.
    let refused = h
        .client
        .get(h.url("/v1/usage"))
        .bearer_auth("sk-a")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(refused.status().as_u16(), 401 | 404),
        "{}",
        refused.status()
    );
    let bad = h
        .client
        .get(h.url("/v1/usage?days=99"))
        .bearer_auth("admin-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn assert_limited(response: reqwest::Response, kind: &str) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Rate limit"));
    retry_after
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_429_with_retry_after() {
    let h =
        Harness::with_variables(&[("api_keys", KEYS), ("tenant_requests_per_minute", "2")]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = create(&h, "sk-a", "m").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry = assert_limited(response, "requests").await;
            assert!((1..=60).contains(&retry), "{retry}");
        }
    }
    // The minute may turn between two requests; at most two get through
    // in one.
    assert!(statuses[..2].contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&429) || statuses[..2].contains(&429),
        "{statuses:?}"
    );
    // Another tenant has its own count.
    assert_eq!(create(&h, "sk-b", "m").await.status(), 200);

    let h = Harness::with_variables(&[("api_keys", KEYS), ("tenant_tokens_per_day", "20")]).await;
    h.backend.set_default(Reply::text("ok").usage(25, 5));
    assert_eq!(create(&h, "sk-a", "m").await.status(), 200);
    // The 30 tokens count once the answer is out.
    let mut limited = None;
    for _ in 0..50 {
        let response = create(&h, "sk-a", "m").await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retry = assert_limited(limited.expect("a 429"), "tokens").await;
    assert!((1..=86_400).contains(&retry));
    assert_eq!(create(&h, "sk-b", "m").await.status(), 200);
}
