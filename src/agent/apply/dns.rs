//! The embedded DNS on this node: one shared name table, and per local sandbox a UDP and a
//! TCP socket opened inside the sandbox on 127.0.0.11 at a port of the kernel's choosing,
//! with a small nft table in the sandbox redirecting 127.0.0.11:53 to them (Docker's trick):
//! a task may bind port 53 itself, even on 0.0.0.0, without breaking its resolver.

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use routemesh_dns::{
    serve, Forwarder, Limits, Querier, Resolver, ServeContext, ServerHandle, Sockets, TableOptions,
};
use routemesh_netdev::spec::SandboxSpec;
use routemesh_netdev::{dns_redirect, netns};
use routemesh_nft::{Executor, NftCmd, NftError, Transaction};

use super::{Pass, Reconciler, Resource};
use crate::agent::plan::dns::DnsPlan;

/// Where tasks send their queries.
pub const DNS_ADDR: std::net::Ipv4Addr = dns_redirect::DNS_ADDR;

struct Listener {
    netns: PathBuf,
    querier: Arc<Querier>,
    handle: ServerHandle,
}

pub struct DnsService {
    resolver: Arc<Resolver>,
    forwarder: Option<Arc<Forwarder>>,
    ttl: u32,
    listeners: BTreeMap<String, Listener>,
    /// The version of the plan the resolver's table was made from.
    applied: Option<u64>,
}

/// A sandbox whose resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns for task {task}: entering {}: {source}", netns.display())]
    Enter {
        task: String,
        netns: PathBuf,
        #[source]
        source: Box<routemesh_netdev::Error>,
    },
    #[error("dns for task {task}: binding {DNS_ADDR} in {}: {source}", netns.display())]
    Bind {
        task: String,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dns for task {task}: redirecting {DNS_ADDR}:53: {source}")]
    Redirect {
        task: String,
        #[source]
        source: NftError,
    },
    #[error("dns for task {task}: serving dns in {}: {source}", netns.display())]
    Serve {
        task: String,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn bind_in(task: &str, ns: &Path) -> Result<(UdpSocket, TcpListener), DnsError> {
    let r = netns::run_in(ns, || -> std::io::Result<(UdpSocket, TcpListener)> {
        let udp = UdpSocket::bind((DNS_ADDR, 0))?;
        let tcp = TcpListener::bind((DNS_ADDR, 0))?;
        Ok((udp, tcp))
    });
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(DnsError::Bind {
            task: task.to_string(),
            netns: ns.to_path_buf(),
            source,
        }),
        Err(source) => Err(DnsError::Enter {
            task: task.to_string(),
            netns: ns.to_path_buf(),
            source: Box::new(source),
        }),
    }
}

impl DnsService {
    pub fn new(forwarder: Option<Forwarder>, ttl: u32) -> DnsService {
        DnsService {
            resolver: Arc::new(Resolver::default()),
            forwarder: forwarder.map(Arc::new),
            ttl,
            listeners: BTreeMap::new(),
            applied: None,
        }
    }

    /// Swaps in the new table, then makes the listeners match the sandboxes that exist.
    /// `ready` holds each local task whose sandbox is up.
    pub fn sync(&mut self, plan: &DnsPlan, ready: &BTreeMap<String, SandboxSpec>) -> Vec<DnsError> {
        let mut errors = Vec::new();
        let options = TableOptions { ttl: self.ttl };
        // The table follows the plan's versions: from the one it was built for, only the
        // changed services' names are re-made; from any other, the whole table.
        let skipped = if self.applied == Some(plan.version) {
            Vec::new()
        } else if plan.base != 0 && self.applied == Some(plan.base) {
            self.resolver
                .update_changed(&plan.input, options, &plan.changed)
        } else {
            self.resolver.update(&plan.input, options)
        };
        self.applied = Some(plan.version);
        for s in skipped {
            tracing::debug!(detail = %s, "dns: name table skipped an entry");
        }
        let gone: Vec<String> = self
            .listeners
            .iter()
            .filter(|(t, l)| {
                ready.get(*t).map(|s| &s.netns) != Some(&l.netns) || !plan.queriers.contains_key(*t)
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            if let Some(l) = self.listeners.remove(&t) {
                l.handle.stop();
            }
        }
        for (task, sandbox) in ready {
            let Some(nets) = plan.queriers.get(task) else {
                continue;
            };
            if let Some(l) = self.listeners.get(task) {
                if l.querier.networks().as_slice() != nets.as_slice() {
                    l.querier.set_networks(nets.clone());
                }
                continue;
            }
            match self.listen(task, &sandbox.netns, nets.clone()) {
                Ok(l) => {
                    self.listeners.insert(task.clone(), l);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    fn listen(&self, task: &str, ns: &Path, networks: Vec<String>) -> Result<Listener, DnsError> {
        let (udp, tcp) = bind_in(task, ns)?;
        let bind_err = |source| DnsError::Bind {
            task: task.to_string(),
            netns: ns.to_path_buf(),
            source,
        };
        let up = udp.local_addr().map_err(bind_err)?.port();
        let tp = tcp.local_addr().map_err(bind_err)?.port();
        NftCmd::in_netns(ns)
            .apply(&Transaction::replace(dns_redirect::table(up, tp)))
            .map_err(|source| DnsError::Redirect {
                task: task.to_string(),
                source,
            })?;
        let querier = Arc::new(Querier::new(networks));
        let handle = serve(
            self.resolver.clone(),
            self.forwarder.clone(),
            Sockets {
                udp: vec![udp],
                tcp: vec![tcp],
            },
            ServeContext {
                querier: querier.clone(),
                limits: Limits::default(),
            },
        )
        .map_err(|source| DnsError::Serve {
            task: task.to_string(),
            netns: ns.to_path_buf(),
            source,
        })?;
        tracing::debug!(netns = %ns.display(), udp = up, tcp = tp, "dns listening");
        Ok(Listener {
            netns: ns.to_path_buf(),
            querier,
            handle,
        })
    }
}

/// Listeners stay across full passes: their sockets are what the tasks talk to.
#[async_trait]
impl Reconciler for DnsService {
    fn resource(&self) -> Resource {
        Resource::Dns
    }

    fn forget(&mut self) {}

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        for e in self.sync(&pass.plan.dns, pass.ready) {
            pass.note(self.resource(), "dns", Err(e));
        }
    }
}
