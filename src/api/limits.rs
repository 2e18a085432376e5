//! The limits a request must keep, beyond what the Responses wire format
//! says: sizes that bound the work and memory one request can cost, and the
//! ids that become key-value keys.
//!
//! The body as a whole is bounded by the `max_request_bytes` setting
//! ([`crate::config::DEFAULT_MAX_REQUEST_BYTES`]), checked before it is read.
//! Inside it:
//!
//! | field | limit | error |
//! | --- | --- | --- |
//! | `input` | [`MAX_INPUT_ITEMS`] items | 400 `array_above_max_length`, `param: "input"` |
//! | `tools` | [`MAX_TOOLS`] tools | 400 `array_above_max_length`, `param: "tools"` |
//! | `input[i].id` (also of `item_reference`) | [`MAX_ID_BYTES`] bytes, no `/` or control characters | 400 `string_above_max_length` / `invalid_value` |
//! | `input[i].call_id` | [`MAX_CALL_ID_BYTES`] bytes | 400 `string_above_max_length` |
//! | `previous_response_id` | [`MAX_ID_BYTES`] bytes, no `/` or control characters | 400 on `previous_response_id` |
//! | `metadata` | [`MAX_METADATA_PAIRS`] pairs, keys ≤ 64 and values ≤ 512 characters | 400 on `metadata` |
//! | the whole body | [`MAX_JSON_OBJECTS`] objects, [`MAX_JSON_VALUES`] values | 400 `request_too_complex` |
//!
//! A response id in a path (`GET /v1/responses/{id}`) that breaks the id
//! rules cannot name a stored response: it is a 404, like any unknown id.

use crate::error::ApiError;

/// Most items one request's `input` may hold. Generous for an agent that
/// sends its whole history every turn (thousands of items fill any
/// model's context long before this), small enough that one request cannot
/// make the server store and index an unbounded number of items.
pub const MAX_INPUT_ITEMS: usize = 10_000;

/// Most entries of `tools`: OpenAI's limit, so every request OpenAI takes
/// is taken here too.
pub const MAX_TOOLS: usize = 128;

/// Longest item id (`input[i].id`, `item_reference` ids) and
/// `previous_response_id`, in bytes. These become key-value keys
/// (`{tenant}/item/{id}`, `{tenant}/resp/{id}`), and real stores bound key
/// length (DynamoDB's sort keys and Cosmos DB's ids to about 1 KiB); the
/// server's own ids are 53 bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Longest `call_id`, in bytes. OpenAI allows 64, which rejects the ids of
/// some real tool runners (MCP bridges make 80 to 120-byte ids); call ids
/// are never keys, so this bound is only against abuse.
pub const MAX_CALL_ID_BYTES: usize = 256;

/// Most pairs of `metadata` (OpenAI's limit; keys up to 64 characters,
/// values up to 512).
pub const MAX_METADATA_PAIRS: usize = 16;

/// Most JSON objects in one request body. Fields this server passes on
/// as they are (`tools`, `text`, `tool_choice`, ...) are held as JSON
/// trees, where an object costs hundreds of bytes whatever its size:
/// without this bound, a 16 MiB body that is mostly `{"a":0},` takes an
/// instance past the 1 GiB of memory the host gives it, and it traps (a
/// 500). 10,000 input items with their content parts and 128 tools with
/// large schemas stay well under it.
pub const MAX_JSON_OBJECTS: usize = 200_000;

/// Most JSON values (array elements and object members) in one request
/// body: a tree value costs 32 bytes, so `[0,0,0,...]` bodies cost at most
/// 64 MiB.
pub const MAX_JSON_VALUES: usize = 2_000_000;

/// Counts the objects and values of a JSON text (approximately: `{`, and
/// `[`, `{` and `,` outside strings) and refuses one past
/// [`MAX_JSON_OBJECTS`] or [`MAX_JSON_VALUES`], before it is parsed. A
/// text that is not JSON is left to the parser to refuse.
pub fn json_budget(body: &[u8]) -> Result<(), ApiError> {
    let (mut objects, mut values) = (0usize, 0usize);
    let mut bytes = body.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'"' => {
                // Skip the string, escapes included.
                while let Some(&byte) = bytes.next() {
                    match byte {
                        b'"' => break,
                        b'\\' => {
                            bytes.next();
                        }
                        _ => {}
                    }
                }
            }
            b'{' => {
                objects += 1;
                values += 1;
            }
            b'[' | b',' => values += 1,
            _ => {}
        }
    }
    if objects > MAX_JSON_OBJECTS || values > MAX_JSON_VALUES {
        return Err(ApiError::invalid_request(format!(
            "The request is too complex: it has {objects} JSON objects and about {values} \
             values; at most {MAX_JSON_OBJECTS} objects and {MAX_JSON_VALUES} values are allowed."
        ))
        .with_code("request_too_complex"));
    }
    Ok(())
}

/// What the message of an array past its limit says.
pub const ARRAY_TOO_LONG: &str = "array too long. Expected an array with maximum length";

/// The message of an array that is too long, in OpenAI's words.
pub fn array_too_long(param: &str, max: usize, len: usize) -> String {
    format!(
        "Invalid '{param}': {ARRAY_TOO_LONG} {max}, but got an array with length {len} instead."
    )
}

/// 400 for a string past its limit, in OpenAI's words.
pub fn string_error(param: &str, max: usize, len: usize) -> ApiError {
    ApiError::invalid_request(format!(
        "Invalid '{param}': string too long. Expected a string with maximum length {max}, \
         but got a string with length {len} instead."
    ))
    .with_param(param)
    .with_code("string_above_max_length")
}

/// Checks an id that becomes (part of) a key-value key: at most
/// [`MAX_ID_BYTES`] bytes, without `/` (the keys' separator) or control
/// characters.
pub fn key_id(param: &str, id: &str) -> Result<(), ApiError> {
    if id.len() > MAX_ID_BYTES {
        return Err(string_error(param, MAX_ID_BYTES, id.len()));
    }
    if !is_key_safe(id) {
        return Err(ApiError::invalid_param(
            param,
            format!("Invalid '{param}': an id may not contain '/' or control characters."),
        ));
    }
    Ok(())
}

/// Checks a `call_id`: at most [`MAX_CALL_ID_BYTES`] bytes.
pub fn call_id(param: &str, id: &str) -> Result<(), ApiError> {
    match id.len() > MAX_CALL_ID_BYTES {
        true => Err(string_error(param, MAX_CALL_ID_BYTES, id.len())),
        false => Ok(()),
    }
}

/// A response id taken from a path or a typed call: one that breaks the id
/// rules names no stored response, so it is a 404 (with a bounded echo of
/// the id), never a store error.
pub fn response_id(id: &str) -> Result<&str, ApiError> {
    if id.len() <= MAX_ID_BYTES && is_key_safe(id) {
        return Ok(id);
    }
    let shown: String = id.chars().filter(|c| !c.is_control()).take(64).collect();
    Err(ApiError::not_found(format!(
        "Response with id '{shown}...' not found."
    )))
}

fn is_key_safe(id: &str) -> bool {
    !id.chars().any(|c| c == '/' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(key_id("id", "msg_abc-123").is_ok());
        assert!(key_id("id", &"a".repeat(MAX_ID_BYTES)).is_ok());
        let long = key_id("input[3].id", &"a".repeat(MAX_ID_BYTES + 1)).unwrap_err();
        assert_eq!(long.param.as_deref(), Some("input[3].id"));
        assert_eq!(long.code.as_deref(), Some("string_above_max_length"));
        for bad in ["a/b", "a\nb", "\0", "x\u{7f}"] {
            assert_eq!(key_id("id", bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn json_budget_counts_outside_strings() {
        assert!(json_budget(br#"{"a":[1,2,{"b":"{[,,,"}]}"#).is_ok());
        let objects = "{\"a\":0},".repeat(MAX_JSON_OBJECTS + 1);
        let error = json_budget(format!("[{objects}]").as_bytes()).unwrap_err();
        assert_eq!(error.code.as_deref(), Some("request_too_complex"));
        let values = "0,".repeat(MAX_JSON_VALUES + 1);
        assert!(json_budget(format!("[{values}]").as_bytes()).is_err());
        // Braces and commas inside strings, escaped quotes included, are text.
        let text = r#"{\",,,{{{"#.repeat(MAX_JSON_OBJECTS);
        assert!(json_budget(format!(r#"{{"input":"{text}"}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn path_ids_are_404() {
        assert_eq!(response_id("resp_1").unwrap(), "resp_1");
        let error = response_id(&"r".repeat(200_000)).unwrap_err();
        assert_eq!(error.status, 404);
        assert!(error.message.len() < 200);
        assert_eq!(response_id("a\u{0}b").unwrap_err().status, 404);
    }
}
