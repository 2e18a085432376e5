//! [`Backend`] on outbound `wasi:http`, with timeouts, and the answer body
//! streamed as the host receives it. Request bodies go out whole, with their
//! `Content-Length`: servers on minimal HTTP stacks read nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use spin_sdk::http::{Fields, IncomingResponse, Method, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode, FutureIncomingResponse, RequestOptions};

use crate::backend::{Answer, Backend, BodyStream, Method as BackendMethod, Outbound};
use crate::error::ApiError;

/// Outbound HTTP through the host.
pub struct WasiBackend {
    /// Longest wait to connect, and for the first byte of the answer.
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of the answer body.
    pub between_bytes_timeout: Duration,
}

/// The body of a backend answer.
pub struct WasiBody {
    // Declared before `_response`: the stream must be dropped first.
    stream: futures::stream::LocalBoxStream<'static, Result<Vec<u8>, String>>,
    _response: std::rc::Rc<IncomingResponse>,
}

impl BodyStream for WasiBody {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.stream.next().await
    }
}

impl Backend for WasiBackend {
    type Body = WasiBody;

    async fn send(&self, request: Outbound) -> Result<Answer<WasiBody>, ApiError> {
        let Outbound {
            method,
            url,
            mut headers,
            body,
        } = request;
        // Ask for the body as it is: nothing here decodes compressed ones.
        headers.push(("accept-encoding".to_owned(), "identity".to_owned()));
        // The backend's logs can be matched with ours.
        let request_id = super::request_id();
        if !request_id.is_empty() {
            headers.push(("x-request-id".to_owned(), request_id));
        }
        if let Some(body) = &body {
            headers.push(("content-length".to_owned(), body.len().to_string()));
        }
        let outgoing = outgoing(method, &url, &headers)?;
        let mut sink = outgoing.take_body();
        let future = outgoing_handler::handle(outgoing, Some(self.options()))
            .map_err(|e| unreachable_backend(&url, &e))?;
        let sent = match body {
            Some(body) => sink.send(body).await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        drop(sink);
        // When the body could not be written, the answer says why (a refused
        // connection shows up there too).
        let response = Incoming::new(future)
            .await
            .map_err(|e| unreachable_backend(&url, &e))?;
        if let Err(e) = sent {
            log_failure(&url, &format!("sending the request failed: {e}"));
            return Err(ApiError::backend(
                "Sending the request to the backend failed.",
            ));
        }
        let status = response.status();
        let header = |name: &str| {
            let values = response.headers().get(name);
            values
                .first()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let content_type = header("content-type");
        let session = header("mcp-session-id");
        let response = std::rc::Rc::new(response);
        let stream = response
            .take_body_stream()
            .map(|piece| piece.map_err(|e| e.to_debug_string()))
            .boxed_local();
        Ok(Answer {
            status,
            content_type,
            session,
            body: WasiBody {
                stream,
                _response: response,
            },
        })
    }
}

impl WasiBackend {
    fn options(&self) -> RequestOptions {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let options = RequestOptions::new();
        // Hosts that cannot honour a timeout say so; their default applies then.
        let connect = self.first_byte_timeout.min(Duration::from_secs(30));
        let _ = options.set_connect_timeout(Some(nanos(connect)));
        let _ = options.set_first_byte_timeout(Some(nanos(self.first_byte_timeout)));
        let _ = options.set_between_bytes_timeout(Some(nanos(self.between_bytes_timeout)));
        options
    }
}

/// The 502 for a backend that could not be reached: the client learns
/// what went wrong, the host's log also where.
fn unreachable_backend(url: &str, error: &ErrorCode) -> ApiError {
    let what = match error {
        ErrorCode::ConnectionRefused => "the connection was refused".to_owned(),
        ErrorCode::ConnectionTimeout => "connecting timed out".to_owned(),
        ErrorCode::ConnectionReadTimeout => "it did not answer in time".to_owned(),
        ErrorCode::DnsError(_) => "its host name did not resolve".to_owned(),
        ErrorCode::HttpRequestDenied => "the host does not allow calls to it".to_owned(),
        ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError => {
            "the TLS handshake failed".to_owned()
        }
        _ => "the connection failed".to_owned(),
    };
    log_failure(url, &format!("{what} ({error:?})"));
    ApiError::backend(format!("The backend could not be reached: {what}."))
}

/// Logs a failed call with its URL, which client-visible errors leave out.
fn log_failure(url: &str, what: &str) {
    let url = url.split('?').next().unwrap_or_default();
    eprintln!("edge-responses: backend call to {url} failed: {what}");
}

/// Waits for the host to deliver the answer's head. While pending it keeps
/// one registration with the executor, withdrawn when the future is
/// dropped (a call given up on, past its deadline): its pollable is a
/// child of the answer, which cannot go while the executor still holds it.
struct Incoming {
    /// Declared first: dropped before the answer it was made from.
    waiting: Option<spin_executor::CancelOnDropToken>,
    future: FutureIncomingResponse,
}

impl Incoming {
    fn new(future: FutureIncomingResponse) -> Self {
        Incoming {
            waiting: None,
            future,
        }
    }
}

impl Future for Incoming {
    type Output = Result<IncomingResponse, ErrorCode>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.waiting = None;
        match self.future.get() {
            Some(Ok(result)) => Poll::Ready(result),
            Some(Err(())) => Poll::Ready(Err(ErrorCode::InternalError(Some(
                "the answer was already taken".to_owned(),
            )))),
            None => {
                let pollable = self.future.subscribe();
                let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
                self.waiting = Some(token.into());
                Poll::Pending
            }
        }
    }
}

fn outgoing(
    method: BackendMethod,
    url: &str,
    headers: &[(String, String)],
) -> Result<OutgoingRequest, ApiError> {
    let invalid = || {
        log_failure(url, "the URL is not valid");
        ApiError::server("A configured backend URL is not valid.")
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(invalid()),
    };
    let method = match method {
        BackendMethod::Get => Method::Get,
        BackendMethod::Post => Method::Post,
        BackendMethod::Delete => Method::Delete,
    };
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&fields).map_err(|e| {
        log_failure(url, &format!("a header was refused: {e:?}"));
        ApiError::server("A configured backend header is not valid.")
    })?;
    let request = OutgoingRequest::new(fields);
    let valid = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(authority)).is_ok()
        && request.set_path_with_query(Some(path)).is_ok();
    if !valid {
        return Err(invalid());
    }
    Ok(request)
}
