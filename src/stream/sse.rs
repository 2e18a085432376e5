//! Reading server-sent events from the backend, bytes in, `data:` payloads out.
//!
//! Chunks of the HTTP body split frames anywhere (inside a line, inside a
//! UTF-8 sequence); [`SseReader`] buffers until a frame is complete. It takes
//! `\n` and `\r\n` line endings, multi-line `data`, and ignores comments and
//! other fields.

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
    data: Option<String>,
}

impl SseReader {
    /// Adds bytes and returns every payload completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseData> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(data) = self.line(&line) {
                out.push(data);
            }
        }
        self.buffer.drain(..start);
        out
    }

    /// Ends the input: a last frame without its blank line still counts.
    pub fn finish(&mut self) -> Option<SseData> {
        if !self.buffer.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
            if let Some(data) = self.line(rest.trim_end_matches('\r')) {
                return Some(data);
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

    #[test]
    fn unterminated_last_frame() {
        let mut reader = SseReader::default();
        assert!(reader.push(b"data: x").is_empty());
        assert_eq!(reader.finish(), Some(SseData::Data("x".into())));
    }
}
