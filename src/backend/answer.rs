//! What a successful backend answer holds. A backend asked to stream
//! usually answers server-sent events, but some servers and proxies ignore
//! `stream: true` and answer one `application/json` completion (or a JSON
//! error with status 200); the content type decides, and the first bytes
//! when the content type says neither.

use crate::error::ApiError;

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream`: `data:` frames of chunks.
    EventStream,
    /// One JSON document: a `chat.completion`, or an error.
    Json,
    /// Anything else (an HTML page from a proxy, plain text...).
    Other,
}

impl Framing {
    /// The framing `content_type` announces, or `None` when it announces
    /// neither events nor JSON (missing, `text/plain`, ...).
    pub fn declared(content_type: Option<&str>) -> Option<Framing> {
        let essence = content_type?
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "text/event-stream" {
            Some(Framing::EventStream)
        } else if essence == "application/json" || essence.ends_with("+json") {
            Some(Framing::Json)
        } else {
            None
        }
    }

    /// The framing of a body that begins with `first`, when the content type
    /// did not say.
    pub fn sniffed(first: &[u8]) -> Framing {
        let text = first.trim_ascii_start();
        if text.starts_with(b"{") {
            Framing::Json
        } else if [&b"data:"[..], b"event:", b"id:", b":"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            Framing::EventStream
        } else {
            Framing::Other
        }
    }
}

/// The 502 for an answer that is neither events nor JSON, saying what
/// arrived.
pub fn unreadable(content_type: Option<&str>, first: &[u8]) -> ApiError {
    let what = content_type.map_or_else(
        || "no content type".to_owned(),
        |t| format!("content type '{}'", t.chars().take(100).collect::<String>()),
    );
    ApiError::backend(format!(
        "The backend answered with {what} instead of a chat completion; its answer began: {}",
        excerpt(first)
    ))
}

/// The first bytes of a body, as text fit for an error message.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().is_empty() {
        "(nothing)".to_owned()
    } else {
        format!("'{}'", text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_decides_then_the_first_bytes() {
        assert_eq!(
            Framing::declared(Some("text/event-stream; charset=utf-8")),
            Some(Framing::EventStream)
        );
        assert_eq!(
            Framing::declared(Some("Application/JSON")),
            Some(Framing::Json)
        );
        assert_eq!(Framing::declared(Some("text/plain")), None);
        assert_eq!(Framing::declared(None), None);
        assert_eq!(Framing::sniffed(b"  {\"id\":1}"), Framing::Json);
        assert_eq!(Framing::sniffed(b"data: {}"), Framing::EventStream);
        assert_eq!(Framing::sniffed(b": keep-alive\n\n"), Framing::EventStream);
        assert_eq!(Framing::sniffed(b"<html>"), Framing::Other);
    }

    #[test]
    fn unreadable_answers_say_what_arrived() {
        let error = unreadable(
            Some("text/html"),
            b"<html><body>Bad gateway</body>\n</html>",
        );
        assert_eq!(error.status, 502);
        assert!(error.message.contains("text/html"), "{}", error.message);
        assert!(
            error.message.contains("<html><body>Bad gateway"),
            "{}",
            error.message
        );
        assert!(unreadable(None, b"").message.contains("(nothing)"));
    }
}
