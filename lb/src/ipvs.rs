//! The IPVS backend: programs one namespace's IPVS table (one fwmark virtual service per
//! frontend, masquerading to the backends) and one nftables table of its own that marks the
//! packets, refuses new connections to frontends without an active backend, and source-NATs
//! what IPVS forwarded. The agent makes one [`IpvsBackend`] per load-balancing namespace, as
//! with the nftables backend.
//!
//! ```text
//! ValidLbSpec --allocate_marks--> Marks --desired_state (pure)--> IpvsState --diff (pure)--> [IpvsChange]
//!                                      \--marking_table (pure)--> nft Table (sent when it changed)
//! ```
//!
//! # Packet path (table `ip routemesh_ipvs`)
//!
//! ```text
//!  arriving packet                                    locally generated packet
//!  prerouting -150 mark_prerouting --jump--+          output -150 mark_output --jump--+
//!                                          v                                         v
//!    set_mark:  meta mark set ip daddr . meta l4proto . th dport map @vip_port_marks  goto check_backend
//!               meta mark set ip daddr map @vip_addr_marks                            goto check_backend
//!               fib daddr type local meta mark set meta l4proto . th dport map @published_marks
//!                                                                                     goto check_backend
//!    check_backend: ct state new meta mark @no_backend_marks goto reject_no_backend
//!                   (tcp: reset, else icmp port-unreachable)
//!  routing: the VIP / published address is local -> LOCAL_IN (or LOCAL_OUT)
//!    IPVS: fwmark service of the mark -> scheduler -> Masq to backend (port, or the packet's own
//!          port for address-only VIPs: destination port 0)
//!  postrouting 100 snat_postrouting: meta mark 0x100-0xffff masquerade | snat ip to ADDR
//! ```
//!
//! VIPs with a port come before address-only VIPs (they never share an address), and both
//! before published ports, so a VIP wins over a published port on the same address, as in the
//! nftables backend. A frontend whose backends are all draining (or that has none) keeps its
//! IPVS service with its weight-0 destinations, so established connections finish, and its mark
//! is in `no_backend_marks`, so new ones are refused at once instead of dropped by IPVS.
//!
//! What the caller must provide in the namespace: every VIP address must be a local address
//! (e.g. a /32 on `lo`; IPVS sees packets only in LOCAL_IN), `net.ipv4.ip_forward=1` (replies
//! are de-SNATed in prerouting and forwarded back), and [`prepare_namespace`] for the IPVS
//! sysctls and timeouts. ICMP echo to an address-only VIP is answered by the lb namespace
//! itself (IPVS balances TCP, UDP and SCTP), unlike the nftables backend.
//!
//! # Marks
//!
//! See [`allocate_marks`]: `0x100 + index` in sorted frontend order on a fresh start; stable
//! for a frontend while it stays; a freed mark is reused one sync later at the earliest. The
//! backend owns the fwmark IPv4 services with marks `0x100..=0xffff` of its namespace and
//! deletes those not in the spec; other services are left alone.
//!
//! # Syncing
//!
//! [`IpvsBackend::sync`] diffs the desired services against the cache of the last sync (a dump
//! at the first sync), applies only the difference (new services and destinations first, then
//! the marking table if its text changed, then deleted services), and replaces the marking
//! table atomically (`add table; delete table; table {...}`, one `nft -f`) only when its text
//! changed. After any failure the caches are dropped and a full sync runs at once;
//! [`IpvsBackend::full_sync`] re-reads the kernel and resends the table (run it periodically).

mod kernel;
mod marking;
mod marks;
mod namespace;
mod state;

use std::path::Path;
use std::time::{Duration, Instant};

use routemesh_ipvs::{IpvsClient, IpvsError};

pub use kernel::{FakeIpvs, IpvsTable};
pub use marking::{
    marking_table, MarkedFrontend, CHAIN_CHECK_BACKEND, CHAIN_MARK, CHAIN_MARK_OUTPUT,
    CHAIN_MARK_PREROUTING, CHAIN_REJECT, CHAIN_SNAT, DEFAULT_TABLE, MAP_PUBLISHED_MARKS,
    MAP_VIP_ADDR_MARKS, MAP_VIP_PORT_MARKS, PRIORITY_MARK, PRIORITY_SRCNAT, SET_NO_BACKEND_MARKS,
};
pub use marks::{allocate_marks, Marks, MarksExhausted, MARK_FIRST, MARK_LAST};
pub use namespace::{
    ipvs_available, prepare_namespace, IpvsUnavailable, Modprobe, PrepareError, Timeouts,
    MAX_TIMEOUT, SYSCTLS,
};
pub use state::{
    desired_state, diff, fwmark_key, fwmark_service, is_owned, read_state, ChangeCounts,
    IpvsChange, IpvsState, ServiceState,
};

use routemesh_nft::{Executor, NftError, Table, Transaction};

use crate::model::ValidLbSpec;
use crate::nftables::SyncMode;

#[derive(Debug, thiserror::Error)]
pub enum IpvsBackendError {
    #[error("opening IPVS in {}: {source}", netns.display())]
    Open {
        netns: std::path::PathBuf,
        #[source]
        source: IpvsError,
    },
    #[error(transparent)]
    Marks(#[from] MarksExhausted),
    /// The kernel refused a request; the message names the operation and the object.
    #[error("IPVS: {0}")]
    Ipvs(#[from] IpvsError),
    #[error("nft table ip {table}: replacing the marking table failed: {source}")]
    Nft {
        table: String,
        #[source]
        source: NftError,
    },
    /// The full sync that followed a failed incremental one failed too.
    #[error("{source} (after an incremental sync failed: {first})")]
    Recovery {
        first: Box<IpvsBackendError>,
        #[source]
        source: Box<IpvsBackendError>,
    },
    /// Teardown went on after errors; all of them.
    #[error("tearing down IPVS: {}", join(.0))]
    Teardown(Vec<IpvsBackendError>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSyncReport {
    /// `Full`: the kernel's IPVS table was dumped and the marking table sent whatever the
    /// cache said; `Incremental`: diffed against the cache; `Unchanged`: nothing sent.
    pub mode: SyncMode,
    pub changes: ChangeCounts,
    /// Whether the nft marking table was (re)placed.
    pub marking_replaced: bool,
    pub elapsed: Duration,
    /// Set when an incremental sync failed and a full sync repaired it; the failure's message.
    pub recovered_from: Option<String>,
}

fn join(errors: &[IpvsBackendError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// What the IPVS dataplane programs for `spec` with these marks: the marking table (named
/// `table`) and the IPVS services. Pure.
pub fn desired(table: &str, spec: &ValidLbSpec, marks: &Marks) -> (Table, IpvsState) {
    let marked: Vec<MarkedFrontend> = spec
        .services()
        .iter()
        .filter_map(|vs| {
            marks.get(&vs.frontend).map(|&mark| MarkedFrontend {
                frontend: vs.frontend,
                mark,
                has_active_backend: vs.active_backends().next().is_some(),
            })
        })
        .collect();
    (
        marking_table(table, spec.snat(), &marked),
        desired_state(spec, marks),
    )
}

/// One namespace's IPVS dataplane. `ipvs` must be a client opened in that namespace
/// ([`IpvsBackend::open`]), `nft` must apply transactions in it.
pub struct IpvsBackend<E, K = IpvsClient> {
    nft: E,
    ipvs: K,
    table: String,
    marks: Marks,
    /// What IPVS holds after the last successful sync; `None`: dump it next time.
    applied_ipvs: Option<IpvsState>,
    /// The marking table last applied; `None`: send it next time.
    applied_marking: Option<Table>,
}

impl<E: Executor> IpvsBackend<E, IpvsClient> {
    /// Opens an IPVS client inside `netns` (e.g. `/run/netns/ingress_sbox`); the socket stays
    /// bound to that namespace whichever thread uses the backend later.
    pub fn open(netns: &Path, nft: E) -> Result<Self, IpvsBackendError> {
        let ipvs = IpvsClient::open_in_netns(netns).map_err(|source| IpvsBackendError::Open {
            netns: netns.to_path_buf(),
            source,
        })?;
        Ok(IpvsBackend::new(nft, ipvs))
    }
}

impl<E: Executor, K: IpvsTable> IpvsBackend<E, K> {
    /// Starts with no cache: the first [`sync`](Self::sync) dumps the kernel's table and adopts
    /// it (changing only what differs), and replaces the marking table atomically.
    pub fn new(nft: E, ipvs: K) -> Self {
        IpvsBackend {
            nft,
            ipvs,
            table: DEFAULT_TABLE.to_string(),
            marks: Marks::new(),
            applied_ipvs: None,
            applied_marking: None,
        }
    }

    pub fn nft(&self) -> &E {
        &self.nft
    }

    pub fn ipvs(&self) -> &K {
        &self.ipvs
    }

    pub fn ipvs_mut(&mut self) -> &mut K {
        &mut self.ipvs
    }

    /// The nft table the backend owns (`routemesh_ipvs`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Current frontend -> firewall mark allocation.
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Forget the caches: the next [`sync`](Self::sync) re-reads the kernel and resends the
    /// marking table.
    pub fn invalidate(&mut self) {
        self.applied_ipvs = None;
        self.applied_marking = None;
    }

    /// Applies only what differs from the last sync (a dump of the kernel when there is no
    /// cache). After a failure it forgets its caches and runs a full sync at once.
    pub fn sync(&mut self, spec: &ValidLbSpec) -> Result<IpvsSyncReport, IpvsBackendError> {
        if self.applied_ipvs.is_none() || self.applied_marking.is_none() {
            return self.apply(spec, true, None);
        }
        match self.apply(spec, false, None) {
            Ok(report) => Ok(report),
            Err(first) => {
                tracing::warn!(error = %first, "incremental IPVS sync failed; running a full sync");
                self.apply(spec, true, Some(first.to_string()))
                    .map_err(|source| IpvsBackendError::Recovery {
                        first: Box::new(first),
                        source: Box::new(source),
                    })
            }
        }
    }

    /// Re-reads the kernel's IPVS table, applies the difference and replaces the marking table.
    /// Run it at start and periodically to repair drift.
    pub fn full_sync(&mut self, spec: &ValidLbSpec) -> Result<IpvsSyncReport, IpvsBackendError> {
        self.apply(spec, true, None)
    }

    /// Removes the marking table and every service the backend owns (fwmark services in
    /// `MARK_FIRST..=MARK_LAST`), going on after errors and reporting all of them.
    pub fn teardown(&mut self) -> Result<(), IpvsBackendError> {
        self.invalidate();
        self.marks.clear();
        let mut errors = Vec::new();
        if let Err(source) = self.nft.apply(&Transaction::delete_table(&self.table)) {
            errors.push(IpvsBackendError::Nft {
                table: self.table.clone(),
                source,
            });
        }
        match read_state(&mut self.ipvs) {
            Ok(state) => {
                for service in state.values() {
                    let change = IpvsChange::DeleteService(service.service.key);
                    if let Err(e) = self.ipvs.apply(&change) {
                        errors.push(e.into());
                    }
                }
            }
            Err(e) => errors.push(e.into()),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(IpvsBackendError::Teardown(errors))
        }
    }

    fn apply(
        &mut self,
        spec: &ValidLbSpec,
        full: bool,
        recovered_from: Option<String>,
    ) -> Result<IpvsSyncReport, IpvsBackendError> {
        let start = Instant::now();
        let marks = allocate_marks(&self.marks, spec.services().iter().map(|s| s.frontend))?;
        let (marking, desired) = desired(&self.table, spec, &marks);
        self.marks = marks;

        // Taken out of the cache: a failure below leaves no cache, so the next sync re-reads.
        let cached = self.applied_ipvs.take();
        let current = match cached {
            Some(state) if !full => state,
            _ => read_state(&mut self.ipvs)?,
        };
        let changes = diff(&current, &desired);
        let send_marking = full || self.applied_marking.as_ref() != Some(&marking);
        if changes.is_empty() && !send_marking {
            self.applied_ipvs = Some(desired);
            return Ok(IpvsSyncReport {
                mode: SyncMode::Unchanged,
                changes: ChangeCounts::default(),
                marking_replaced: false,
                elapsed: start.elapsed(),
                recovered_from,
            });
        }

        // Services and destinations first, so a newly marked packet finds its service; the
        // marks of removed frontends go before their services.
        let split = changes
            .iter()
            .position(|c| matches!(c, IpvsChange::DeleteService(_)))
            .unwrap_or(changes.len());
        let (before, deletions) = changes.split_at(split);
        for change in before {
            self.ipvs.apply(change)?;
        }
        if send_marking {
            self.applied_marking = None;
            self.nft
                .apply(&Transaction::replace(marking.clone()))
                .map_err(|source| IpvsBackendError::Nft {
                    table: self.table.clone(),
                    source,
                })?;
            self.applied_marking = Some(marking);
        }
        for change in deletions {
            self.ipvs.apply(change)?;
        }
        self.applied_ipvs = Some(desired);
        Ok(IpvsSyncReport {
            mode: if full {
                SyncMode::Full
            } else {
                SyncMode::Incremental
            },
            changes: ChangeCounts::of(&changes),
            marking_replaced: send_marking,
            elapsed: start.elapsed(),
            recovered_from,
        })
    }
}
