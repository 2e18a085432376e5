//! `GET /healthz` and `GET /readyz`, answered by the host itself: they
//! never reach the component and take no instance, so they answer even
//! when every instance is busy.
//!
//! - `/healthz`: 200 `{"status":"ok"}` whenever the process serves.
//! - `/readyz`: 200 once the component is loaded and the key-value store
//!   answers a read (a point read through the host's store, not counted as
//!   a guest call); else 503 with the reason. `?backend=true` also asks
//!   every backend, `backend_url` (check `backend`) and each route of
//!   `backends` (checks `backends[0]`, ...), at once, for `GET {url}/models`:
//!   any answer below 500 within 2 s counts.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::config::ConfigValues;
use crate::engine::Runtime;
use crate::outbound::{self, PROBE_TIMEOUT};
use crate::route::Route;

/// The answer to a request for `route` (`Healthz` or `Readyz`) with `query`,
/// `runtime` being the loaded component, if it has loaded.
pub(crate) async fn answer(
    route: Route,
    method: &Method,
    query: Option<&str>,
    runtime: Option<Arc<Runtime>>,
) -> Response<HyperOutgoingBody> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut response = crate::http::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "Use GET.",
            Some("method_not_allowed"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match route {
        Route::Readyz => readiness(runtime.as_deref(), wants_backend(query)).await,
        _ => json(StatusCode::OK, &json!({"status": "ok"})),
    }
}

/// Whether the query asks for the backend check: `backend=true` (or `1`).
fn wants_backend(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|pair| matches!(pair, "backend=true" | "backend=1"))
}

/// The readiness answer: every check by name, `ok` or what failed.
async fn readiness(runtime: Option<&Runtime>, backend: bool) -> Response<HyperOutgoingBody> {
    let mut checks = Map::new();
    let mut failures = Vec::new();
    let mut check = |name: &str, outcome: Result<(), String>| {
        let shown = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(reason) => {
                failures.push(format!("{name}: {reason}"));
                reason
            }
        };
        checks.insert(name.to_owned(), Value::String(shown));
    };
    match runtime {
        None => check("component", Err("the component is loading".to_owned())),
        Some(runtime) => {
            check("component", Ok(()));
            check("store", store_answers(runtime).await);
            if backend {
                for (name, outcome) in backends_answer(runtime.config()).await {
                    check(&name, outcome);
                }
            }
        }
    }
    if failures.is_empty() {
        json(StatusCode::OK, &json!({"status": "ok", "checks": checks}))
    } else {
        let body =
            json!({"status": "unavailable", "reason": failures.join("; "), "checks": checks});
        json(StatusCode::SERVICE_UNAVAILABLE, &body)
    }
}

async fn store_answers(runtime: &Runtime) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, runtime.keyvalue().probe()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("the key-value store failed a read: {err}")),
        Err(_elapsed) => Err(format!(
            "the key-value store did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Every backend's check, by name, asked at once.
async fn backends_answer(config: &ConfigValues) -> Vec<(String, Result<(), String>)> {
    let backends = match backends(config) {
        Ok(backends) => backends,
        Err(reason) => return vec![("backend".to_owned(), Err(reason))],
    };
    let asked = backends.iter().map(|(_, url)| backend_answers(url));
    let outcomes = futures_util::future::join_all(asked).await;
    backends
        .into_iter()
        .map(|(name, _)| name)
        .zip(outcomes)
        .collect()
}

/// The backends of the configuration, named as their checks are:
/// `backend_url` as `backend`, the routes of `backends` as `backends[i]`.
fn backends(config: &ConfigValues) -> Result<Vec<(String, String)>, String> {
    let mut backends = Vec::new();
    if let Some(url) = config
        .get("backend_url")
        .filter(|url| !url.trim().is_empty())
    {
        backends.push(("backend".to_owned(), url.trim().to_owned()));
    }
    if let Some(routes) = config.get("backends").filter(|r| !r.trim().is_empty()) {
        let routes: Vec<Value> = serde_json::from_str(routes)
            .map_err(|e| format!("backends is not a JSON array of routes: {e}"))?;
        for (i, route) in routes.iter().enumerate() {
            let url = route["url"]
                .as_str()
                .ok_or_else(|| format!("backends[{i}] has no url"))?;
            backends.push((format!("backends[{i}]"), url.trim().to_owned()));
        }
    }
    if backends.is_empty() {
        return Err("neither backend_url nor backends is set".to_owned());
    }
    Ok(backends)
}

async fn backend_answers(base: &str) -> Result<(), String> {
    let url = format!("{}/models", base.trim_end_matches('/'));
    match outbound::probe(&url).await {
        Ok(status) if status < 500 => Ok(()),
        Ok(status) => Err(format!("the backend answered GET /models with {status}")),
        Err(reason) => Err(format!("the backend did not answer GET /models: {reason}")),
    }
}

/// A JSON response that caches must not keep.
fn json(status: StatusCode, body: &Value) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response<HyperOutgoingBody>) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn the_backend_check_is_asked_for_in_the_query() {
        assert!(wants_backend(Some("backend=true")));
        assert!(wants_backend(Some("x=1&backend=1")));
        for query in [
            None,
            Some(""),
            Some("backend=false"),
            Some("backend"),
            Some("nobackend=true"),
        ] {
            assert!(!wants_backend(query), "{query:?}");
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_waits_for_the_component() {
        let healthy = answer(Route::Healthz, &Method::GET, None, None).await;
        assert_eq!(healthy.status(), 200);
        assert_eq!(body(healthy).await, json!({"status": "ok"}));

        let loading = answer(Route::Readyz, &Method::GET, None, None).await;
        assert_eq!(loading.status(), 503);
        assert_eq!(loading.headers()[CACHE_CONTROL], "no-store");
        let loading = body(loading).await;
        assert_eq!(loading["status"], "unavailable");
        assert_eq!(loading["checks"]["component"], "the component is loading");
        assert!(loading["reason"].as_str().unwrap().contains("loading"));
    }

    #[test]
    fn every_configured_backend_is_asked() {
        let config = |pairs: &[(&str, &str)]| {
            ConfigValues::new(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let both = config(&[
            ("backend_url", "http://127.0.0.1:1/v1"),
            (
                "backends",
                r#"[{"models": "a*", "url": "http://127.0.0.1:2/v1"}]"#,
            ),
        ]);
        assert_eq!(
            backends(&both).expect("backends"),
            [
                ("backend".to_owned(), "http://127.0.0.1:1/v1".to_owned()),
                ("backends[0]".to_owned(), "http://127.0.0.1:2/v1".to_owned()),
            ]
        );
        let routes_only = config(&[
            ("backend_url", ""),
            (
                "backends",
                r#"[{"models": "a*", "url": "http://127.0.0.1:2/v1"}]"#,
            ),
        ]);
        assert_eq!(backends(&routes_only).expect("backends").len(), 1);
        assert!(backends(&config(&[])).is_err());
        assert!(backends(&config(&[("backends", "[{}]")])).is_err());
        assert!(backends(&config(&[("backends", "nope")])).is_err());
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        let response = answer(Route::Healthz, &Method::POST, None, None).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
