//! The embedded DNS on this node: one shared name table, and per local sandbox a UDP and a
//! TCP socket opened inside the sandbox on 127.0.0.11 at a port of the kernel's choosing,
//! with a small nft table in the sandbox redirecting 127.0.0.11:53 to them (Docker's trick):
//! a task may bind port 53 itself, even on 0.0.0.0, without breaking its resolver.

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use routemesh_dns::{
    serve, Forwarder, Limits, Querier, Resolver, ServeContext, ServerHandle, Sockets, TableOptions,
};
use routemesh_netdev::{dns_redirect, netns};
use routemesh_nft::{Executor, NftCmd, Transaction};

use super::plan_dns::DnsPlan;

/// Where tasks send their queries.
pub const DNS_ADDR: std::net::Ipv4Addr = dns_redirect::DNS_ADDR;

struct Listener {
    netns: std::path::PathBuf,
    querier: Arc<Querier>,
    handle: ServerHandle,
}

pub struct DnsService {
    resolver: Arc<Resolver>,
    forwarder: Option<Arc<Forwarder>>,
    ttl: u32,
    listeners: BTreeMap<String, Listener>,
}

fn bind_in(ns: &Path) -> Result<(UdpSocket, TcpListener), String> {
    let r = netns::run_in(ns, || -> std::io::Result<(UdpSocket, TcpListener)> {
        let udp = UdpSocket::bind((DNS_ADDR, 0))?;
        let tcp = TcpListener::bind((DNS_ADDR, 0))?;
        Ok((udp, tcp))
    });
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("binding {DNS_ADDR} in {}: {e}", ns.display())),
        Err(e) => Err(e.to_string()),
    }
}

impl DnsService {
    pub fn new(forwarder: Option<Forwarder>, ttl: u32) -> DnsService {
        DnsService {
            resolver: Arc::new(Resolver::default()),
            forwarder: forwarder.map(Arc::new),
            ttl,
            listeners: BTreeMap::new(),
        }
    }

    /// Swaps in the new table, then makes the listeners match the sandboxes that exist.
    /// `ready` maps each local task whose sandbox is up to its namespace path.
    pub fn sync(
        &mut self,
        plan: &DnsPlan,
        ready: &BTreeMap<String, std::path::PathBuf>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let skipped = self
            .resolver
            .update(&plan.input, TableOptions { ttl: self.ttl });
        for s in skipped {
            tracing::debug!(detail = %s, "dns: name table skipped an entry");
        }
        let gone: Vec<String> = self
            .listeners
            .iter()
            .filter(|(t, l)| ready.get(*t) != Some(&l.netns) || !plan.queriers.contains_key(*t))
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            if let Some(l) = self.listeners.remove(&t) {
                l.handle.stop();
            }
        }
        for (task, ns) in ready {
            let Some(nets) = plan.queriers.get(task) else {
                continue;
            };
            if let Some(l) = self.listeners.get(task) {
                if l.querier.networks().as_slice() != nets.as_slice() {
                    l.querier.set_networks(nets.clone());
                }
                continue;
            }
            match self.listen(ns, nets.clone()) {
                Ok(l) => {
                    self.listeners.insert(task.clone(), l);
                }
                Err(e) => errors.push(format!("dns for task {task}: {e}")),
            }
        }
        errors
    }

    fn listen(&self, ns: &Path, networks: Vec<String>) -> Result<Listener, String> {
        let (udp, tcp) = bind_in(ns)?;
        let port = |a: std::io::Result<std::net::SocketAddr>| {
            a.map(|a| a.port()).map_err(|e| e.to_string())
        };
        let (up, tp) = (port(udp.local_addr())?, port(tcp.local_addr())?);
        NftCmd::in_netns(ns)
            .apply(&Transaction::replace(dns_redirect::table(up, tp)))
            .map_err(|e| e.to_string())?;
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
        .map_err(|e| format!("serving dns in {}: {e}", ns.display()))?;
        tracing::debug!(netns = %ns.display(), udp = up, tcp = tp, "dns listening");
        Ok(Listener {
            netns: ns.to_path_buf(),
            querier,
            handle,
        })
    }
}
