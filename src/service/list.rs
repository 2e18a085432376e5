//! Listing: `GET /v1/responses/{id}/input_items`, one page at a time with
//! OpenAI's cursors.

use serde_json::{json, Value};

use crate::api::items::Item;
use crate::error::ApiError;

/// Sort order of listed items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// The query of a list: `limit` (1 to 100, default 20), `order` (default
/// `desc`), and the `after` / `before` cursors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub order: Option<Order>,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// One page of a list, OpenAI style.
pub fn page(items: Vec<Item>, query: &ListQuery) -> Result<Value, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param(
            "limit",
            format!("'limit' must be between 1 and 100, got {limit}."),
        ));
    }
    let mut items = items;
    if query.order.unwrap_or_default() == Order::Desc {
        items.reverse();
    }
    let position = |cursor: &str, param: &str| {
        items
            .iter()
            .position(|item| item.id() == Some(cursor))
            .ok_or_else(|| {
                ApiError::invalid_param(param, format!("No item with id '{cursor}' in this list."))
            })
    };
    let start = match &query.after {
        Some(after) => position(after, "after")? + 1,
        None => 0,
    };
    let end = match &query.before {
        Some(before) => position(before, "before")?,
        None => items.len(),
    };
    let window: Vec<Item> = items
        .get(start..end.max(start))
        .unwrap_or_default()
        .iter()
        .take(limit as usize)
        .cloned()
        .collect();
    let has_more = end.max(start) - start > window.len();
    let first_id = window.first().and_then(Item::id).map(str::to_owned);
    let last_id = window.last().and_then(Item::id).map(str::to_owned);
    Ok(json!({
        "object": "list",
        "data": window,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::with_id;

    fn items(n: usize) -> Vec<Item> {
        let (env, _) = crate::ids::fixed::env(0);
        (0..n)
            .map(|i| with_id(Item::user_text(format!("m{i}")), &env))
            .collect()
    }

    fn ids(page: &Value) -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn pages_default_desc_with_cursors() {
        let list = items(5);
        let first = page(
            list.clone(),
            &ListQuery {
                limit: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&first), ["m4", "m3"]);
        assert_eq!(first["has_more"], true);
        let after = first["last_id"].as_str().unwrap().to_owned();
        let second = page(
            list.clone(),
            &ListQuery {
                limit: Some(10),
                after: Some(after),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&second), ["m2", "m1", "m0"]);
        assert_eq!(second["has_more"], false);
        let asc = page(
            list.clone(),
            &ListQuery {
                order: Some(Order::Asc),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&asc), ["m0", "m1", "m2", "m3", "m4"]);
        assert_eq!(
            page(
                list,
                &ListQuery {
                    limit: Some(0),
                    ..Default::default()
                }
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("limit")
        );
    }
}
