//! A component instance's stderr: read line by line, so that the
//! component's report on its request (`edge-responses-request {...}`, see
//! [`ComponentReport`]) goes into the host's request log line instead of
//! the host's stderr. Every other line (the component writes one when
//! something went wrong: a backend's refusal, a failed clean-up) becomes a
//! warning of the host's log, target [`GUEST_LOG_TARGET`], with the
//! instance's request id: in the host's format (one JSON object per line
//! with `--log-format json`), each whole.
//!
//! A report names its request (`request_id`); one naming a request other
//! than the instance's is passed through untouched. Without a request (the
//! typed calls of `Responses`), everything is passed through. A last line
//! without a newline is handled when the instance goes away.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::exchange::{ComponentReport, Exchange};

/// Longest line kept whole: a longer one is passed on in pieces of this
/// size (it cannot be a report the host would use).
const MAX_LINE: usize = 64 << 10;

/// Bytes the guest may write per call (wasmtime's own streams allow as much).
const WRITE_BUDGET: usize = 64 << 10;

/// The stderr of one instance. Clones share one line buffer, as every
/// stream the guest opens on its stderr must.
#[derive(Clone)]
pub(crate) struct GuestStderr {
    lines: Arc<Mutex<Lines>>,
}

struct Lines {
    pending: Vec<u8>,
    exchange: Option<Arc<Exchange>>,
    /// Where lines that are not reports go, with the instance's request
    /// id: the host's log.
    out: fn(&[u8], Option<&str>),
}

impl GuestStderr {
    /// The stderr of an instance serving `exchange` (none for typed calls).
    pub(crate) fn new(exchange: Option<Arc<Exchange>>) -> Self {
        Self::with_output(exchange, to_host_log)
    }

    fn with_output(exchange: Option<Arc<Exchange>>, out: fn(&[u8], Option<&str>)) -> Self {
        GuestStderr {
            lines: Arc::new(Mutex::new(Lines {
                pending: Vec::new(),
                exchange,
                out,
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        // Every update leaves the buffer whole, so a poisoned lock is valid.
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.push(bytes);
    }
}

impl Lines {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(newline);
            bytes = &rest[1..];
            if self.pending.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.pending = whole;
            }
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= MAX_LINE {
            let long = std::mem::take(&mut self.pending);
            self.pass(&long);
        }
    }

    /// One line, without its `\n`.
    fn line(&mut self, line: &[u8]) {
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(exchange) = &self.exchange {
            let report = std::str::from_utf8(text)
                .ok()
                .and_then(ComponentReport::parse);
            if let Some(report) = report {
                let ours = report
                    .request_id
                    .as_deref()
                    .is_none_or(|id| id == exchange.request_id());
                if ours {
                    exchange.report(report);
                    return;
                }
            }
        }
        self.pass(text);
    }

    /// A line that is not a report, to the host's log.
    fn pass(&self, line: &[u8]) {
        let request_id = self.exchange.as_ref().map(|e| e.request_id());
        (self.out)(line, request_id);
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.line(&last);
        }
    }
}

/// The target of the component's own log lines.
pub const GUEST_LOG_TARGET: &str = "edge_responses::component";

/// One line of the component's, as a warning of the host's log.
fn to_host_log(line: &[u8], request_id: Option<&str>) {
    let text = String::from_utf8_lossy(line);
    tracing::warn!(target: GUEST_LOG_TARGET, request_id, "{text}");
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::metrics::Metrics;

    thread_local! {
        /// What the stream under test passed through (tests run on threads
        /// of their own).
        static PASSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn capture(line: &[u8], _: Option<&str>) {
        PASSED.with(|passed| {
            let mut passed = passed.borrow_mut();
            passed.extend_from_slice(line);
            passed.push(b'\n');
        });
    }

    fn passed() -> String {
        PASSED.with(|passed| String::from_utf8_lossy(&passed.borrow()).into_owned())
    }

    fn exchange() -> Arc<Exchange> {
        let metrics = Arc::new(Metrics::new());
        Exchange::new(metrics, "req_1".into(), http::Method::POST, "/v1/responses")
    }

    #[test]
    fn reports_are_taken_and_other_lines_pass_through_whole() {
        let exchange = exchange();
        let stderr = GuestStderr::with_output(Some(exchange.clone()), capture);
        let mut stream = stderr.p2_stream();
        // Split across writes, as the guest's buffered writer may.
        stream
            .write(Bytes::from_static(b"first line\nedge-responses-re"))
            .unwrap();
        stream
            .write(Bytes::from_static(
                b"quest {\"request_id\":\"req_1\",\"model\":\"m\",\"input_tokens\":3}\r\nsecond",
            ))
            .unwrap();
        stream.write(Bytes::from_static(b" line\n")).unwrap();
        // A report of another request is not this one's.
        stream
            .write(Bytes::from_static(
                b"edge-responses-request {\"request_id\":\"req_2\",\"model\":\"x\"}\n",
            ))
            .unwrap();
        stream.write(Bytes::from_static(b"no newline")).unwrap();
        drop(stream);
        assert_eq!(passed(), "first line\nsecond line\nedge-responses-request {\"request_id\":\"req_2\",\"model\":\"x\"}\n");
        drop(stderr);
        assert!(passed().ends_with("no newline\n"), "{}", passed());

        let report = exchange.reported().expect("a report");
        assert_eq!(report.model.as_deref(), Some("m"));
        assert_eq!(report.input_tokens, Some(3));
    }

    #[test]
    fn a_report_without_a_request_id_is_the_instances() {
        let exchange = exchange();
        let stderr = GuestStderr::with_output(Some(exchange.clone()), capture);
        stderr.write_bytes(b"edge-responses-request {\"tenant\":\"t\"}\n");
        assert_eq!(passed(), "");
        let report = exchange.reported().expect("a report");
        assert_eq!(report.tenant.as_deref(), Some("t"));
    }

    #[test]
    fn without_a_request_everything_passes_through() {
        let stderr = GuestStderr::with_output(None, capture);
        let report = "edge-responses-request {\"model\":\"m\"}\n";
        stderr.write_bytes(report.as_bytes());
        assert_eq!(passed(), report);
    }

    #[test]
    fn an_endless_line_is_passed_on_in_pieces() {
        let stderr = GuestStderr::with_output(None, capture);
        stderr.write_bytes(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(passed().len(), MAX_LINE + 11);
        stderr.write_bytes(b"y\n");
        assert_eq!(passed().len(), MAX_LINE + 13);
    }
}
