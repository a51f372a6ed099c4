//! The nftables backend: programs one namespace's `ip` table.
//!
//! [`plan`] turns a [`ValidLbSpec`] into an nft [`Table`] (data, no I/O); [`NftBackend`] keeps
//! the table it last applied and sends only the difference ([`routemesh_nft::diff`]), one
//! transaction per sync, and replaces the whole table atomically at start and after any
//! failure. [`NftBackend::full_sync`] repairs drift with a resync ([`routemesh_nft::resync`]):
//! the structure through `nft -f`, every set flushed and refilled in one element transaction
//! (one netlink batch with [`routemesh_nft::NftNetlink`]). See `lb/README.md` for the
//! hook/chain diagram.

mod keys;
pub mod names;
mod plan;
mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub use keys::{FrontendKey, KeyKind, SlotKey, Target};
pub use plan::{apportion, plan, plan_keeping, slot_targets};
use routemesh_nft::{diff, resync, Executor, NftError, Op, Step, Table, Transaction};

use crate::model::{Frontend, ValidLbSpec, VirtualService};
use update::Index;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The whole table was replaced in one transaction.
    Full,
    /// Only changed elements (and appearing/emptied slot-count groups) were sent.
    Incremental,
    /// Nothing differed; nothing was sent.
    Unchanged,
    /// A full resync without re-parsing the elements: the structure (table, chains, rules,
    /// declarations) as one small `nft -f` transaction, then every set and map flushed and
    /// refilled in one element transaction.
    Resync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub mode: SyncMode,
    pub elements_added: usize,
    pub elements_removed: usize,
    /// The `nft -f` script's size (a resync's structure part; its elements go as one element
    /// transaction, over netlink with `NftNetlink`).
    pub script_bytes: usize,
    pub elapsed: Duration,
    /// Set when an incremental sync or a resync failed (or found rules it cannot rewrite
    /// drifted) and a replacement of the whole table repaired it; the reason.
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
        /// Why the replacement ran: the incremental sync's or the resync's failure.
        after: Option<String>,
    },
    #[error("nft table ip {table}: delete failed: {source}")]
    Delete {
        table: String,
        #[source]
        source: NftError,
    },
}

fn after_note(after: &Option<String>) -> String {
    after
        .as_ref()
        .map(|first| format!(" (after: {first})"))
        .unwrap_or_default()
}

/// One namespace's load-balancing table. Not shared between namespaces: the agent makes one per
/// load-balancing namespace, with an executor that applies transactions there.
pub struct NftBackend<E> {
    nft: E,
    applied: Option<Table>,
    /// The kernel's encoding of the rules of the chains a resync cannot rewrite
    /// ([`resync::Resync::kept_chains`]), read right after they were made; a resync compares
    /// them with what the kernel holds, and replaces the table when they differ.
    kept_rules: BTreeMap<String, Vec<Vec<u8>>>,
    /// What each frontend of `applied` holds, for [`update`](Self::update); set with it.
    index: Option<Index>,
    /// The groups the last [`full_sync`](Self::full_sync) kept with no frontend: the next one
    /// that finds them still empty removes them.
    empty_at_last_full: BTreeSet<(KeyKind, u32)>,
}

impl<E: Executor> NftBackend<E> {
    /// Starts with no cache, so the first [`sync`](Self::sync) is a full one (adopting whatever
    /// table of that name exists by replacing it atomically, never by flushing first).
    pub fn new(nft: E) -> Self {
        NftBackend {
            nft,
            applied: None,
            kept_rules: BTreeMap::new(),
            index: None,
            empty_at_last_full: BTreeSet::new(),
        }
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
        self.kept_rules.clear();
        self.index = None;
        self.empty_at_last_full.clear();
    }

    /// The slot-count groups the applied table has with no frontend in them: a group that
    /// empties (by [`update`](Self::update) or [`sync`](Self::sync)) keeps its set, map and
    /// chain, so the service that comes into it next (a scale from 3 to 4 after one from 4 to
    /// 3, a rolling update) is a few elements. Only a full sync removes groups, those it found
    /// empty the time before too (two periodic passes: 30-60 s).
    pub fn empty_groups(&self) -> BTreeSet<(KeyKind, u32)> {
        self.index
            .as_ref()
            .map(Index::empty_groups)
            .unwrap_or_default()
    }

    /// Changes some services only: removes the frontends `removed` and sets the services
    /// `set` (a service whose frontend is also in `removed` is updated), as one element
    /// transaction computed from what those frontends hold, at a cost that does not grow with
    /// the table. `Ok(None)` when the change needs the whole spec, nothing sent: no table
    /// applied yet, a slot-count group appears or empties, a service is invalid or conflicts
    /// with another, or the kernel refused the elements (then the cache is dropped, so the
    /// [`sync`](Self::sync) that follows replaces the table).
    pub fn update(&mut self, removed: &[Frontend], set: Vec<VirtualService>) -> Option<SyncReport> {
        let (applied, index) = (self.applied.as_ref()?, self.index.as_ref()?);
        let change = update::element_change(index, &applied.name, removed, set)?;
        let start = Instant::now();
        let (added, removed) = (change.txn.elements_added(), change.txn.elements_removed());
        if change.txn.ops.is_empty() {
            return Some(SyncReport {
                mode: SyncMode::Unchanged,
                elements_added: 0,
                elements_removed: 0,
                script_bytes: 0,
                elapsed: start.elapsed(),
                recovered_from: None,
            });
        }
        if let Err(e) = self.nft.apply(&change.txn) {
            tracing::warn!(
                table = %applied.name,
                error = %e,
                "nft element update failed; the whole table is replaced next"
            );
            self.invalidate();
            return None;
        }
        let elapsed = start.elapsed();
        let followed = self
            .applied
            .as_mut()
            .is_some_and(|t| t.follow_elements(&change.txn.ops));
        match (&mut self.index, followed) {
            (Some(index), true) => index.follow(change),
            _ => self.invalidate(),
        }
        Some(SyncReport {
            mode: SyncMode::Incremental,
            elements_added: added,
            elements_removed: removed,
            script_bytes: 0,
            elapsed,
            recovered_from: None,
        })
    }

    /// Sends only what changed since the last applied table. Falls back to a full sync when
    /// there is no cache or the change needs one, and right away after a failed incremental
    /// sync (the kernel may have drifted from the cache).
    pub fn sync(&mut self, spec: &ValidLbSpec) -> Result<SyncReport, NftSyncError> {
        // Groups that empty stay (only a full sync removes them).
        let keep = self
            .index
            .as_ref()
            .map(|i| i.made().clone())
            .unwrap_or_default();
        let report = self.sync_table(spec, &keep);
        self.index = report.is_ok().then(|| Index::of(spec, &keep));
        report
    }

    fn sync_table(
        &mut self,
        spec: &ValidLbSpec,
        keep: &BTreeSet<(KeyKind, u32)>,
    ) -> Result<SyncReport, NftSyncError> {
        let desired = plan_keeping(spec, keep);
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
                let added: Vec<String> = change
                    .ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::AddChain { chain, .. } => Some(chain.clone()),
                        _ => None,
                    })
                    .collect();
                self.record_kept_rules(&desired, &added);
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
                self.apply_full(desired, Some(e.to_string()))
            }
        }
    }

    /// Brings the kernel's table to `spec` whatever drifted: run it periodically.
    ///
    /// With a table applied before (the cache), a resync: the structure as one small `nft -f`
    /// transaction (table, every chain with its hook, every set and map declared, the rules of
    /// every chain flushed and written again, chains and sets no longer wanted deleted), then
    /// every set and map flushed and refilled in one element transaction (one netlink batch
    /// with [`routemesh_nft::NftNetlink`]), so no packet sees a set empty and nft never parses
    /// the elements. Rules nft cannot rewrite beside their existing map (the `vip_N` and
    /// `pub_N` chains) are compared with the kernel's instead. The whole table is replaced in
    /// one transaction (mode [`SyncMode::Full`], `recovered_from` saying why) when there is
    /// no cache (start: adopting whatever table of that name exists), when the resync's
    /// structure or elements are refused (a set of another type, say), or when those rules
    /// drifted.
    pub fn full_sync(&mut self, spec: &ValidLbSpec) -> Result<SyncReport, NftSyncError> {
        let keep: BTreeSet<(KeyKind, u32)> = self
            .empty_groups()
            .difference(&self.empty_at_last_full)
            .copied()
            .collect();
        let report = self.full_sync_table(spec, &keep);
        self.index = report.is_ok().then(|| Index::of(spec, &keep));
        self.empty_at_last_full = self.empty_groups();
        report
    }

    fn full_sync_table(
        &mut self,
        spec: &ValidLbSpec,
        keep: &BTreeSet<(KeyKind, u32)>,
    ) -> Result<SyncReport, NftSyncError> {
        let desired = plan_keeping(spec, keep);
        let Some(applied) = &self.applied else {
            return self.apply_full(desired, None);
        };
        let start = Instant::now();
        let Some(plan) = resync::resync(applied, &desired) else {
            return self.apply_full(desired, None);
        };
        if let Err(why) = self.check_kept_rules(&desired.name, &plan.kept_chains) {
            tracing::warn!(table = %desired.name, reason = %why, "nft resync: replacing the whole table");
            return self.apply_full(desired, Some(why));
        }
        if let Err((step, e)) = self.nft.apply_then(&plan.structure, &plan.elements) {
            let part = match step {
                Step::First => "structure",
                Step::Second => "elements",
            };
            let why = format!("resync of the {part} failed: {e}");
            tracing::warn!(table = %desired.name, reason = %why, "nft resync: replacing the whole table");
            return self.apply_full(desired, Some(why));
        }
        let elapsed = start.elapsed();
        let made: Vec<String> = desired
            .chains
            .iter()
            .filter(|c| !plan.kept_chains.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        self.record_kept_rules(&desired, &made);
        let report = SyncReport {
            mode: SyncMode::Resync,
            elements_added: desired.element_count(),
            elements_removed: 0,
            script_bytes: plan.structure.render().len(),
            elapsed,
            recovered_from: None,
        };
        self.applied = Some(desired);
        Ok(report)
    }

    /// Whether the kernel's rules of `chains` are the ones read when they were made; `Err`
    /// says which chain differs. Passes when the executor cannot read rules.
    fn check_kept_rules(&self, table: &str, chains: &[String]) -> Result<(), String> {
        if chains.is_empty() {
            return Ok(());
        }
        let Some(rules) = self.nft.rules(table) else {
            return Ok(());
        };
        let rules = rules.map_err(|e| format!("reading the rules of table ip {table}: {e}"))?;
        let mut by_chain: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for (chain, rule) in &rules {
            by_chain.entry(chain).or_default().push(rule);
        }
        for chain in chains {
            let Some(want) = self.kept_rules.get(chain) else {
                return Err(format!(
                    "chain {chain} of table ip {table}: its rules were never read back"
                ));
            };
            let have = by_chain.get(chain.as_str()).cloned().unwrap_or_default();
            if have.len() != want.len() || have.iter().zip(want).any(|(h, w)| *h != w.as_slice()) {
                return Err(format!(
                    "chain {chain} of table ip {table}: {} rules in the kernel differ from the {} applied",
                    have.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }

    /// Reads back the rules of those of `made` (chains just written) that a resync keeps
    /// rather than rewrites. Best effort: a chain not read is replaced at the next resync.
    fn record_kept_rules(&mut self, desired: &Table, made: &[String]) {
        self.kept_rules
            .retain(|chain, _| desired.chain(chain).is_some());
        let kept: Vec<&str> = made
            .iter()
            .filter(|name| {
                desired
                    .chain(name)
                    .is_some_and(|c| c.rules.iter().any(|r| !resync::readd_safe(desired, r)))
            })
            .map(String::as_str)
            .collect();
        if kept.is_empty() {
            return;
        }
        for chain in &kept {
            self.kept_rules.remove(*chain);
        }
        match self.nft.rules(&desired.name) {
            None => {}
            Some(Ok(rules)) => {
                for (chain, rule) in rules {
                    if kept.contains(&chain.as_str()) {
                        self.kept_rules.entry(chain).or_default().push(rule);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(table = %desired.name, error = %e, "reading back the nft rules failed");
            }
        }
    }

    /// Deletes the table (and forgets it); succeeds when it does not exist.
    pub fn delete_table(&mut self, table: &str) -> Result<(), NftSyncError> {
        self.invalidate();
        self.nft
            .apply(&Transaction::delete_table(table))
            .map_err(|source| NftSyncError::Delete {
                table: table.to_string(),
                source,
            })
    }

    /// Replaces the whole table; `first` is why (the failure it repairs).
    fn apply_full(
        &mut self,
        desired: Table,
        first: Option<String>,
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
        self.kept_rules.clear();
        match self.nft.apply(&txn) {
            Ok(()) => {
                let elapsed = start.elapsed();
                let report = SyncReport {
                    mode: SyncMode::Full,
                    elements_added: elements,
                    elements_removed: 0,
                    script_bytes: txn.render().len(),
                    elapsed,
                    recovered_from: first,
                };
                let applied = txn.ops.pop().and_then(|op| match op {
                    routemesh_nft::Op::Replace(table) => Some(table),
                    _ => None,
                });
                if let Some(table) = &applied {
                    self.kept_rules.clear();
                    let all: Vec<String> = table.chains.iter().map(|c| c.name.clone()).collect();
                    self.record_kept_rules(table, &all);
                }
                self.applied = applied;
                Ok(report)
            }
            Err(source) => Err(NftSyncError::Sync {
                table: name,
                mode: SyncMode::Full,
                source,
                after: first,
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
    fn a_new_group_adds_its_objects_and_an_emptied_one_stays_until_two_full_syncs() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend
            .sync(&spec(vec![vip(2, vec![be(1, 1), be(2, 1)])]))
            .unwrap();
        let three = spec(vec![vip(2, vec![be(1, 1), be(2, 1), be(3, 1)])]);
        backend.sync(&three).unwrap();
        assert_eq!(
            lines(&backend.nft().last_script().unwrap()),
            vec![
                "flush chain ip routemesh_lb services",
                "delete element ip routemesh_lb vip_fe_2 { 10.0.0.2 . tcp . 80 }",
                "delete element ip routemesh_lb vip_be_2 { 10.0.0.2 . tcp . 80 . 0, 10.0.0.2 . tcp . 80 . 1 }",
                "add set ip routemesh_lb vip_fe_3 { type ipv4_addr . inet_proto . inet_service; }",
                "add map ip routemesh_lb vip_be_3 { typeof ip daddr . meta l4proto . th dport . numgen random mod 3 : ip daddr . th dport; }",
                "add element ip routemesh_lb vip_fe_3 { 10.0.0.2 . tcp . 80 }",
                "add element ip routemesh_lb vip_be_3 { 10.0.0.2 . tcp . 80 . 0 : 10.1.0.1 . 80, 10.0.0.2 . tcp . 80 . 1 : 10.1.0.2 . 80, 10.0.0.2 . tcp . 80 . 2 : 10.1.0.3 . 80 }",
                "add chain ip routemesh_lb vip_3",
                "add rule ip routemesh_lb vip_3 ip daddr . meta l4proto . th dport @vip_fe_3 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @vip_be_3",
                "add rule ip routemesh_lb services jump vip_2",
                "add rule ip routemesh_lb services jump vip_3",
            ]
        );
        let vip2 = BTreeSet::from([(KeyKind::Vip, 2)]);
        assert_eq!(backend.empty_groups(), vip2);
        // Back to 2 backends: the kept group takes it as elements.
        let two = spec(vec![vip(2, vec![be(1, 1), be(2, 1)])]);
        backend.sync(&two).unwrap();
        assert!(lines(&backend.nft().last_script().unwrap())
            .iter()
            .all(|l| l.starts_with("add element") || l.starts_with("delete element")));
        // Empty at two full syncs in a row: the first keeps it, the second removes it.
        backend.sync(&three).unwrap();
        backend.full_sync(&three).unwrap();
        assert_eq!(backend.empty_groups(), vip2);
        backend.full_sync(&three).unwrap();
        assert!(backend.empty_groups().is_empty());
        assert_eq!(backend.applied(), Some(&plan(&three)));
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&three)));
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
            // Group 1 empties and stays (see `empty_groups`): elements only.
            vec![
                "delete element ip routemesh_lb vipa_fe_1 { 10.0.0.10 }",
                "delete element ip routemesh_lb vipa_be_1 { 10.0.0.10 . 0 }",
                "delete element ip routemesh_lb vipa_be_3 { 10.0.0.9 . 2 }",
                "add element ip routemesh_lb no_backend_vipa { 10.0.0.10 }",
                "add element ip routemesh_lb vipa_be_3 { 10.0.0.9 . 2 : 10.1.0.4 }",
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

    fn ten_services() -> ValidLbSpec {
        let mut services: Vec<VirtualService> = (2..8)
            .map(|i| vip(i, vec![be(1, 1), be(2, 1), be(i + 10, 1)]))
            .collect();
        services.push(any_port(20, vec![be(1, 1), be(2, 1), be(3, 1)]));
        services.push(vip(30, vec![be(1, 0)]));
        spec(services)
    }

    fn kernel_of(table: &Table) -> routemesh_nft::trace::Ruleset {
        routemesh_nft::trace::Ruleset::parse(&table.full_sync_script()).unwrap()
    }

    #[test]
    fn full_sync_after_a_sync_sends_the_structure_then_flushed_elements() {
        let mut backend = NftBackend::new(FakeNft::new());
        let s = ten_services();
        assert_eq!(backend.sync(&s).unwrap().mode, SyncMode::Full);
        let report = backend.full_sync(&s).unwrap();
        assert_eq!(report.mode, SyncMode::Resync);
        assert_eq!(report.elements_added, plan(&s).element_count());
        let txns = backend.nft().transactions();
        assert_eq!(txns.len(), 3);
        let structure = txns[1].render();
        assert!(
            structure.starts_with("add table ip routemesh_lb\n"),
            "{structure}"
        );
        for needle in [
            "add chain ip routemesh_lb nat_prerouting { type nat hook prerouting priority -100; policy accept; }\n",
            "add chain ip routemesh_lb vip_3\n",
            "add map ip routemesh_lb vip_be_3 { typeof ip daddr . meta l4proto . th dport . numgen random mod 3 : ip daddr . th dport; }\n",
            "flush chain ip routemesh_lb services\n",
            "add rule ip routemesh_lb services jump vip_3\n",
            "flush chain ip routemesh_lb vipa_3\n",
        ] {
            assert!(structure.contains(needle), "{needle:?} not in\n{structure}");
        }
        // nft 1.0.6 cannot re-add a rule beside its existing `: ip daddr . th dport` map.
        assert!(
            !structure.contains("flush chain ip routemesh_lb vip_3\n"),
            "{structure}"
        );
        assert!(!structure.contains("element"), "{structure}");
        let elements = &txns[2];
        assert!(elements
            .ops
            .iter()
            .all(|op| matches!(op, Op::FlushCollection { .. } | Op::AddElements { .. })));
        let text = elements.render();
        assert!(text.starts_with("flush set ip routemesh_lb no_backend_pub\nflush set ip routemesh_lb no_backend_vip\nadd element ip routemesh_lb no_backend_vip { 10.0.0.30 . tcp . 80 }\n"), "{text}");
        assert!(
            text.contains(
                "flush map ip routemesh_lb vip_be_3\nadd element ip routemesh_lb vip_be_3 {"
            ),
            "{text}"
        );
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&s)));
    }

    #[test]
    fn a_resync_repairs_elements_and_rules() {
        let mut backend = NftBackend::new(FakeNft::new());
        let s = ten_services();
        backend.sync(&s).unwrap();
        backend
            .nft()
            .tamper(
                "delete element ip routemesh_lb vip_fe_3 { 10.0.0.4 . tcp . 80 }\n\
                 add element ip routemesh_lb vipa_fe_3 { 10.9.9.9 }\n\
                 flush chain ip routemesh_lb services\n\
                 flush chain ip routemesh_lb nat_postrouting\n",
            )
            .unwrap();
        assert_ne!(backend.nft().ruleset(), kernel_of(&plan(&s)));
        let report = backend.full_sync(&s).unwrap();
        assert_eq!(
            (report.mode, report.recovered_from),
            (SyncMode::Resync, None)
        );
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&s)));
        // And a changed spec converges the same way (a group goes, one comes).
        let next = spec(vec![vip(2, vec![be(1, 1), be(2, 1)])]);
        assert_eq!(backend.full_sync(&next).unwrap().mode, SyncMode::Resync);
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&next)));
        assert_eq!(backend.full_sync(&next).unwrap().mode, SyncMode::Resync);
    }

    #[test]
    fn a_kept_chain_that_drifted_makes_the_resync_replace_the_table() {
        let mut backend = NftBackend::new(FakeNft::new());
        let s = ten_services();
        backend.sync(&s).unwrap();
        backend
            .nft()
            .tamper("flush chain ip routemesh_lb vip_3\n")
            .unwrap();
        let report = backend.full_sync(&s).unwrap();
        assert_eq!(report.mode, SyncMode::Full);
        let why = report.recovered_from.unwrap_or_default();
        assert!(
            why.contains("chain vip_3 of table ip routemesh_lb"),
            "{why}"
        );
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&s)));
        assert_eq!(backend.full_sync(&s).unwrap().mode, SyncMode::Resync);
    }

    #[test]
    fn a_group_made_incrementally_is_checked_too() {
        let mut backend = NftBackend::new(FakeNft::new());
        backend.sync(&spec(vec![vip(2, vec![be(1, 1)])])).unwrap();
        let s = spec(vec![
            vip(2, vec![be(1, 1)]),
            vip(3, vec![be(1, 1), be(2, 1)]),
        ]);
        assert_eq!(backend.sync(&s).unwrap().mode, SyncMode::Incremental);
        assert_eq!(backend.full_sync(&s).unwrap().mode, SyncMode::Resync);
        backend
            .nft()
            .tamper("flush chain ip routemesh_lb vip_2\n")
            .unwrap();
        assert_eq!(backend.full_sync(&s).unwrap().mode, SyncMode::Full);
    }

    #[test]
    fn a_refused_resync_falls_back_to_a_replacement() {
        let mut backend = NftBackend::new(FakeNft::new());
        let s = ten_services();
        backend.sync(&s).unwrap();
        // The structure refused (a set of another type after an upgrade, say).
        backend
            .nft()
            .fail_next("Error: Could not process rule: File exists");
        let report = backend.full_sync(&s).unwrap();
        assert_eq!(report.mode, SyncMode::Full);
        assert_eq!(
            report.recovered_from.as_deref(),
            Some("resync of the structure failed: Error: Could not process rule: File exists")
        );
        let scripts = backend.nft().scripts();
        assert!(scripts.last().unwrap().starts_with(
            "add table ip routemesh_lb\ndelete table ip routemesh_lb\ntable ip routemesh_lb {\n"
        ));
        // The element batch refused.
        backend.nft().fail_at(
            1,
            "nft netlink: flushing set ip routemesh_lb vip_fe_3: refused",
        );
        let report = backend.full_sync(&s).unwrap();
        assert_eq!(report.mode, SyncMode::Full);
        assert!(report
            .recovered_from
            .unwrap_or_default()
            .starts_with("resync of the elements failed: nft netlink: flushing"));
        assert_eq!(backend.nft().ruleset(), kernel_of(&plan(&s)));
        // Both refused: the error says why the replacement ran.
        backend.nft().fail_next("structure refused");
        backend.nft().fail_next("replacement refused");
        let err = backend.full_sync(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nft table ip routemesh_lb: Full sync failed: replacement refused (after: resync of the structure failed: structure refused)"
        );
        assert!(backend.applied().is_none());
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod update_tests;
