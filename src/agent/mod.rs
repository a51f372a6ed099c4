//! The node agent: follows the store, plans this node (pure), applies the difference, runs the
//! node's tasks and reports their status.

pub mod apply;
pub mod exit;
pub mod plan;
pub mod runner;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::cache::{Cache, Changes};
use crate::store::{keys, Store, Txn};
use apply::dns::DnsService;
use apply::lb::{self, LbDataplane};
use apply::{Applier, NodeEnv};
use plan::NodeContext;
use routemesh_netdev::netlink::Netlink;
use runner::{Runner, StatusEvent, TaskRuntime};

/// A full reconcile (kernel and run dir read back, not the cache) runs this often.
const FULL_RESYNC: Duration = Duration::from_secs(30);
/// After a failed pass, the next one comes this soon and is a full one.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(2);
/// A pass starts once the store has been quiet this long after a change...
const COALESCE_QUIET: Duration = Duration::from_millis(5);
/// ...or this long after the first change of a burst.
const COALESCE_MAX: Duration = Duration::from_millis(20);

pub struct Agent {
    pub store: Arc<dyn Store>,
    /// The daemon's informer cache: the agent plans from its snapshots.
    pub cache: Cache,
    pub ctx: NodeContext,
    pub api_socket: String,
    /// Where the embedded DNS forwards names that are not routemesh's.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    pub dns_ttl: u32,
    pub dataplane: lb::Kind,
    /// The OCI runtime and images the node's task containers come from.
    pub tasks: Arc<TaskRuntime>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("preparing namespace directory {dir}: {source}")]
    NetnsDir {
        dir: String,
        source: routemesh_netdev::error::Error,
    },
    #[error("enabling IP forwarding on the node: {0}")]
    Forwarding(routemesh_netdev::error::Error),
    #[error("opening netlink in the node namespace: {0}")]
    Netlink(routemesh_netdev::error::Error),
}

impl Agent {
    /// Prepares the node; errors here stop the daemon from starting.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<()>, AgentError> {
        let dir = self.ctx.run.netns_dir();
        routemesh_netdev::netns::prepare_dir(&dir).map_err(|source| AgentError::NetnsDir {
            dir: dir.display().to_string(),
            source,
        })?;
        routemesh_netdev::netns::set_sysctl(None, "net/ipv4/ip_forward", "1")
            .map_err(AgentError::Forwarding)?;
        let node_nl = Netlink::current().map_err(AgentError::Netlink)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let env = NodeEnv {
            ctx: self.ctx.clone(),
            node: node_nl,
            runner: Runner::new(tx, self.tasks.clone()),
        };
        let applier = Applier::new(
            env,
            DnsService::new(self.forwarder(), self.dns_ttl),
            LbDataplane::new(self.dataplane),
        );
        Ok(tokio::spawn(self.run(applier, rx)))
    }

    fn forwarder(&self) -> Option<routemesh_dns::Forwarder> {
        if self.dns_upstreams.is_empty() {
            tracing::warn!("dns: no upstream servers; names outside routemesh get SERVFAIL");
            return None;
        }
        let cfg = routemesh_dns::ForwarderConfig {
            upstreams: self.dns_upstreams.clone(),
            ..Default::default()
        };
        tracing::info!(upstreams = ?cfg.upstreams, "dns: forwarding other names");
        Some(routemesh_dns::Forwarder::new(cfg))
    }

    async fn run(self, mut applier: Applier, mut status_rx: mpsc::UnboundedReceiver<StatusEvent>) {
        let mut snapshots = self.cache.subscribe();
        let mut seen = snapshots.borrow_and_update().seq;
        let mut current: Option<plan::NodePlan> = None;
        let mut dirty = plan::Dirty {
            all: true,
            ..plan::Dirty::default()
        };
        let mut full = true;
        let mut last_full = tokio::time::Instant::now();
        loop {
            let snap = self.cache.snapshot();
            let st = &snap.state;
            // Everything between the last plan's state and this one is dirty.
            dirty_from(&self.cache.changes(seen, snap.seq), &mut dirty);
            seen = snap.seq;
            // Re-plan what changed (everything, after a relist or when asked to).
            let node_plan = match current.take() {
                Some(mut p) if !dirty.all => {
                    plan::update(&mut p, st, &self.ctx, &dirty);
                    p
                }
                Some(old) => {
                    let mut p = plan::plan(st, &self.ctx);
                    // The names did not change (a full pass every 30 s, say): the table made
                    // for the old plan is this plan's too, and is not made again.
                    if p.dns == old.dns {
                        p.dns.version = old.dns.version;
                    }
                    p
                }
                None => plan::plan(st, &self.ctx),
            };
            let errs = applier.apply(&node_plan, full).await;
            if full {
                last_full = tokio::time::Instant::now();
                // A full pass made and dropped a whole plan: give the freed pages back.
                crate::memory::release_free();
            }
            if !dirty.tasks.is_empty() || dirty.all || full {
                self.forget_stopped(st, &applier).await;
            }
            full = !errs.is_empty();
            current = Some(node_plan);
            dirty = plan::Dirty::default();
            // A failed pass is retried soon, as a full one.
            let wait = if full {
                RETRY_AFTER_ERROR
            } else {
                FULL_RESYNC.saturating_sub(last_full.elapsed())
            };
            let timer = tokio::time::sleep(wait);
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = snapshots.borrow_and_update().seq;
                        dirty_from(&self.cache.changes(seen, now), &mut dirty);
                        seen = now;
                        if dirty.all || !dirty.services.is_empty() || !dirty.tasks.is_empty() {
                            break;
                        }
                    },
                    Some(ev) = status_rx.recv() => self.report(ev).await,
                    _ = &mut timer => { full = true; break }
                }
            }
            // Coalesce a burst of writes into one pass (the orchestrator places a service's
            // tasks one transaction each; creates arrive back to back): wait until 5 ms pass
            // without a write, 20 ms at most. One write's keys arrive together already, and a
            // lone change (a task placed, then running: twice per task start) waits 5 ms.
            let burst = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(COALESCE_QUIET).await;
                if !snapshots.has_changed().unwrap_or(false) || burst.elapsed() >= COALESCE_MAX {
                    break;
                }
                snapshots.borrow_and_update();
            }
            while let Ok(ev) = status_rx.try_recv() {
                self.report(ev).await;
            }
            if full {
                // The full pass re-plans everything too.
                dirty.all = true;
            }
        }
    }

    /// Deletes the records of this node's tasks that were to shut down and are gone now.
    async fn forget_stopped(&self, st: &crate::model::ClusterState, applier: &Applier) {
        for t in st.tasks.values().filter(|t| {
            t.node == self.ctx.node && t.desired == crate::model::DesiredState::Shutdown
        }) {
            if applier.holds(&t.name) {
                continue;
            }
            let Ok(Some(kv)) = self.store.get(&keys::task(&t.name)).await else {
                continue;
            };
            let txn = crate::control::delete_task(Txn::new(), t, st)
                .when_revision(kv.key, kv.mod_revision);
            match self.store.txn(txn).await {
                Ok(o) if o.succeeded => tracing::info!(task = %t.name, "task removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(task = %t.name, error = %e, "deleting a stopped task"),
            }
        }
    }

    /// Writes a task's status, but only while the task is still this node's.
    async fn report(&self, ev: StatusEvent) {
        let key = keys::task(&ev.task);
        let kv = match self.store.get(&key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(task = %ev.task, error = %e, "reading task before status report");
                return;
            }
        };
        // Task names are reused per slot: a task moved to another node (this node lost its
        // lease for a while) is not ours to report on any more.
        match crate::store::state::decode::<crate::model::Task>(&kv) {
            Ok(t) if t.node == self.ctx.node => {}
            _ => return,
        }
        let written = match Txn::new()
            .when_revision(key, kv.mod_revision)
            .put_json(keys::status(&ev.task), &ev.status)
        {
            Ok(txn) => self.store.txn(txn).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(task = %ev.task, error = %e, "reporting task status");
        }
    }
}

/// Adds what the changed store keys make dirty for this node's plan.
pub fn dirty_from(changes: &Changes, dirty: &mut plan::Dirty) {
    let Changes::Keys(changed) = changes else {
        dirty.all = true;
        return;
    };
    for k in changed {
        if let Some(name) = k.strip_prefix(keys::SERVICES) {
            dirty.services.insert(name.to_string());
        } else if let Some(name) = k
            .strip_prefix(keys::TASKS)
            .or_else(|| k.strip_prefix(keys::STATUS))
        {
            dirty.tasks.insert(name.to_string());
        } else if k.starts_with(keys::CLAIMS)
            || k.starts_with(keys::PENDING)
            || k.as_str() == keys::LEADER
        {
            // Claims and pending slots do not change what a node holds.
        } else {
            dirty.all = true;
        }
    }
}
