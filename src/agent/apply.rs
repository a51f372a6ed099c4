//! Makes this node match a `NodePlan`, changing only what differs from what was applied last
//! (or, on a full pass, from what the kernel and the run dir actually hold). Order matters:
//! networks before the sandboxes that plug into them, sandboxes torn down before networks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use routemesh_netdev::netlink::Netlink;
use routemesh_netdev::spec::{BridgeSpec, OverlaySpec, SandboxSpec};
use routemesh_netdev::{bridge, firewall, netns, overlay, sandbox};

use super::files::write_if_changed;
use super::plan::{self, NodeContext, NodePlan};
use super::runner::{kill_orphan, Runner};
use crate::layout::NetnsOwner;

/// What was last applied successfully; the base of the next incremental pass.
#[derive(Default)]
pub struct Applied {
    gwbridge: Option<BridgeSpec>,
    bridges: BTreeMap<String, BridgeSpec>,
    overlays: BTreeMap<String, OverlaySpec>,
    sandboxes: BTreeMap<String, SandboxSpec>,
    ingress_sbox: Option<SandboxSpec>,
    firewall: Option<routemesh_nft::Table>,
}

pub struct Applier {
    pub ctx: NodeContext,
    pub node: Netlink,
    pub runner: Runner,
    pub applied: Applied,
    pub dns: super::dns::DnsService,
    pub lb: super::lb::LbDataplane,
}

/// Errors of one pass, each naming its object; the pass goes on past them.
#[derive(Default, Debug)]
pub struct PassErrors(pub Vec<String>);

impl PassErrors {
    fn note<E: std::fmt::Display>(&mut self, what: String, r: Result<(), E>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                self.0.push(format!("{what}: {e}"));
                false
            }
        }
    }
}

impl Applier {
    /// One pass. `full` forgets the cache and looks at the kernel and run dir instead, which
    /// adopts what a previous daemon left and removes what nobody wants any more.
    pub async fn apply(&mut self, plan: &NodePlan, full: bool) -> PassErrors {
        let mut errs = PassErrors::default();
        if full {
            self.applied = Applied::default();
        }
        let netns_dir = self.ctx.run.netns_dir();

        if self.applied.gwbridge.as_ref() != Some(&plan.gwbridge) {
            // route_localnet: the node's own 127.0.0.1 may be DNATed to the ingress sandbox.
            let ok = errs.note(
                format!("ensuring gateway bridge {}", plan.gwbridge.ifname),
                bridge::ensure_bridge(&self.node, &plan.gwbridge).await,
            ) && errs.note(
                format!("allowing local sources on {}", plan.gwbridge.ifname),
                netns::set_sysctl(
                    None,
                    &format!("net/ipv4/conf/{}/route_localnet", plan.gwbridge.ifname),
                    "1",
                ),
            );
            self.applied.gwbridge = ok.then(|| plan.gwbridge.clone());
        }
        for (name, spec) in &plan.bridges {
            if self.applied.bridges.get(name) != Some(spec)
                && errs.note(
                    format!("ensuring bridge network {name:?} ({})", spec.ifname),
                    bridge::ensure_bridge(&self.node, spec).await,
                )
            {
                self.applied.bridges.insert(name.clone(), spec.clone());
            }
        }
        for (name, spec) in &plan.overlays {
            if self.applied.overlays.get(name) != Some(spec)
                && errs.note(
                    format!("ensuring overlay network {name:?}"),
                    overlay::ensure_overlay(&self.node, spec).await,
                )
            {
                self.applied.overlays.insert(name.clone(), spec.clone());
            }
        }

        self.apply_ingress_sbox(plan, full, &mut errs).await;

        // Sandboxes that should go: known ones by spec, leftovers found on disk by name.
        let gone: Vec<(String, SandboxSpec)> = self
            .applied
            .sandboxes
            .iter()
            .filter(|(t, s)| plan.sandboxes.get(*t) != Some(s))
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect();
        // Stop them all at once: each may take its grace period, and they should not add up.
        let doomed: Vec<String> = gone.iter().map(|(t, _)| t.clone()).collect();
        self.runner.stop_all(&doomed).await;
        for (task, spec) in gone {
            if !plan.sandboxes.contains_key(&task) {
                if !errs.note(
                    format!("removing sandbox of task {task}"),
                    sandbox::remove_sandbox(&self.node, &spec).await,
                ) {
                    continue;
                }
                let _ = std::fs::remove_dir_all(self.ctx.run.task(&task).dir);
            }
            self.applied.sandboxes.remove(&task);
        }
        if full {
            self.remove_leftover_tasks(plan, &netns_dir, &mut errs)
                .await;
        }
        for (task, spec) in &plan.sandboxes {
            if self.applied.sandboxes.get(task) != Some(spec) {
                let files = &plan.task_files[task];
                let paths = self.ctx.run.task(task);
                let wrote = write_if_changed(&paths.resolv_conf(), &files.resolv_conf)
                    .and_then(|_| write_if_changed(&paths.hosts(), &files.hosts));
                if !errs.note(format!("writing files of task {task}"), wrote) {
                    continue;
                }
                if !errs.note(
                    format!("ensuring sandbox of task {task}"),
                    sandbox::ensure_sandbox(&self.node, spec).await,
                ) {
                    continue;
                }
                self.applied.sandboxes.insert(task.clone(), spec.clone());
            }
        }

        // Load balancers: the overlay namespaces and ingress_sbox exist by now.
        let lbs = plan.mesh.lbs.clone();
        let lb = &mut self.lb;
        let lb_errors = tokio::task::block_in_place(|| lb.sync(&lbs, full));
        for e in lb_errors {
            tracing::warn!(error = %e, "load balancer");
            errs.0.push(e);
        }

        let ready: BTreeMap<String, std::path::PathBuf> = self
            .applied
            .sandboxes
            .iter()
            .map(|(t, s)| (t.clone(), s.netns.clone()))
            .collect();
        for e in self.dns.sync(&plan.dns, &ready) {
            tracing::warn!(error = %e, "dns");
            errs.0.push(e);
        }

        // Processes last: a task starts with its sandbox, its resolver and its load
        // balancers in place.
        for task in self.applied.sandboxes.keys().cloned().collect::<Vec<_>>() {
            if let Some(p) = plan.processes.get(&task) {
                self.runner.ensure(p.clone()).await;
            }
        }

        // Networks nobody plans any more, after the sandboxes that used them are gone.
        let old_overlays: Vec<String> = self
            .applied
            .overlays
            .keys()
            .filter(|n| !plan.overlays.contains_key(*n))
            .cloned()
            .collect();
        for name in old_overlays {
            let path = self.ctx.run.overlay_netns(&name);
            if errs.note(
                format!("removing overlay network {name:?}"),
                overlay::remove_overlay(&path).await,
            ) {
                self.applied.overlays.remove(&name);
            }
        }
        let old_bridges: Vec<(String, BridgeSpec)> = self
            .applied
            .bridges
            .iter()
            .filter(|(n, _)| !plan.bridges.contains_key(*n))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (name, spec) in old_bridges {
            if errs.note(
                format!("removing bridge network {name:?} ({})", spec.ifname),
                bridge::remove_bridge(&self.node, &spec.ifname).await,
            ) {
                self.applied.bridges.remove(&name);
            }
        }
        if full {
            self.remove_leftover_networks(plan, &netns_dir, &mut errs)
                .await;
        }

        let table = firewall::table(&plan.firewall);
        if self.applied.firewall.as_ref() != Some(&table) {
            // nft is a child process: run it off the async workers.
            let spec = plan.firewall.clone();
            let r = tokio::task::spawn_blocking(move || firewall::sync(None, &spec))
                .await
                .unwrap_or_else(|e| {
                    Err(routemesh_netdev::Error::ThreadPanicked {
                        op: format!("applying nft: {e}"),
                    })
                });
            let ok = errs.note("applying the node's nftables table".to_string(), r);
            self.applied.firewall = ok.then_some(table);
        }
        errs
    }

    async fn apply_ingress_sbox(&mut self, plan: &NodePlan, full: bool, errs: &mut PassErrors) {
        let want = plan.mesh.ingress_sbox.as_ref();
        if self.applied.ingress_sbox.as_ref() == want && !full {
            return;
        }
        match want {
            Some(spec) => {
                let ok = errs.note(
                    "ensuring the ingress sandbox".to_string(),
                    sandbox::ensure_sandbox(&self.node, spec).await,
                ) && errs.note(
                    "enabling forwarding in the ingress sandbox".to_string(),
                    netns::set_sysctl(Some(&spec.netns), "net/ipv4/ip_forward", "1"),
                );
                self.applied.ingress_sbox = ok.then(|| spec.clone());
            }
            None => {
                let path = self.ctx.run.ingress_sbox_netns();
                if errs.note(
                    "removing the ingress sandbox".to_string(),
                    sandbox::remove_sandbox_at(&path).await,
                ) {
                    self.applied.ingress_sbox = None;
                }
            }
        }
    }

    /// Whether anything of `task` may still be on this node: a sandbox, a process, files.
    pub fn holds(&self, task: &str) -> bool {
        self.applied.sandboxes.contains_key(task)
            || self.runner.supervised().iter().any(|t| t == task)
            || netns::is_mounted(&self.ctx.run.task_netns(task))
            || self.ctx.run.task(task).dir.exists()
    }

    async fn remove_leftover_tasks(
        &mut self,
        plan: &NodePlan,
        netns_dir: &Path,
        errs: &mut PassErrors,
    ) {
        let mut on_disk: BTreeSet<String> = BTreeSet::new();
        if let Ok(names) = netns::list(netns_dir) {
            on_disk.extend(
                names
                    .iter()
                    .filter_map(|n| match NetnsOwner::of(n) {
                        NetnsOwner::Task(t) => Some(t),
                        _ => None,
                    })
                    .map(str::to_string),
            );
        }
        if let Ok(rd) = std::fs::read_dir(self.ctx.run.tasks_dir()) {
            on_disk.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        for task in on_disk {
            if plan.sandboxes.contains_key(&task) {
                continue;
            }
            self.runner.stop(&task).await;
            let paths = self.ctx.run.task(&task);
            kill_orphan(&paths.pid()).await;
            let ns = self.ctx.run.task_netns(&task);
            errs.note(
                format!("removing leftover sandbox of task {task}"),
                sandbox::remove_sandbox_at(&ns).await,
            );
            let _ = std::fs::remove_dir_all(paths.dir);
        }
    }

    async fn remove_leftover_networks(
        &mut self,
        plan: &NodePlan,
        netns_dir: &Path,
        errs: &mut PassErrors,
    ) {
        if let Ok(names) = netns::list(netns_dir) {
            for name in names {
                let NetnsOwner::Overlay(net) = NetnsOwner::of(&name) else {
                    continue;
                };
                if !plan.overlays.contains_key(net) {
                    errs.note(
                        format!("removing leftover overlay network {net:?}"),
                        overlay::remove_overlay(&netns_dir.join(&name)).await,
                    );
                }
            }
        }
        let wanted: BTreeSet<&str> = plan.bridges.values().map(|b| b.ifname.as_str()).collect();
        match self.node.links().await {
            Ok(links) => {
                for l in links {
                    if l.name.starts_with(plan::BRIDGE_PREFIX) && !wanted.contains(l.name.as_str())
                    {
                        errs.note(
                            format!("removing leftover bridge {}", l.name),
                            bridge::remove_bridge(&self.node, &l.name).await,
                        );
                    }
                }
            }
            Err(e) => errs.0.push(format!("listing links: {e}")),
        }
    }
}
