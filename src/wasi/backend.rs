//! [`Backend`] on outbound `wasi:http`, with the answer body streamed.

use futures::StreamExt;
use spin_sdk::http::{IncomingResponse, Method, Request};

use crate::backend::{Backend, BodyStream};
use crate::error::ApiError;

/// Outbound HTTP through the host.
pub struct WasiBackend;

/// The body of a backend answer, read as the host receives it.
pub struct WasiBody {
    // Declared before `response`: the body stream must be dropped first.
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
        let request = outgoing(method, url, headers, body.unwrap_or_default());
        let response: IncomingResponse = spin_sdk::http::send(request)
            .await
            .map_err(|e| ApiError::backend(format!("The backend at {url} could not be reached: {e}")))?;
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

fn outgoing(method: &str, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Request {
    let method = match method {
        "GET" => Method::Get,
        _ => Method::Post,
    };
    let mut builder = Request::builder();
    builder.method(method).uri(url).body(body);
    for (name, value) in headers {
        builder.header(*name, value.as_str());
    }
    builder.build()
}
