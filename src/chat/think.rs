//! Reasoning inside `<think>...</think>` at the start of the content, as
//! some models served by llama.cpp and others emit it (the
//! `backend_think_tags` setting).
//!
//! [`ThinkTags`] splits streamed content into reasoning and answer text.
//! Tags may arrive split across chunks, so text that could still turn out
//! to be part of a tag is held back until the next piece decides.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Nothing but whitespace and a part of `<think>` so far.
    #[default]
    Opening,
    /// Inside the tags.
    Thinking,
    /// After `</think>`; whitespace right after the tag is dropped.
    AfterThinking,
    /// Plain content.
    Answer,
}

/// Splits content into reasoning and answer.
#[derive(Debug, Default)]
pub struct ThinkTags {
    state: State,
    pending: String,
}

/// What a piece of content amounts to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

impl ThinkTags {
    /// Takes the next piece of content.
    pub fn push(&mut self, text: &str) -> Split {
        let mut out = Split::default();
        self.pending.push_str(text);
        loop {
            match self.state {
                State::Opening => {
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_owned();
                        self.state = State::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        return out;
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => match self.pending.find(CLOSE) {
                    Some(at) => {
                        out.reasoning.push_str(&self.pending[..at]);
                        self.pending.drain(..at + CLOSE.len());
                        self.state = State::AfterThinking;
                    }
                    None => {
                        let keep = partial_suffix(&self.pending, CLOSE);
                        let ready = self.pending.len() - keep;
                        out.reasoning.push_str(&self.pending[..ready]);
                        self.pending.drain(..ready);
                        return out;
                    }
                },
                State::AfterThinking => {
                    let trimmed = self.pending.trim_start();
                    if trimmed.is_empty() {
                        self.pending.clear();
                        return out;
                    }
                    self.pending = trimmed.to_owned();
                    self.state = State::Answer;
                }
                State::Answer => {
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// The content ended: whatever was held back.
    pub fn finish(&mut self) -> Split {
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Thinking => Split {
                reasoning: rest,
                content: String::new(),
            },
            State::AfterThinking => Split::default(),
            State::Opening | State::Answer => Split {
                reasoning: String::new(),
                content: rest,
            },
        }
    }
}

/// The length of the longest end of `text` that begins `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(pieces: &[&str]) -> Split {
        let mut tags = ThinkTags::default();
        let mut all = Split::default();
        let mut pieces: Vec<Split> = pieces.iter().map(|p| tags.push(p)).collect();
        pieces.push(tags.finish());
        for piece in pieces {
            all.reasoning.push_str(&piece.reasoning);
            all.content.push_str(&piece.content);
        }
        all
    }

    #[test]
    fn tags_split_anywhere() {
        let text = "<think>Weigh it: a<b.</think>\n\nThe answer is 4 < 5.";
        for cut in 0..=text.len() {
            for cut2 in cut..=text.len() {
                let split = split_all(&[&text[..cut], &text[cut..cut2], &text[cut2..]]);
                assert_eq!(
                    split,
                    Split {
                        reasoning: "Weigh it: a<b.".into(),
                        content: "The answer is 4 < 5.".into()
                    },
                    "cut at {cut}, {cut2}"
                );
            }
        }
    }

    #[test]
    fn content_without_tags_passes_through() {
        assert_eq!(split_all(&["<", "b>bold</b>"]).content, "<b>bold</b>");
        assert_eq!(split_all(&["  <thi"]).content, "  <thi");
        assert_eq!(
            split_all(&["Hi ", "<think>x</think>"]).content,
            "Hi <think>x</think>"
        );
        let unterminated = split_all(&["<think>still going"]);
        assert_eq!(
            (
                unterminated.reasoning.as_str(),
                unterminated.content.as_str()
            ),
            ("still going", "")
        );
        assert_eq!(split_all(&["<think>é</thi", "nk>ü"]).content, "ü");
    }
}
