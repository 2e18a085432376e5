//! [`Backend`] on outbound `wasi:http`, with timeouts, and the answer body
//! streamed as the host receives it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use spin_sdk::http::{Fields, IncomingResponse, Method, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode, FutureIncomingResponse, RequestOptions};

use crate::backend::{Backend, BodyStream};
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

    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(u16, WasiBody), ApiError> {
        let request = outgoing(method, url, headers)?;
        let mut sink = request.take_body();
        let future = outgoing_handler::handle(request, Some(self.options()))
            .map_err(|e| unreachable_backend(url, &e))?;
        if let Some(body) = body {
            sink.send(body).await.map_err(|e| {
                ApiError::backend(format!("Sending to the backend at {url} failed: {e}"))
            })?;
        }
        drop(sink);
        let response = Incoming(future)
            .await
            .map_err(|e| unreachable_backend(url, &e))?;
        let status = response.status();
        let response = std::rc::Rc::new(response);
        let stream = response
            .take_body_stream()
            .map(|piece| piece.map_err(|e| e.to_debug_string()))
            .boxed_local();
        Ok((
            status,
            WasiBody {
                stream,
                _response: response,
            },
        ))
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

fn unreachable_backend(url: &str, error: &ErrorCode) -> ApiError {
    let what = match error {
        ErrorCode::ConnectionRefused => "the connection was refused".to_owned(),
        ErrorCode::ConnectionTimeout => "connecting timed out".to_owned(),
        ErrorCode::ConnectionReadTimeout => "it did not answer in time".to_owned(),
        ErrorCode::DnsError(_) => "its host name did not resolve".to_owned(),
        other => format!("{other:?}"),
    };
    ApiError::backend(format!(
        "The backend at {url} could not be reached: {what}."
    ))
}

/// Waits for the host to deliver the answer's head.
struct Incoming(FutureIncomingResponse);

impl Future for Incoming {
    type Output = Result<IncomingResponse, ErrorCode>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.get() {
            Some(Ok(result)) => Poll::Ready(result),
            Some(Err(())) => Poll::Ready(Err(ErrorCode::InternalError(Some(
                "the answer was already taken".to_owned(),
            )))),
            None => {
                spin_executor::push_waker(self.0.subscribe(), cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn outgoing(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
) -> Result<OutgoingRequest, ApiError> {
    let invalid = || {
        ApiError::server(format!(
            "The configured backend_url is not a valid URL: {url}"
        ))
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
    let method = if method == "GET" {
        Method::Get
    } else {
        Method::Post
    };
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&fields)
        .map_err(|e| ApiError::server(format!("A backend header is invalid: {e:?}")))?;
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
