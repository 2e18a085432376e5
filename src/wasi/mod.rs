//! The thin layer between the service and the host: `wasi:keyvalue`,
//! outbound `wasi:http` and `wasi:config`. Nothing here knows the Responses
//! API; everything here is host I/O.

mod backend;
mod env;
mod kv;

pub use backend::WasiBackend;
pub use kv::WasiKv;

use std::rc::Rc;

use crate::backend::dialect::Learned;
use crate::config::Settings;
use crate::error::ApiError;
use crate::service::Service;
use spin_sdk::wit::wasi::config::store as config;

/// The service wired to the host: settings read once, the default bucket
/// opened once.
/// The service as the component runs it.
pub type WasiService = Service<WasiKv, WasiBackend>;

pub fn service() -> Result<WasiService, ApiError> {
    let pairs = config::get_all()
        .map_err(|e| ApiError::server(format!("Reading configuration failed: {e:?}")))?;
    let settings = Settings::from_pairs(pairs)?;
    let timeout = std::time::Duration::from_secs(settings.backend_timeout_seconds);
    Ok(Service {
        settings,
        kv: WasiKv::open()?,
        backend: WasiBackend {
            first_byte_timeout: timeout,
            between_bytes_timeout: timeout,
        },
        learned: LEARNED.with(Rc::clone),
        env: env::host_env(),
        sessions: Default::default(),
    })
}

thread_local! {
    /// What backends taught this instance about their parameters; it lives
    /// as long as the instance does.
    static LEARNED: Rc<Learned> = Rc::default();

    /// The id of the request the instance serves: sent with every outbound
    /// request and returned to the client (an instance serves one request
    /// at a time).
    static REQUEST_ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Takes the client's `x-request-id` when it is a valid one, else makes
/// one; returns it.
pub fn begin_request(incoming: Option<String>) -> String {
    let id = incoming
        .filter(|id| crate::ids::valid_request_id(id))
        .unwrap_or_else(|| env::host_env().new_id("req"));
    REQUEST_ID.with(|current| current.replace(id.clone()));
    id
}

/// The id of the request being served.
pub fn request_id() -> String {
    REQUEST_ID.with(|current| current.borrow().clone())
}
