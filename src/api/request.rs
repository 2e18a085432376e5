//! The body of `POST /v1/responses`, parsed leniently and validated.
//!
//! Unknown fields are ignored. A field of the wrong shape is a 400 whose
//! `param` names the field (`input[2].content`, `temperature`, ...).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::items::Item;
use crate::error::ApiError;

/// A create request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// Parsed apart by [`CreateRequest::parse`], to name the failing item.
    #[serde(skip)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub max_tool_calls: Option<u64>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub background: Option<bool>,
}

/// `input`: a string, or a list of items.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

impl Input {
    /// The input as a list of items.
    pub fn into_items(self) -> Vec<Item> {
        match self {
            Input::Text(text) => vec![Item::user_text(text)],
            Input::Items(items) => items,
        }
    }

    /// Whether the input refers to stored items by id.
    pub fn has_references(&self) -> bool {
        match self {
            Input::Text(_) => false,
            Input::Items(items) => items.iter().any(|i| matches!(i, Item::ItemReference(_))),
        }
    }
}

impl CreateRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid_request(format!(
                "We could not parse the JSON body of your request: {e}"
            ))
            .with_code("invalid_json")
        })?;
        if !value.is_object() {
            return Err(ApiError::invalid_request(
                "The request body must be a JSON object.",
            ));
        }
        let mut value = value;
        let input = value.as_object_mut().and_then(|map| map.remove("input"));
        let mut request: CreateRequest = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ApiError::invalid_param(&path, format!("Invalid value for '{path}': {}", e.inner()))
        })?;
        request.input = parse_input(input)?;
        request.validate()?;
        Ok(request)
    }

    fn validate(&self) -> Result<(), ApiError> {
        match &self.model {
            Some(model) if !model.is_empty() => {}
            _ => {
                return Err(
                    ApiError::invalid_request("Missing required parameter: 'model'.")
                        .with_param("model")
                        .with_code("missing_required_parameter"),
                )
            }
        }
        if self.input.is_none() && self.previous_response_id.is_none() {
            return Err(
                ApiError::invalid_request("Missing required parameter: 'input'.")
                    .with_param("input")
                    .with_code("missing_required_parameter"),
            );
        }
        range("temperature", self.temperature, 0.0, 2.0)?;
        range("top_p", self.top_p, 0.0, 1.0)?;
        range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if let Some(n) = self.top_logprobs {
            if n > 20 {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    "'top_logprobs' must be between 0 and 20.",
                ));
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err(ApiError::invalid_param(
                "max_output_tokens",
                "'max_output_tokens' must be at least 1.",
            ));
        }
        if let Some(metadata) = &self.metadata {
            validate_metadata(metadata)?;
        }
        Ok(())
    }

    /// Whether the response is kept (default true).
    pub fn store(&self) -> bool {
        self.store.unwrap_or(true)
    }

    /// Whether the answer is an event stream.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The model, validated to be present by [`CreateRequest::parse`].
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_default()
    }
}

/// `input`: a string or a list of items; errors name the item.
fn parse_input(input: Option<Value>) -> Result<Option<Input>, ApiError> {
    match input {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(Input::Text(text))),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_value::<Item>(item).map_err(|e| {
                    let param = format!("input[{i}]");
                    ApiError::invalid_param(&param, format!("Invalid value for '{param}': {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| Some(Input::Items(items))),
        Some(_) => Err(ApiError::invalid_param(
            "input",
            "'input' must be a string or a list of items.",
        )),
    }
}

fn range(param: &str, value: Option<f64>, min: f64, max: f64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(ApiError::invalid_param(
            param,
            format!("'{param}' must be between {min} and {max}, got {v}."),
        )),
        _ => Ok(()),
    }
}

/// At most 16 pairs, keys up to 64 characters, string values up to 512.
fn validate_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    if metadata.len() > 16 {
        return Err(ApiError::invalid_param(
            "metadata",
            "'metadata' can have at most 16 key-value pairs.",
        ));
    }
    for (key, value) in metadata {
        if key.chars().count() > 64 {
            return Err(ApiError::invalid_param(
                "metadata",
                format!("Metadata key '{key}' is longer than 64 characters."),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() <= 512 => {}
            Value::String(_) => {
                return Err(ApiError::invalid_param(
                    "metadata",
                    format!("Metadata value of '{key}' is longer than 512 characters."),
                ))
            }
            _ => {
                return Err(ApiError::invalid_param(
                    "metadata",
                    format!("Metadata value of '{key}' must be a string."),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CreateRequest, ApiError> {
        CreateRequest::parse(body.as_bytes())
    }

    #[test]
    fn string_input() {
        let r = parse(r#"{"model":"m","input":"hi","unknown_field":{"x":1}}"#).unwrap();
        assert_eq!(
            r.input.clone().unwrap().into_items(),
            vec![Item::user_text("hi")]
        );
        assert!(r.store());
        assert!(!r.stream());
    }

    #[test]
    fn malformed_json_is_400() {
        let err = parse("{not json").unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.code.as_deref(), Some("invalid_json"));
    }

    #[test]
    fn wrong_field_type_names_param() {
        let err = parse(r#"{"model":"m","input":"x","temperature":"hot"}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"));
        let err = parse(r#"{"model":"m","input":[{"role":"user","content":5}]}"#).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.param.unwrap().starts_with("input"));
        let err =
            parse(r#"{"model":"m","input":[{"role":"user","content":"ok"},{"type":"message"}]}"#)
                .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input[1]"));
        let err = parse(r#"{"model":"m","input":7}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
    }

    #[test]
    fn missing_model_and_out_of_range() {
        assert_eq!(
            parse(r#"{"input":"x"}"#).unwrap_err().param.as_deref(),
            Some("model")
        );
        assert_eq!(
            parse(r#"{"model":"m","input":"x","top_p":3}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("top_p")
        );
    }

    #[test]
    fn metadata_limits() {
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate_metadata(&many).is_err());
        let long_key: Map<String, Value> =
            [("k".repeat(65), Value::from("v"))].into_iter().collect();
        assert!(validate_metadata(&long_key).is_err());
        let long_value: Map<String, Value> = [("k".to_owned(), Value::from("v".repeat(513)))]
            .into_iter()
            .collect();
        assert!(validate_metadata(&long_value).is_err());
        let ok: Map<String, Value> = [("k".to_owned(), Value::from("v"))].into_iter().collect();
        assert!(validate_metadata(&ok).is_ok());
    }
}
