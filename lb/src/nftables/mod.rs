//! The nftables backend: programs one namespace's `ip` table.
//!
//! [`plan`] turns a [`ValidLbSpec`] into an nft [`Table`] (data, no I/O); [`NftBackend`] keeps
//! the table it last applied and sends only the difference ([`routemesh_nft::diff`]), one
//! transaction per sync, and replaces the whole table atomically at start and after any
//! failure. See `lb/README.md` for the hook/chain diagram.

mod keys;
pub mod names;
mod plan;

use std::time::{Duration, Instant};

pub use keys::{FrontendKey, KeyKind, SlotKey, Target};
pub use plan::{apportion, plan, slot_targets};
use routemesh_nft::{diff, Executor, NftError, Table, Transaction};

use crate::model::ValidLbSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The whole table was replaced in one transaction.
    Full,
    /// Only changed elements (and appearing/emptied slot-count groups) were sent.
    Incremental,
    /// Nothing differed; nothing was sent.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub mode: SyncMode,
    pub elements_added: usize,
    pub elements_removed: usize,
    pub script_bytes: usize,
    pub elapsed: Duration,
    /// Set when an incremental sync failed and a full sync repaired it; the failure's message.
    pub recovered_from: Option<String>,
}

/// A sync of the load-balancing table that failed; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum NftSyncError {
    #[error("nft table ip {table}: {mode:?} sync failed: {source}{}", after_note(.after))]
    Sync {
        table: String,
        mode: SyncMode,
        #[source]
        source: NftError,
        /// The incremental sync's failure, when this was the full sync repairing it.
        after: Option<Box<NftError>>,
    },
    #[error("nft table ip {table}: delete failed: {source}")]
    Delete {
        table: String,
        #[source]
        source: NftError,
    },
}

fn after_note(after: &Option<Box<NftError>>) -> String {
    after
        .as_ref()
        .map(|first| format!(" (after incremental sync failed: {first})"))
        .unwrap_or_default()
}

/// One namespace's load-balancing table. Not shared between namespaces: the agent makes one per
/// load-balancing namespace, with an executor that applies transactions there.
pub struct NftBackend<E> {
    nft: E,
    applied: Option<Table>,
}

impl<E: Executor> NftBackend<E> {
    /// Starts with no cache, so the first [`sync`](Self::sync) is a full one (adopting whatever
    /// table of that name exists by replacing it atomically, never by flushing first).
    pub fn new(nft: E) -> Self {
        NftBackend { nft, applied: None }
    }

    pub fn nft(&self) -> &E {
        &self.nft
    }

    /// The table as last applied, if the cache is valid.
    pub fn applied(&self) -> Option<&Table> {
        self.applied.as_ref()
    }

    /// Forget the cache: the next [`sync`](Self::sync) is a full one.
    pub fn invalidate(&mut self) {
        self.applied = None;
    }

    /// Sends only what changed since the last applied table. Falls back to a full sync when
    /// there is no cache or the change needs one, and right away after a failed incremental
    /// sync (the kernel may have drifted from the cache).
    pub fn sync(&mut self, spec: &ValidLbSpec) -> Result<SyncReport, NftSyncError> {
        let desired = plan(spec);
        let Some(applied) = &self.applied else {
            return self.apply_full(desired, None);
        };
        let Some(change) = diff::incremental(applied, &desired) else {
            return self.apply_full(desired, None);
        };
        let start = Instant::now();
        if change.is_empty() {
            return Ok(SyncReport {
                mode: SyncMode::Unchanged,
                elements_added: 0,
                elements_removed: 0,
                script_bytes: 0,
                elapsed: start.elapsed(),
                recovered_from: None,
            });
        }
        match self.nft.apply(&change) {
            Ok(()) => {
                let elapsed = start.elapsed();
                self.applied = Some(desired);
                Ok(SyncReport {
                    mode: SyncMode::Incremental,
                    elements_added: change.elements_added(),
                    elements_removed: change.elements_removed(),
                    script_bytes: change.render().len(),
                    elapsed,
                    recovered_from: None,
                })
            }
            Err(e) => {
                tracing::warn!(
                    table = %desired.name,
                    error = %e,
                    "incremental nft sync failed; replacing the whole table"
                );
                self.apply_full(desired, Some(e))
            }
        }
    }

    /// Replaces the whole table in one transaction. Run it at start and periodically to repair
    /// drift.
    pub fn full_sync(&mut self, spec: &ValidLbSpec) -> Result<SyncReport, NftSyncError> {
        self.apply_full(plan(spec), None)
    }

    /// Deletes the table (and forgets it); succeeds when it does not exist.
    pub fn delete_table(&mut self, table: &str) -> Result<(), NftSyncError> {
        self.applied = None;
        self.nft
            .apply(&Transaction::delete_table(table))
            .map_err(|source| NftSyncError::Delete {
                table: table.to_string(),
                source,
            })
    }

    /// Replaces the whole table; `first` is the incremental sync's failure it repairs.
    fn apply_full(
        &mut self,
        desired: Table,
        first: Option<NftError>,
    ) -> Result<SyncReport, NftSyncError> {
        let start = Instant::now();
        let mut txn = Transaction::new();
        if let Some(old) = self.applied.as_ref().filter(|t| t.name != desired.name) {
            txn.ops.extend(Transaction::delete_table(&old.name).ops);
        }
        let elements = desired.element_count();
        let name = desired.name.clone();
        txn.push(routemesh_nft::Op::Replace(desired));
        self.applied = None;
        match self.nft.apply(&txn) {
            Ok(()) => {
                let elapsed = start.elapsed();
                let report = SyncReport {
                    mode: SyncMode::Full,
                    elements_added: elements,
                    elements_removed: 0,
                    script_bytes: txn.render().len(),
                    elapsed,
                    recovered_from: first.map(|e| e.to_string()),
                };
                self.applied = txn.ops.pop().and_then(|op| match op {
                    routemesh_nft::Op::Replace(table) => Some(table),
                    _ => None,
                });
                Ok(report)
            }
            Err(source) => Err(NftSyncError::Sync {
                table: name,
                mode: SyncMode::Full,
                source,
                after: first.map(Box::new),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use routemesh_nft::FakeNft;

    use super::*;
    use crate::model::{Backend, Frontend, LbSpec, Proto, VirtualService};

    fn be(last: u8, weight: u32) -> Backend {
        Backend {
            addr: Ipv4Addr::new(10, 1, 0, last),
            port: 80,
            weight,
        }
    }

    fn vip(last: u8, backends: Vec<Backend>) -> VirtualService {
        VirtualService {
            frontend: Frontend::Vip {
                addr: Ipv4Addr::new(10, 0, 0, last),
                port: 80,
                proto: Proto::Tcp,
            },
            backends,
            scheduler: Default::default(),
        }
    }

    fn spec(services: Vec<VirtualService>) -> ValidLbSpec {
        LbSpec {
            services,
            ..LbSpec::default()
        }
        .validate()
        .unwrap()
    }

    fn lines(script: &str) -> Vec<&str> {
        script.lines().collect()
    }

    #[test]
    fn first_sync_is_full_then_unchanged() {
        let mut backend = NftBackend::new(FakeNft::new());
        let s = spec(vec![vip(2, vec![be(1, 1), be(2, 1)])]);
        assert_eq!(backend.sync(&s).unwrap().mode, SyncMode::Full);
        let script = backend.nft().last_script().unwrap();
        assert!(script.starts_with(
            "add table ip routemesh_lb\ndelete table ip routemesh_lb\ntable ip routemesh_lb {\n"
        ));
        assert_eq!(backend.sync(&s).unwrap().mode, SyncMode::Unchanged);
        assert_eq!(backend.nft().scripts().len(), 1);
    }

    #[test]
    fn backend_swap_sends_only_elements() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 1), be(2, 1), be(3, 1)])]))
            .unwrap();
        let report = backend
            .sync(&spec(vec![vip(2, vec![be(1, 1), be(2, 1), be(4, 1)])]))
            .unwrap();
        assert_eq!(report.mode, SyncMode::Incremental);
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "delete element ip routemesh_lb vip_be_3 { 10.0.0.2 . tcp . 80 . 2 }",
                "add element ip routemesh_lb vip_be_3 { 10.0.0.2 . tcp . 80 . 2 : 10.1.0.4 . 80 }",
            ]
        );
    }

    #[test]
    fn new_and_emptied_groups_add_and_remove_their_objects() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 1), be(2, 1)])]))
            .unwrap();
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 1), be(2, 1), be(3, 1)])]))
            .unwrap();
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "flush chain ip routemesh_lb services",
                "flush chain ip routemesh_lb vip_2",
                "delete chain ip routemesh_lb vip_2",
                "delete set ip routemesh_lb vip_fe_2",
                "delete map ip routemesh_lb vip_be_2",
                "add set ip routemesh_lb vip_fe_3 { type ipv4_addr . inet_proto . inet_service; }",
                "add map ip routemesh_lb vip_be_3 { typeof ip daddr . meta l4proto . th dport . numgen random mod 3 : ip daddr . th dport; }",
                "add element ip routemesh_lb vip_fe_3 { 10.0.0.2 . tcp . 80 }",
                "add element ip routemesh_lb vip_be_3 { 10.0.0.2 . tcp . 80 . 0 : 10.1.0.1 . 80, 10.0.0.2 . tcp . 80 . 1 : 10.1.0.2 . 80, 10.0.0.2 . tcp . 80 . 2 : 10.1.0.3 . 80 }",
                "add chain ip routemesh_lb vip_3",
                "add rule ip routemesh_lb vip_3 ip daddr . meta l4proto . th dport @vip_fe_3 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @vip_be_3",
                "add rule ip routemesh_lb services jump vip_3",
            ]
        );
    }

    #[test]
    fn all_draining_moves_frontend_to_no_backend() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 1)]), vip(3, vec![be(1, 1)])]))
            .unwrap();
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 0)]), vip(3, vec![be(1, 1)])]))
            .unwrap();
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "delete element ip routemesh_lb vip_fe_1 { 10.0.0.2 . tcp . 80 }",
                "delete element ip routemesh_lb vip_be_1 { 10.0.0.2 . tcp . 80 . 0 }",
                "add element ip routemesh_lb no_backend_vip { 10.0.0.2 . tcp . 80 }",
            ]
        );
    }

    fn any_port(last: u8, backends: Vec<Backend>) -> VirtualService {
        VirtualService {
            frontend: Frontend::VipAnyPort {
                addr: Ipv4Addr::new(10, 0, 0, last),
            },
            backends,
            scheduler: Default::default(),
        }
    }

    #[test]
    fn address_only_vip_changes_send_only_elements() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend
            .sync(&spec(vec![
                any_port(9, vec![be(1, 1), be(2, 1), be(3, 1)]),
                any_port(10, vec![be(1, 1)]),
            ]))
            .unwrap();
        let full = backend.nft().last_script().unwrap();
        for needle in [
            "\t\ttypeof ip daddr . numgen random mod 3 : ip daddr\n",
            "\t\tip daddr @vipa_fe_3 dnat ip to ip daddr . numgen random mod 3 map @vipa_be_3\n",
            "\t\tct state new ip daddr @no_backend_vipa goto reject_no_backend\n",
            "\t\t\t10.0.0.9 . 2 : 10.1.0.3\n",
        ] {
            assert!(full.contains(needle), "{needle:?} not in\n{full}");
        }
        let report = backend
            .sync(&spec(vec![
                any_port(9, vec![be(1, 1), be(2, 1), be(4, 1)]),
                any_port(10, vec![be(1, 0)]),
            ]))
            .unwrap();
        assert_eq!(report.mode, SyncMode::Incremental);
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "flush chain ip routemesh_lb services",
                "flush chain ip routemesh_lb vipa_1",
                "delete element ip routemesh_lb vipa_be_3 { 10.0.0.9 . 2 }",
                "delete chain ip routemesh_lb vipa_1",
                "delete set ip routemesh_lb vipa_fe_1",
                "delete map ip routemesh_lb vipa_be_1",
                "add element ip routemesh_lb no_backend_vipa { 10.0.0.10 }",
                "add element ip routemesh_lb vipa_be_3 { 10.0.0.9 . 2 : 10.1.0.4 }",
                "add rule ip routemesh_lb services jump vipa_3",
            ]
        );
    }

    #[test]
    fn failed_incremental_sync_falls_back_to_full() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend.sync(&spec(vec![vip(2, vec![be(1, 1)])])).unwrap();
        backend.nft().fail_next("Error: No such file or directory");
        let report = backend.sync(&spec(vec![vip(2, vec![be(2, 1)])])).unwrap();
        assert_eq!(report.mode, SyncMode::Full);
        assert_eq!(
            report.recovered_from.as_deref(),
            Some("Error: No such file or directory")
        );
        assert_eq!(backend.nft().scripts().len(), 3);
    }

    #[test]
    fn failed_full_sync_leaves_no_cache() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend.nft().fail_next("boom");
        let err = backend.sync(&spec(vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nft table ip routemesh_lb: Full sync failed: boom"
        );
        assert!(backend.applied().is_none());
        assert_eq!(backend.sync(&spec(vec![])).unwrap().mode, SyncMode::Full);
    }

    #[test]
    fn snat_change_rewrites_only_postrouting() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend.sync(&spec(vec![])).unwrap();
        let s = LbSpec {
            snat: crate::model::Snat::To(Ipv4Addr::new(10, 0, 0, 1)),
            ..LbSpec::default()
        }
        .validate()
        .unwrap();
        backend.sync(&s).unwrap();
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "flush chain ip routemesh_lb nat_postrouting",
                "add rule ip routemesh_lb nat_postrouting ct status dnat snat ip to 10.0.0.1",
            ]
        );
    }
}
