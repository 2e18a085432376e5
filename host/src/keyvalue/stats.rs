//! Counts of key-value calls made by guests, by kind.
//!
//! Every `wasi:keyvalue` call a guest makes is one round trip to the store;
//! tests and benchmarks read these counts to assert how many a request took.

use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of `wasi:keyvalue` calls. The discriminants index
/// [`KvCounters`], in the order of the [`KvStats`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvOp {
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    GetMany,
    SetMany,
    DeleteMany,
    Increment,
    CasNew,
    CasCurrent,
    Swap,
}

impl KvOp {
    /// Every kind, in the order of their discriminants.
    pub(crate) const ALL: [KvOp; 12] = [
        KvOp::Get,
        KvOp::Set,
        KvOp::Delete,
        KvOp::Exists,
        KvOp::ListKeys,
        KvOp::GetMany,
        KvOp::SetMany,
        KvOp::DeleteMany,
        KvOp::Increment,
        KvOp::CasNew,
        KvOp::CasCurrent,
        KvOp::Swap,
    ];

    /// The kind's name, as in [`KvStats::fields`] and metric labels.
    pub(crate) fn name(self) -> &'static str {
        KvStats::default().fields()[self as usize].0
    }

    /// The name of a trace span for one call of this kind: `keyvalue` and
    /// [`Self::name`].
    pub(crate) fn span_name(self) -> &'static str {
        const NAMES: [&str; 12] = [
            "keyvalue get",
            "keyvalue set",
            "keyvalue delete",
            "keyvalue exists",
            "keyvalue list_keys",
            "keyvalue get_many",
            "keyvalue set_many",
            "keyvalue delete_many",
            "keyvalue increment",
            "keyvalue cas_new",
            "keyvalue cas_current",
            "keyvalue swap",
        ];
        NAMES[self as usize]
    }
}

/// A snapshot of how many key-value calls of each kind guests have made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    pub get: u64,
    pub set: u64,
    pub delete: u64,
    pub exists: u64,
    pub list_keys: u64,
    pub get_many: u64,
    pub set_many: u64,
    pub delete_many: u64,
    pub increment: u64,
    pub cas_new: u64,
    pub cas_current: u64,
    pub swap: u64,
}

impl KvStats {
    /// All calls of every kind.
    pub fn total(&self) -> u64 {
        self.fields().iter().map(|(_, count)| count).sum()
    }

    /// The calls made since `earlier` was taken.
    pub fn since(&self, earlier: &KvStats) -> KvStats {
        let mut delta = *self;
        for (field, before) in delta.fields_mut().into_iter().zip(earlier.fields()) {
            *field = field.saturating_sub(before.1);
        }
        delta
    }

    /// `(name, count)` for every kind, in a fixed order.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("get", self.get),
            ("set", self.set),
            ("delete", self.delete),
            ("exists", self.exists),
            ("list_keys", self.list_keys),
            ("get_many", self.get_many),
            ("set_many", self.set_many),
            ("delete_many", self.delete_many),
            ("increment", self.increment),
            ("cas_new", self.cas_new),
            ("cas_current", self.cas_current),
            ("swap", self.swap),
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 12] {
        [
            &mut self.get,
            &mut self.set,
            &mut self.delete,
            &mut self.exists,
            &mut self.list_keys,
            &mut self.get_many,
            &mut self.set_many,
            &mut self.delete_many,
            &mut self.increment,
            &mut self.cas_new,
            &mut self.cas_current,
            &mut self.swap,
        ]
    }
}

impl std::fmt::Display for KvStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "total={}", self.total())?;
        for (name, count) in self.fields().iter().filter(|(_, count)| *count > 0) {
            write!(f, " {name}={count}")?;
        }
        Ok(())
    }
}

/// Live counters shared by every instance of one server.
#[derive(Debug, Default)]
pub(crate) struct KvCounters {
    counts: [AtomicU64; 12],
}

impl KvCounters {
    pub(crate) fn record(&self, op: KvOp) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> KvStats {
        let mut stats = KvStats::default();
        for (field, count) in stats.fields_mut().into_iter().zip(&self.counts) {
            *field = count.load(Ordering::Relaxed);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_the_stats_fields() {
        for (index, op) in KvOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, index);
        }
        assert_eq!(KvOp::GetMany.name(), "get_many");
        assert_eq!(KvOp::Swap.name(), "swap");
        for op in KvOp::ALL {
            assert_eq!(op.span_name(), format!("keyvalue {}", op.name()));
        }
    }

    #[test]
    fn counters_snapshot_by_kind() {
        let counters = KvCounters::default();
        counters.record(KvOp::Get);
        counters.record(KvOp::Get);
        counters.record(KvOp::Swap);
        let before = counters.snapshot();
        assert_eq!((before.get, before.swap, before.total()), (2, 1, 3));

        counters.record(KvOp::SetMany);
        let delta = counters.snapshot().since(&before);
        assert_eq!(
            delta,
            KvStats {
                set_many: 1,
                ..KvStats::default()
            }
        );
        assert_eq!(delta.to_string(), "total=1 set_many=1");
    }
}
