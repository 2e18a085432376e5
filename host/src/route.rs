//! Request paths and methods reduced to a few fixed names, for metric labels
//! and the request log: `/v1/responses/resp_123/input_items` is the route
//! `/v1/responses/{id}/input_items`, and any path the API does not serve is
//! `other`, so no client can grow the number of series.

use http::Method;

/// The routes the component serves (see `src/http.rs`), the host's own
/// health routes, and `other`. Paths are split as the component splits
/// them: surrounding `/` trimmed, then on every `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Responses,
    ResponsesCompact,
    Response,
    ResponseInputItems,
    ResponseCancel,
    Conversations,
    Conversation,
    ConversationItems,
    ConversationItem,
    Models,
    Usage,
    AdminRetention,
    AdminRetentionSweep,
    Healthz,
    Readyz,
    Other,
}

impl Route {
    /// Every route, in the order of their discriminants (which index
    /// per-route metric handles).
    pub(crate) const ALL: [Route; 16] = [
        Route::Responses,
        Route::ResponsesCompact,
        Route::Response,
        Route::ResponseInputItems,
        Route::ResponseCancel,
        Route::Conversations,
        Route::Conversation,
        Route::ConversationItems,
        Route::ConversationItem,
        Route::Models,
        Route::Usage,
        Route::AdminRetention,
        Route::AdminRetentionSweep,
        Route::Healthz,
        Route::Readyz,
        Route::Other,
    ];

    /// The route of `path` (without its query).
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/healthz" => return Route::Healthz,
            "/readyz" => return Route::Readyz,
            _ => {}
        }
        // The component's routes have at most five segments.
        let mut parts = [""; 5];
        let mut count = 0;
        for segment in path.trim_matches('/').split('/') {
            if count == parts.len() || segment.is_empty() {
                return Route::Other;
            }
            parts[count] = segment;
            count += 1;
        }
        match parts[..count] {
            ["v1", "responses"] => Route::Responses,
            ["v1", "responses", "compact"] => Route::ResponsesCompact,
            ["v1", "responses", _] => Route::Response,
            ["v1", "responses", _, "input_items"] => Route::ResponseInputItems,
            ["v1", "responses", _, "cancel"] => Route::ResponseCancel,
            ["v1", "conversations"] => Route::Conversations,
            ["v1", "conversations", _] => Route::Conversation,
            ["v1", "conversations", _, "items"] => Route::ConversationItems,
            ["v1", "conversations", _, "items", _] => Route::ConversationItem,
            ["v1", "models"] => Route::Models,
            ["v1", "usage"] => Route::Usage,
            ["v1", "admin", "retention"] => Route::AdminRetention,
            ["v1", "admin", "retention", "sweep"] => Route::AdminRetentionSweep,
            _ => Route::Other,
        }
    }

    /// The route's template, as metric label and log field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Route::Responses => "/v1/responses",
            Route::ResponsesCompact => "/v1/responses/compact",
            Route::Response => "/v1/responses/{id}",
            Route::ResponseInputItems => "/v1/responses/{id}/input_items",
            Route::ResponseCancel => "/v1/responses/{id}/cancel",
            Route::Conversations => "/v1/conversations",
            Route::Conversation => "/v1/conversations/{id}",
            Route::ConversationItems => "/v1/conversations/{id}/items",
            Route::ConversationItem => "/v1/conversations/{id}/items/{item_id}",
            Route::Models => "/v1/models",
            Route::Usage => "/v1/usage",
            Route::AdminRetention => "/v1/admin/retention",
            Route::AdminRetentionSweep => "/v1/admin/retention/sweep",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Other => "other",
        }
    }
}

/// The method as a metric label: the standard methods by name, anything
/// else `other`.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ if method.as_str() == crate::socket::TURN_METHOD => crate::socket::TURN_METHOD,
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates() {
        let cases = [
            ("/v1/responses", "/v1/responses"),
            ("/v1/responses/", "/v1/responses"),
            ("/v1/responses/compact", "/v1/responses/compact"),
            ("/v1/responses/resp_123", "/v1/responses/{id}"),
            (
                "/v1/responses/resp_123/input_items",
                "/v1/responses/{id}/input_items",
            ),
            ("/v1/responses/resp_123/cancel", "/v1/responses/{id}/cancel"),
            ("/v1/conversations", "/v1/conversations"),
            ("/v1/conversations/conv_1", "/v1/conversations/{id}"),
            (
                "/v1/conversations/conv_1/items",
                "/v1/conversations/{id}/items",
            ),
            (
                "/v1/conversations/conv_1/items/msg_2",
                "/v1/conversations/{id}/items/{item_id}",
            ),
            ("/v1/models", "/v1/models"),
            ("/v1/usage", "/v1/usage"),
            ("/v1/admin/retention", "/v1/admin/retention"),
            ("/v1/admin/retention/sweep", "/v1/admin/retention/sweep"),
            ("/healthz", "/healthz"),
            ("/readyz", "/readyz"),
        ];
        for (path, template) in cases {
            assert_eq!(Route::of(path).as_str(), template, "{path}");
        }
    }

    #[test]
    fn anything_else_is_other() {
        for path in [
            "/",
            "",
            "/v1",
            "/v2/responses",
            "/v1/responses/resp_1/input_items/x",
            "/v1/responses/resp_1/other",
            "/v1/responses//cancel",
            "/v1/conversations/c/items/i/x",
            "/v1/models/m",
            "/v1/usage/x",
            "/v1/admin",
            "/healthz/",
            "/readyz/x",
            "/no/such/path",
        ] {
            assert_eq!(Route::of(path), Route::Other, "{path}");
        }
    }

    #[test]
    fn all_lists_every_route_in_discriminant_order() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, index);
        }
        let names: std::collections::HashSet<_> = Route::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Route::ALL.len());
    }

    #[test]
    fn methods_outside_the_standard_ones_are_other() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let custom = Method::from_bytes(b"BREW").expect("method");
        assert_eq!(method_label(&custom), "other");
    }
}
