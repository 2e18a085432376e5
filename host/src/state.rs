//! The data of one wasmtime `Store`: everything a single component instance
//! can reach (its resource table, WASI and `wasi:http` contexts, and handles
//! to the server's key-value store and config values). Its outbound HTTP
//! requests go through the process-wide connection pool in `outbound`; its
//! stderr is read line by line for the component's report on its request
//! (`guest_log`).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::ConfigValues;
use crate::exchange::Exchange;
use crate::guest_log::GuestStderr;
use crate::keyvalue::{KeyValue, KeyValueView};
use crate::metrics::Metrics;
use crate::outbound::Outbound;

/// Per-instance host state. A fresh one is made for every request.
pub(crate) struct InstanceState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: Outbound,
    kv: KeyValue,
    config: ConfigValues,
}

impl InstanceState {
    /// The state of an instance serving `exchange` (none: a typed call).
    pub(crate) fn new(
        kv: KeyValue,
        config: ConfigValues,
        metrics: Arc<Metrics>,
        exchange: Option<Arc<Exchange>>,
    ) -> Self {
        let wasi = WasiCtx::builder()
            .inherit_stdout()
            .stderr(GuestStderr::new(exchange.clone()))
            .build();
        Self {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            outbound: Outbound::new(metrics, exchange),
            kv,
            config,
        }
    }

    pub(crate) fn keyvalue(&mut self) -> KeyValueView<'_> {
        self.kv.view(&mut self.table)
    }

    pub(crate) fn config(&mut self) -> &ConfigValues {
        &self.config
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
