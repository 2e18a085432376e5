//! Where a text cites the sources a search found, as OpenAI's
//! `url_citation` annotations of an `output_text` part.
//!
//! A citation is a markdown link `[label](url)` whose URL is a source's
//! (the span covers the whole link, brackets and parentheses included), or
//! a source's URL written bare (the span covers the URL, without trailing
//! punctuation such as a full stop). URLs match when they are equal but for
//! the case of the scheme and host, a leading `www.`, `http` against
//! `https`, a fragment and trailing slashes. An image `![alt](url)` is no
//! citation.
//!
//! `start_index` and `end_index` count characters (Unicode scalar values),
//! not bytes: OpenAI's indices are offsets into the text as a Python `str`
//! (and a JavaScript client slicing by UTF-16 units is off by one per
//! character outside the Basic Multilingual Plane before the span, as it is
//! with OpenAI's own). `end_index` is exclusive. Citations come sorted by
//! position and never overlap.

use serde::Serialize;

use super::Source;

/// Longest URL looked at, in bytes.
const MAX_URL_BYTES: usize = 4096;

/// Punctuation of CJK text and typographic quotes, which end a bare URL
/// (other non-ASCII characters may be part of one, as in
/// `https://ja.wikipedia.org/wiki/東京`).
const FULL_WIDTH_PUNCTUATION: &str = "。，、；：！？（）「」『』【】〈〉《》…“”‘’«»";

/// A `url_citation` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "url_citation")]
pub struct UrlCitation {
    /// The first character of the citation.
    pub start_index: usize,
    /// The character after its last.
    pub end_index: usize,
    /// The source's URL, as the provider gave it.
    pub url: String,
    pub title: String,
}

/// The citations of `sources` in `text` (see the module documentation).
pub fn url_citations(text: &str, sources: &[Source]) -> Vec<UrlCitation> {
    if sources.is_empty() {
        return Vec::new();
    }
    let keys: Vec<Option<String>> = sources.iter().map(|s| url_key(&s.url)).collect();
    let source_of = |url: &str| -> Option<&Source> {
        let key = url_key(url)?;
        let at = keys
            .iter()
            .position(|k| k.as_deref() == Some(key.as_str()))?;
        sources.get(at)
    };
    // Byte spans, in order: the markdown links that cite, met as the scan
    // for bare URLs (which skips every link) passes them.
    let links = markdown_links(text);
    let mut cited: Vec<(usize, usize, &Source)> = Vec::new();
    let mut link = 0;
    let mut at = 0;
    'scan: loop {
        let next = text.get(at..).and_then(|rest| rest.find("http"));
        let start = next.map_or(usize::MAX, |found| at + found);
        while let Some(&(link_start, link_end, url)) = links.get(link) {
            if link_start > start {
                break;
            }
            link += 1;
            if let Some(source) = url.and_then(source_of) {
                cited.push((link_start, link_end, source));
            }
            if link_end > start {
                at = link_end;
                continue 'scan;
            }
        }
        if next.is_none() {
            break;
        }
        let rest = text.get(start..).unwrap_or_default();
        let len = match rest.starts_with("http://") || rest.starts_with("https://") {
            true => bare_url_len(rest),
            false => 0,
        };
        if let Some(source) = rest.get(..len).and_then(source_of) {
            cited.push((start, start + len, source));
        }
        at = start + len.max("http".len());
    }

    // Bytes to characters, in one pass: the spans are sorted and disjoint.
    let mut chars = 0;
    let mut counted = 0;
    let mut to_chars = |byte: usize| {
        chars += text.get(counted..byte).map_or(0, |s| s.chars().count());
        counted = byte;
        chars
    };
    cited
        .into_iter()
        .map(|(start, end, source)| UrlCitation {
            start_index: to_chars(start),
            end_index: to_chars(end),
            url: source.url.clone(),
            title: source.title.clone(),
        })
        .collect()
}

/// The markdown links of `text`, in order, as byte spans with their URL
/// (`None` for images). Labels do not cross lines; a link inside another's
/// label is the one found.
fn markdown_links(text: &str) -> Vec<(usize, usize, Option<&str>)> {
    let bytes = text.as_bytes();
    let mut links = Vec::new();
    let mut opens: Vec<usize> = Vec::new();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        i += 1;
        match byte {
            b'\n' => opens.clear(),
            b'[' => opens.push(i - 1),
            b']' if bytes.get(i) == Some(&b'(') => {
                let Some(open) = opens.pop() else { continue };
                let Some((url, end)) = link_target(text, i + 1) else {
                    continue;
                };
                let image = open > 0 && bytes.get(open - 1) == Some(&b'!');
                links.push((open, end, (!image).then_some(url)));
                opens.clear();
                i = end;
            }
            b']' => {
                opens.pop();
            }
            _ => {}
        }
    }
    links
}

/// The URL of a link target starting at byte `start` (just past the `(`),
/// and the byte after its closing `)`: `(url)`, `(<url>)`, either with a
/// title in quotes.
fn link_target(text: &str, start: usize) -> Option<(&str, usize)> {
    let rest = text.get(start..)?;
    let trimmed = rest.trim_start_matches([' ', '\t']);
    let offset = start + rest.len() - trimmed.len();
    let (url, after) = if let Some(inner) = trimmed.strip_prefix('<') {
        let end = inner.find(['>', '\n'])?;
        inner.get(end..)?.strip_prefix('>')?;
        (inner.get(..end)?, offset + 1 + end + 1)
    } else {
        let mut depth = 0usize;
        let mut end = trimmed.len();
        for (at, c) in trimmed.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = at;
                    break;
                }
                ')' => depth -= 1,
                c if c.is_whitespace() || c.is_control() => {
                    end = at;
                    break;
                }
                _ => {}
            }
            if at > MAX_URL_BYTES {
                return None;
            }
        }
        (trimmed.get(..end)?, offset + end)
    };
    if url.is_empty() || url.len() > MAX_URL_BYTES {
        return None;
    }
    // An optional title, then the closing parenthesis.
    let tail = text.get(after..)?;
    let title = tail.trim_start_matches([' ', '\t']);
    let title_end = match title.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let close = title.get(1..)?.find([quote, '\n'])?;
            let close_at = 1 + close;
            title.get(close_at..)?.strip_prefix(quote)?;
            close_at + 1
        }
        _ => 0,
    };
    let closing = title.get(title_end..)?.trim_start_matches([' ', '\t']);
    closing.strip_prefix(')')?;
    Some((url, text.len() - closing.len() + 1))
}

/// The length in bytes of the URL at the start of `text`: up to
/// whitespace, quotes, angle brackets, square brackets, markdown emphasis
/// or table bars, [`FULL_WIDTH_PUNCTUATION`], or a `)` it did not open;
/// without trailing punctuation.
fn bare_url_len(text: &str) -> usize {
    let mut depth = 0usize;
    let mut len = text.len();
    for (at, c) in text.char_indices() {
        let stop = match c {
            '(' => {
                depth += 1;
                false
            }
            ')' if depth == 0 => true,
            ')' => {
                depth -= 1;
                false
            }
            '"' | '\'' | '<' | '>' | '[' | ']' | '`' | '*' | '|' | '{' | '}' => true,
            c => c.is_whitespace() || c.is_control() || FULL_WIDTH_PUNCTUATION.contains(c),
        };
        if stop || at > MAX_URL_BYTES {
            len = at;
            break;
        }
    }
    let url = text.get(..len).unwrap_or_default();
    url.trim_end_matches(['.', ',', ';', ':', '!', '?']).len()
}

/// What two URLs are compared by: host (lowercase, without `www.`) and
/// path with query, without fragment or trailing slashes; `None` for
/// anything but http(s).
fn url_key(url: &str) -> Option<String> {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    let host = host.to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host);
    if host.is_empty() {
        return None;
    }
    Some(format!("{host}{}", path.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sources() -> Vec<Source> {
        [
            ("Rust", "https://www.rust-lang.org/"),
            ("Docs", "https://docs.example.org/guide/1"),
            (
                "Wiki",
                "https://en.wikipedia.org/wiki/Rust_(programming_language)",
            ),
            ("東京", "https://ja.wikipedia.org/wiki/東京"),
        ]
        .iter()
        .map(|(title, url)| Source {
            title: (*title).into(),
            url: (*url).into(),
            snippet: String::new(),
        })
        .collect()
    }

    /// The cited text of each citation, with its URL.
    fn cited(text: &str) -> Vec<(String, String)> {
        let chars: Vec<char> = text.chars().collect();
        url_citations(text, &sources())
            .into_iter()
            .map(|c| (chars[c.start_index..c.end_index].iter().collect(), c.url))
            .collect()
    }

    #[test]
    fn a_markdown_link_is_cited_whole() {
        let text = "Rust is fast ([Rust](https://rust-lang.org)).";
        let citations = url_citations(text, &sources());
        assert_eq!(
            citations,
            [UrlCitation {
                start_index: 14,
                end_index: 43,
                url: "https://www.rust-lang.org/".into(),
                title: "Rust".into(),
            }]
        );
        assert_eq!(
            serde_json::to_value(&citations[0]).unwrap(),
            json!({"type": "url_citation", "start_index": 14, "end_index": 43,
                   "url": "https://www.rust-lang.org/", "title": "Rust"})
        );
    }

    #[test]
    fn indices_count_characters_not_bytes() {
        let text =
            "Ünïcödé 日本語 🦀: [the guide](https://docs.example.org/guide/1/#intro) and more";
        let citations = url_citations(text, &sources());
        assert_eq!(citations.len(), 1);
        let prefix = "Ünïcödé 日本語 🦀: ";
        assert_eq!(citations[0].start_index, prefix.chars().count());
        assert_eq!(
            citations[0].end_index,
            prefix.chars().count()
                + "[the guide](https://docs.example.org/guide/1/#intro)"
                    .chars()
                    .count()
        );
        assert_eq!(
            cited(text),
            [(
                "[the guide](https://docs.example.org/guide/1/#intro)".into(),
                "https://docs.example.org/guide/1".into()
            )]
        );
    }

    #[test]
    fn bare_urls_and_every_link_form() {
        let text = "See https://docs.example.org/guide/1. Also (https://www.rust-lang.org), \
                    <https://en.wikipedia.org/wiki/Rust_(programming_language)>, \
                    [wiki](<https://en.wikipedia.org/wiki/Rust_(programming_language)> \"Wiki\"), \
                    [[2]](https://docs.example.org/guide/1 'Docs') and \
                    [nested [x] label](http://RUST-lang.org/).";
        assert_eq!(
            cited(text),
            [
                (
                    "https://docs.example.org/guide/1".into(),
                    "https://docs.example.org/guide/1".into()
                ),
                (
                    "https://www.rust-lang.org".into(),
                    "https://www.rust-lang.org/".into()
                ),
                (
                    "https://en.wikipedia.org/wiki/Rust_(programming_language)".into(),
                    "https://en.wikipedia.org/wiki/Rust_(programming_language)".into()
                ),
                (
                    "[wiki](<https://en.wikipedia.org/wiki/Rust_(programming_language)> \"Wiki\")"
                        .into(),
                    "https://en.wikipedia.org/wiki/Rust_(programming_language)".into()
                ),
                (
                    "[[2]](https://docs.example.org/guide/1 'Docs')".into(),
                    "https://docs.example.org/guide/1".into()
                ),
                (
                    "[nested [x] label](http://RUST-lang.org/)".into(),
                    "https://www.rust-lang.org/".into()
                ),
            ]
        );
        let wiki = "[Rust](https://en.wikipedia.org/wiki/Rust_(programming_language))";
        assert_eq!(cited(wiki)[0].0, wiki);
        let cjk = "参见https://ja.wikipedia.org/wiki/東京。又见“https://docs.example.org/guide/1”";
        assert_eq!(
            cited(cjk),
            [
                (
                    "https://ja.wikipedia.org/wiki/東京".into(),
                    "https://ja.wikipedia.org/wiki/東京".into()
                ),
                (
                    "https://docs.example.org/guide/1".into(),
                    "https://docs.example.org/guide/1".into()
                ),
            ]
        );
        let unclosed = "[broken](https://docs.example.org/guide/1";
        assert_eq!(cited(unclosed)[0].0, "https://docs.example.org/guide/1");
    }

    #[test]
    fn other_urls_are_not_citations() {
        for text in [
            "",
            "No links at all.",
            "[Other](https://other.test/guide/1) and https://other.test/",
            "https://docs.example.org/guide/12 and https://docs.example.org/guide",
            "![diagram](https://docs.example.org/guide/1)",
            "[label]\n(https://docs.example.org/guide/1x)",
            "[a](",
            "](((((",
            "[[[[[[",
            "httphttp https:// http://",
            "https://docs.example.org/guide/1?page=2",
            "ftp://www.rust-lang.org/",
        ] {
            assert_eq!(cited(text), [], "{text}");
        }
        assert_eq!(url_citations("https://www.rust-lang.org/", &[]), []);
    }

    #[test]
    fn citations_are_sorted_and_disjoint() {
        let text = "[a [b](https://rust-lang.org) c](https://docs.example.org/guide/1) \
                    [https://docs.example.org/guide/1](https://www.rust-lang.org) \
                    https://rust-lang.org/ ok";
        let citations = url_citations(text, &sources());
        assert_eq!(
            cited(text).into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
            [
                "[b](https://rust-lang.org)",
                // Not a link (links do not nest), but a bare URL.
                "https://docs.example.org/guide/1",
                "[https://docs.example.org/guide/1](https://www.rust-lang.org)",
                "https://rust-lang.org/",
            ]
        );
        for pair in citations.windows(2) {
            assert!(pair[0].end_index <= pair[1].start_index);
        }
    }

    #[test]
    fn no_input_panics() {
        let sources = sources();
        for text in [
            "[",
            "]",
            "(",
            ")",
            "[]()",
            "[](<)",
            "[](<>)",
            "[x](<a\n>)",
            "[x](a \"t)",
            "[x](a 't'",
            "é[ü](ö)",
            "[x](https://rust-lang.org \"é\")",
            "https://é",
            "http🦀",
            "[🦀](🦀)",
        ] {
            let _ = url_citations(text, &sources);
        }
        let long = format!("[x](https://{})", "a".repeat(10_000));
        assert_eq!(url_citations(&long, &sources), []);
    }

    /// Text made of the pieces links and URLs are made of.
    fn linkish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("["),
            Just("]"),
            Just("("),
            Just(")"),
            Just("!"),
            Just("<"),
            Just(">"),
            Just("\""),
            Just("'"),
            Just(" "),
            Just("\n"),
            Just("."),
            Just("#x"),
            Just("/"),
            Just("é"),
            Just("🦀"),
            Just("日本"),
            Just("http"),
            Just("https://"),
            Just("http://"),
            Just("www."),
            Just("rust-lang.org"),
            Just("docs.example.org/guide/1"),
            Just("en.wikipedia.org/wiki/Rust_(programming_language)"),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 512, failure_persistence: None, ..Default::default()
        })]

        #[test]
        fn citations_stay_inside_the_text_sorted_and_disjoint(text in linkish()) {
            let chars = text.chars().count();
            let citations = url_citations(&text, &sources());
            for citation in &citations {
                proptest::prop_assert!(citation.start_index < citation.end_index);
                proptest::prop_assert!(citation.end_index <= chars);
            }
            for pair in citations.windows(2) {
                proptest::prop_assert!(pair[0].end_index <= pair[1].start_index);
            }
        }

        #[test]
        fn any_text_is_read_without_panics(text in ".{0,80}") {
            let _ = url_citations(&text, &sources());
        }
    }
}
