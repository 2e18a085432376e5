//! The body of `POST /v1/responses`, parsed leniently and validated.
//!
//! Unknown fields are ignored. A field of the wrong shape is a 400 whose
//! `param` names the field (`input[2].content`, `temperature`, ...).

use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::items::Item;
use super::limits::{self, MAX_INPUT_ITEMS, MAX_METADATA_PAIRS, MAX_TOOLS};
use crate::error::ApiError;

/// A create request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// At most [`MAX_INPUT_ITEMS`] items, read one by one straight from
    /// the body, so an error names the failing item (`input[3].content`)
    /// and a list past the limit is counted, not kept.
    #[serde(default, deserialize_with = "input")]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// The conversation object this response belongs to: its id, or
    /// `{"id": ...}`.
    #[serde(default, deserialize_with = "super::conversation::reference")]
    pub conversation: Option<String>,
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
    /// At most [`MAX_TOOLS`]; a longer list is counted, not kept.
    #[serde(default, deserialize_with = "tools")]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    /// Pairs past the 17th are skipped, not kept: 17 are enough to be
    /// refused.
    #[serde(default, deserialize_with = "metadata")]
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
    /// `[{"type": "compaction", "compact_threshold": N}]`.
    #[serde(default)]
    pub context_management: Option<Vec<Value>>,
    #[serde(default)]
    pub background: Option<bool>,
    /// `false`: a warm-up (WebSocket mode's, which clients also send over
    /// HTTP): the response completes at once with no output and no model
    /// call, and later turns chain from it.
    #[serde(default)]
    pub generate: Option<bool>,
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
    ///
    /// The body is read straight into the request, without a JSON tree of
    /// the whole document first: fields this server does not know are
    /// skipped, and lists past their limit are counted, without being kept.
    /// A body with more JSON values than [`limits::json_budget`] allows is
    /// refused before it is parsed, which bounds what the fields kept as
    /// JSON (`tools`, `text`, ...) can cost.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: CreateRequest = parse_object(body)?;
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
        if let Some(id) = &self.conversation {
            if self.previous_response_id.is_some() {
                return Err(ApiError::invalid_param(
                    "conversation",
                    "'conversation' cannot be used with 'previous_response_id'.",
                ));
            }
            limits::key_id("conversation", id)?;
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
        if let Some(id) = &self.previous_response_id {
            limits::key_id("previous_response_id", id)?;
        }
        if let Some(Input::Items(items)) = &self.input {
            validate_ids("input", items)?;
        }
        for (i, entry) in self.context_management.iter().flatten().enumerate() {
            if entry.get("type").and_then(Value::as_str) != Some("compaction") {
                return Err(ApiError::invalid_param(
                    &format!("context_management[{i}].type"),
                    "The only context management type is 'compaction'.",
                ));
            }
            let threshold = entry.get("compact_threshold").filter(|t| !t.is_null());
            if threshold.is_some_and(|t| t.as_u64().is_none_or(|n| n == 0)) {
                return Err(ApiError::invalid_param(
                    &format!("context_management[{i}].compact_threshold"),
                    "'compact_threshold' must be a positive number of tokens.",
                ));
            }
        }
        Ok(())
    }

    /// The `compact_threshold` of a `compaction` entry of
    /// `context_management`: past it, the history is compacted first.
    pub fn compact_threshold(&self) -> Option<u64> {
        self.context_management
            .iter()
            .flatten()
            .find(|entry| entry["type"] == "compaction")
            .and_then(|entry| entry["compact_threshold"].as_u64())
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

/// A request body that must be a JSON object, read straight into `T`
/// within [`limits::json_budget`]; a field of the wrong shape is a 400
/// naming it.
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Serde would take an array as the fields in order: only an
        // object is a request.
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Err(e) => invalid_json(e),
            Ok(_) => ApiError::invalid_request("The request body must be a JSON object."),
        });
    }
    limits::json_budget(body)?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(field_error)?;
    json.end().map_err(invalid_json)?;
    Ok(value)
}

/// A field of the wrong shape, named by its path; a syntax error anywhere
/// is `invalid_json`.
fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let error = e.into_inner();
    if error.classify() != serde_json::error::Category::Data {
        return invalid_json(error);
    }
    let message = error.to_string();
    if message.contains(limits::ARRAY_TOO_LONG) {
        // The limit's own message, without serde's position.
        let message = message
            .rsplit_once(" at line ")
            .map_or(&*message, |(m, _)| m);
        return ApiError::invalid_request(message)
            .with_param(path)
            .with_code("array_above_max_length");
    }
    match path.as_str() {
        "." => ApiError::invalid_request(format!("Invalid request: {message}")),
        _ => ApiError::invalid_param(&path, format!("Invalid value for '{path}': {message}")),
    }
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::invalid_request(format!(
        "We could not parse the JSON body of your request: {e}"
    ))
    .with_code("invalid_json")
}

/// The ids of input items become key-value keys (the item index) or are
/// looked up as keys (`item_reference`); call ids are only bounded.
pub(crate) fn validate_ids(param: &str, items: &[Item]) -> Result<(), ApiError> {
    for (i, item) in items.iter().enumerate() {
        if let Some(id) = item.id() {
            limits::key_id(&format!("{param}[{i}].id"), id)?;
        }
        if let Some(call_id) = item.call_id() {
            limits::call_id(&format!("{param}[{i}].call_id"), call_id)?;
        }
    }
    Ok(())
}

/// `input`: a string, or a list of at most [`MAX_INPUT_ITEMS`] items.
fn input<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Input>, D::Error> {
    deserializer.deserialize_any(InputVisitor)
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = Option<Input>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or a list of items")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(Input::Text(text.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(Input::Text(text)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        bounded(seq, "input", MAX_INPUT_ITEMS).map(|items| Some(Input::Items(items)))
    }
}

/// `tools`: a list of at most [`MAX_TOOLS`] tools (checked by the chat
/// translation), or `null`.
fn tools<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<Value>>, D::Error> {
    optional_list(deserializer, "tools", MAX_TOOLS)
}

/// A list of at most `max` elements (see [`bounded`]), or `null`.
pub(crate) fn optional_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    param: &'static str,
    max: usize,
) -> Result<Option<Vec<T>>, D::Error> {
    deserializer.deserialize_option(ListVisitor {
        param,
        max,
        element: std::marker::PhantomData,
    })
}

struct ListVisitor<T> {
    param: &'static str,
    max: usize,
    element: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a list of {}", self.param)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        bounded(seq, self.param, self.max).map(Some)
    }
}

/// `metadata`: an object, of which only the first
/// [`MAX_METADATA_PAIRS`] + 1 pairs are kept (checked by validation).
pub(crate) fn metadata<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    deserializer.deserialize_option(MetadataVisitor)
}

struct MetadataVisitor;

impl<'de> Visitor<'de> for MetadataVisitor {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.len() > MAX_METADATA_PAIRS {
                map.next_value::<IgnoredAny>()?;
            } else {
                out.insert(key, map.next_value()?);
            }
        }
        Ok(Some(out))
    }
}

/// The elements of a list of at most `max`; past it, the rest is counted
/// without being kept and the list is an error that says its length.
pub(crate) fn bounded<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
    mut seq: A,
    param: &str,
    max: usize,
) -> Result<Vec<T>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
    while let Some(element) = seq.next_element()? {
        if out.len() == max {
            let mut len = max + 1;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                len += 1;
            }
            return Err(A::Error::custom(limits::array_too_long(param, max, len)));
        }
        out.push(element);
    }
    Ok(out)
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

/// At most [`MAX_METADATA_PAIRS`] pairs, keys up to 64 characters, string
/// values up to 512.
pub(crate) fn validate_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_PAIRS {
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
    fn only_an_object_is_a_request() {
        for body in [r#"["m","x"]"#, "5", r#""x""#, "null", " [] "] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(
                err.message, "The request body must be a JSON object.",
                "{body}"
            );
        }
        for body in [
            "",
            "[",
            "{",
            r#"{"model":"m","input":"x"} trailing"#,
            "{}{}",
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code.as_deref(), Some("invalid_json"), "{body}");
        }
    }

    #[test]
    fn item_errors_name_the_field() {
        let err = parse(r#"{"model":"m","input":[{"role":"user","content":"x"},{"type":"message","role":"user","content":5}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input[1].content"));
        let err = parse(r#"{"model":"m","input":[{"type":"function_call_output"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input[0]"));
    }

    #[test]
    fn lists_past_their_limits() {
        let item = r#"{"role":"user","content":"x"}"#;
        let items = |n: usize| vec![item; n].join(",");
        let body = format!(r#"{{"model":"m","input":[{}]}}"#, items(MAX_INPUT_ITEMS));
        assert!(parse(&body).is_ok());
        let body = format!(
            r#"{{"model":"m","input":[{}]}}"#,
            items(MAX_INPUT_ITEMS + 5)
        );
        let err = parse(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
        assert_eq!(err.code.as_deref(), Some("array_above_max_length"));
        assert_eq!(
            err.message,
            limits::array_too_long("input", MAX_INPUT_ITEMS, MAX_INPUT_ITEMS + 5)
        );
        let tool = r#"{"type":"function","name":"f"}"#;
        let tools = vec![tool; MAX_TOOLS + 1].join(",");
        let body = format!(r#"{{"model":"m","input":"x","tools":[{tools}]}}"#);
        let err = parse(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tools"));
        assert_eq!(err.code.as_deref(), Some("array_above_max_length"));
        let tools = vec![tool; MAX_TOOLS].join(",");
        let body = format!(r#"{{"model":"m","input":"x","tools":[{tools}]}}"#);
        assert_eq!(parse(&body).unwrap().tools.unwrap().len(), MAX_TOOLS);
        let body = r#"{"model":"m","input":"x","tools":null,"metadata":null}"#;
        assert!(parse(body).unwrap().tools.is_none());
    }

    #[test]
    fn ids_are_bounded_and_key_safe() {
        let long = "a".repeat(limits::MAX_ID_BYTES + 1);
        let cases = [
            (
                format!(r#"[{{"type":"message","id":"{long}","role":"user","content":"x"}}]"#),
                "input[0].id",
                "string_above_max_length",
            ),
            (
                r#"[{"role":"user","content":"x"},{"type":"item_reference","id":"a/b"}]"#.into(),
                "input[1].id",
                "invalid_value",
            ),
            (
                r#"[{"type":"web_search_call","id":"ws\u0000"}]"#.into(),
                "input[0].id",
                "invalid_value",
            ),
            (
                format!(
                    r#"[{{"type":"function_call_output","call_id":"{}","output":"o"}}]"#,
                    "c".repeat(limits::MAX_CALL_ID_BYTES + 1)
                ),
                "input[0].call_id",
                "string_above_max_length",
            ),
        ];
        for (input, param, code) in cases {
            let err = parse(&format!(r#"{{"model":"m","input":{input}}}"#)).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{input}");
            assert_eq!(err.code.as_deref(), Some(code), "{input}");
        }
        let err = parse(&format!(
            r#"{{"model":"m","input":"x","previous_response_id":"{long}"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("previous_response_id"));
        // Ids from other systems (colons, dots, 100 bytes) are taken.
        let id = format!("toolu_01:{}", "x.".repeat(45));
        let body = format!(
            r#"{{"model":"m","input":[{{"type":"function_call","id":"{id}","call_id":"{id}","name":"f","arguments":"{{}}"}}]}}"#
        );
        assert!(parse(&body).is_ok());
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
        // A long object is refused without being kept whole.
        let pairs: Vec<String> = (0..10_000).map(|i| format!(r#""k{i}":"v""#)).collect();
        let body = format!(
            r#"{{"model":"m","input":"x","metadata":{{{}}}}}"#,
            pairs.join(",")
        );
        let err = parse(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("metadata"));
    }
}
