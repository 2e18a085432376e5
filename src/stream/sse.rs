//! Reading server-sent events from the backend, bytes in, `data:` payloads out.
//!
//! Chunks of the HTTP body split frames anywhere (inside a line, inside a
//! UTF-8 sequence); [`SseReader`] buffers until a frame is complete. It takes
//! `\n` and `\r\n` line endings, multi-line `data`, and ignores comments and
//! other fields.
//!
//! What it buffers is bounded: a line, or the data of a frame, longer than
//! [`MAX_EVENT_BYTES`] ends the stream with an error payload (see
//! [`SseReader::push`]) and everything after it is dropped unread.

/// Longest line, and longest `data` of one frame, the reader buffers. Chunks
/// of real backends are a few hundred bytes; a whole tool call's arguments
/// in one chunk stay far below this.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// What a complete frame carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseData {
    /// A `data:` payload (several `data:` lines joined by `\n`).
    Data(String),
    /// `data: [DONE]`, the end of an OpenAI-style stream.
    Done,
}

/// An incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseReader {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no line end.
    scanned: usize,
    data: Option<String>,
    /// An event went past [`MAX_EVENT_BYTES`]: the rest is ignored.
    overflowed: bool,
}

impl SseReader {
    /// Adds bytes and returns every payload completed by them.
    ///
    /// A line or a frame past [`MAX_EVENT_BYTES`] comes out as a last
    /// payload that is a chat-completions error chunk,
    /// `{"error":{"message":"..."}}`, so the stream fails as if the backend
    /// had reported it; nothing is returned after it. Where the input is
    /// split makes no difference to what comes out.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseData> {
        let mut out = Vec::new();
        if self.overflowed {
            return out;
        }
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            let line = (start, end);
            start = end + 1;
            self.scanned = start;
            // The line's raw length (with any `\r`) is what is bounded.
            if line.1 - line.0 > MAX_EVENT_BYTES {
                out.push(self.overflow());
                return out;
            }
            let mut bytes = &self.buffer[line.0..line.1];
            if bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            let text = String::from_utf8_lossy(bytes).into_owned();
            if let Some(data) = self.line(&text) {
                out.push(data);
            }
            if self.overflowed {
                out.push(self.overflow());
                return out;
            }
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        // A line still open is already too long.
        if self.buffer.len() > MAX_EVENT_BYTES {
            out.push(self.overflow());
        }
        out
    }

    /// Ends the input: a last frame without its blank line still counts.
    pub fn finish(&mut self) -> Option<SseData> {
        if self.overflowed {
            return None;
        }
        if !self.buffer.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
            self.scanned = 0;
            if let Some(data) = self.line(rest.trim_end_matches('\r')) {
                return Some(data);
            }
            if self.overflowed {
                return Some(self.overflow());
            }
        }
        self.dispatch()
    }

    fn line(&mut self, line: &str) -> Option<SseData> {
        if line.is_empty() {
            return self.dispatch();
        }
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) if data.len() + 1 + value.len() > MAX_EVENT_BYTES => {
                    self.overflowed = true;
                }
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseData> {
        let data = self.data.take()?;
        if data.trim() == "[DONE]" {
            Some(SseData::Done)
        } else {
            Some(SseData::Data(data))
        }
    }

    /// Drops everything buffered and ignores the rest of the input; the
    /// payload that reports it.
    fn overflow(&mut self) -> SseData {
        self.overflowed = true;
        self.buffer = Vec::new();
        self.scanned = 0;
        self.data = None;
        overflow()
    }
}

/// The error chunk an over-long event becomes.
fn overflow() -> SseData {
    let message = format!(
        "The backend sent an event longer than {MAX_EVENT_BYTES} bytes; the stream was cut there."
    );
    SseData::Data(serde_json::json!({ "error": { "message": message } }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let stream =
            "data: {\"a\":1}\n\n: comment\n\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut reader = SseReader::default();
            let mut out = reader.push(&stream.as_bytes()[..split]);
            out.extend(reader.push(&stream.as_bytes()[split..]));
            out.extend(reader.finish());
            assert_eq!(
                out,
                vec![
                    SseData::Data("{\"a\":1}".into()),
                    SseData::Data("{\"b\":\n2}".into()),
                    SseData::Done
                ],
                "split at {split}"
            );
        }
    }

    /// The message of an overflow payload, read the way the model loop
    /// reads every payload: as a chat chunk that reports an error.
    fn overflow_message(payload: &SseData) -> String {
        let SseData::Data(data) = payload else {
            panic!("{payload:?}")
        };
        let chunk: crate::chat::ChatChunk = serde_json::from_str(data).unwrap();
        chunk.error_message().unwrap()
    }

    #[test]
    fn a_line_past_the_bound_ends_the_stream() {
        let mut reader = SseReader::default();
        let mut out = reader.push(b"data: {\"a\":1}\n\ndata: ");
        let piece = vec![b'x'; 64 * 1024];
        let mut pushes = 0;
        while out.len() < 2 {
            out.extend(reader.push(&piece));
            pushes += 1;
            assert!(pushes <= MAX_EVENT_BYTES / piece.len() + 1, "never cut");
        }
        assert_eq!(out[0], SseData::Data("{\"a\":1}".into()));
        assert!(overflow_message(&out[1]).contains("longer than 8388608 bytes"));
        assert_eq!(out.len(), 2);
        // Whatever follows is ignored, and nothing is buffered any more.
        assert!(reader.push(b"\n\ndata: {}\n\n").is_empty());
        assert_eq!(reader.finish(), None);
        assert!(reader.buffer.capacity() == 0);
    }

    #[test]
    fn a_frame_of_many_lines_past_the_bound_ends_the_stream() {
        let line = format!("data: {}\n", "y".repeat(1 << 20));
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        for _ in 0..9 {
            out.extend(reader.push(line.as_bytes()));
        }
        assert_eq!(out.len(), 1);
        assert!(overflow_message(&out[0]).contains("longer than"));
        // Seven lines of 1 MiB joined stay under the bound.
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        for _ in 0..7 {
            out.extend(reader.push(line.as_bytes()));
        }
        out.extend(reader.push(b"\n"));
        assert!(matches!(&out[..], [SseData::Data(d)] if d.len() == 7 * (1 << 20) + 6));
    }

    #[test]
    fn a_long_line_in_small_pieces_is_read_in_linear_time() {
        let mut reader = SseReader::default();
        let piece = vec![b'z'; 1024];
        assert!(reader.push(b"data: ").is_empty());
        // 4 MiB in 1 KiB pieces: quadratic rescanning would read 8 GiB.
        for _ in 0..4096 {
            assert!(reader.push(&piece).is_empty());
        }
        let out = reader.push(b"\n\n");
        assert!(matches!(&out[..], [SseData::Data(d)] if d.len() == 4 << 20));
    }

    #[test]
    fn unterminated_last_frame() {
        let mut reader = SseReader::default();
        assert!(reader.push(b"data: x").is_empty());
        assert_eq!(reader.finish(), Some(SseData::Data("x".into())));
    }
}
