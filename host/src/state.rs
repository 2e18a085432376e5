//! The data of one wasmtime `Store`: everything a single component instance
//! can reach (its resource table, WASI and `wasi:http` contexts, and handles
//! to the server's key-value store and config values). Its outbound HTTP
//! requests go through the process-wide connection pool in `outbound`.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::ConfigValues;
use crate::keyvalue::{KeyValue, KeyValueView};
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
    pub(crate) fn new(kv: KeyValue, config: ConfigValues) -> Self {
        Self {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            outbound: Outbound,
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
