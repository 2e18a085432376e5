//! `GET /v1/models`: every backend's list, merged.

use serde_json::{json, Value};

use super::Service;
use crate::backend::call::log;
use crate::backend::routes::Route;
use crate::backend::{status_error, Backend, BodyStream, Method, Outbound};
use crate::error::ApiError;
use crate::store::Kv;

impl<K: Kv, B: Backend> Service<K, B> {
    /// Every backend's list, merged (the first backend to list a model id
    /// wins). A backend that fails is left out, unless every one fails.
    pub async fn models(&self, api_key: Option<&str>) -> Result<Value, ApiError> {
        self.tenant(api_key)?;
        let mut data: Vec<Value> = Vec::new();
        let mut failure = None;
        for route in self.settings.routes.iter() {
            match self.route_models(route, api_key).await {
                Ok(models) => {
                    for model in models {
                        let id = model.get("id").and_then(Value::as_str);
                        let known = data
                            .iter()
                            .any(|m| m.get("id").and_then(Value::as_str) == id);
                        if id.is_some() && !known {
                            data.push(model);
                        }
                    }
                }
                Err(error) => {
                    log(route, &format!("listing models failed: {}", error.message));
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) if data.is_empty() => Err(error),
            _ => Ok(json!({"object": "list", "data": data})),
        }
    }

    /// The models one backend lists; for a backend that serves only named
    /// models, only those it both names and lists.
    async fn route_models(
        &self,
        route: &Route,
        api_key: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let request = Outbound {
            method: Method::Get,
            url: route.url("models"),
            headers: route.headers(self.client_key(api_key)),
            body: None,
        };
        let mut answer = self.backend.send(request).await?;
        let bytes = answer.body.collect().await.map_err(|e| {
            ApiError::backend(format!("Reading the backend's model list failed: {e}"))
        })?;
        if !(200..300).contains(&answer.status) {
            return Err(status_error(answer.status, &bytes));
        }
        let list: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::backend(format!("The backend's model list is not JSON: {e}")))?;
        let models = list
            .get("data")
            .or_else(|| list.get("models"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(models
            .into_iter()
            .filter(|model| {
                model
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| route.serves(id))
            })
            .collect())
    }
}
