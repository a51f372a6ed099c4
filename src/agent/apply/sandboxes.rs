//! Task sandboxes: each task's network namespace with one leg per network, and its resolv.conf
//! and hosts files. The sandboxes in place are `Pass::ready`, the cache this reconciler keeps.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use routemesh_netdev::spec::SandboxSpec;
use routemesh_netdev::{netns, sandbox};

use super::{Pass, Reconciler, Resource};
use crate::layout::NetnsOwner;

pub struct Sandboxes;

#[async_trait]
impl Reconciler for Sandboxes {
    fn resource(&self) -> Resource {
        Resource::Sandboxes
    }

    /// The cache is `Pass::ready`, which the applier clears.
    fn forget(&mut self) {}

    /// Sandboxes that go or change: their containers are stopped (all at once: each may take
    /// its grace period, and they should not add up), those that go are removed with their
    /// files. On a full pass, leftovers found on disk by name go too.
    async fn prune(&mut self, pass: &mut Pass<'_>) {
        let gone: Vec<(String, SandboxSpec)> = pass
            .ready
            .iter()
            .filter(|(t, s)| pass.plan.sandboxes.get(*t) != Some(s))
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect();
        let doomed: Vec<String> = gone.iter().map(|(t, _)| t.clone()).collect();
        pass.env.runner.stop_all(&doomed).await;
        for (task, spec) in gone {
            if !pass.plan.sandboxes.contains_key(&task) {
                let r = sandbox::remove_sandbox(&pass.env.node, &spec).await;
                let what = format!("removing sandbox of task {task}");
                if !pass.note(self.resource(), what, r) {
                    continue;
                }
                // The runner unmounted the task's root when it stopped the container.
                let _ = std::fs::remove_dir_all(pass.env.ctx.run.task(&task).dir);
            }
            pass.ready.remove(&task);
        }
        if pass.full {
            remove_leftovers(pass).await;
        }
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        for (task, spec) in &pass.plan.sandboxes {
            if pass.ready.get(task) == Some(spec) {
                continue;
            }
            let Some(files) = pass.plan.task_files.get(task) else {
                continue;
            };
            let paths = pass.env.ctx.run.task(task);
            let wrote = write_if_changed(&paths.resolv_conf(), &files.resolv_conf)
                .and_then(|_| write_if_changed(&paths.hosts(), &files.hosts));
            if !pass.note(
                self.resource(),
                format!("writing files of task {task}"),
                wrote,
            ) {
                continue;
            }
            let r = sandbox::ensure_sandbox(&pass.env.node, spec).await;
            if pass.note(
                self.resource(),
                format!("ensuring sandbox of task {task}"),
                r,
            ) {
                pass.ready.insert(task.clone(), spec.clone());
            }
        }
    }
}

/// Tasks found on disk (a namespace file, a task dir or a container the runtime holds) that no
/// plan holds: their containers are removed, their sandboxes and files too.
async fn remove_leftovers(pass: &mut Pass<'_>) {
    let run = pass.env.ctx.run.clone();
    let mut on_disk: BTreeSet<String> = BTreeSet::new();
    if let Ok(names) = netns::list(&run.netns_dir()) {
        on_disk.extend(names.iter().filter_map(|n| match NetnsOwner::of(n) {
            NetnsOwner::Task(t) => Some(t.to_string()),
            _ => None,
        }));
    }
    if let Ok(rd) = std::fs::read_dir(run.tasks_dir()) {
        on_disk.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    match pass.env.runner.containers().await {
        Ok(ids) => on_disk.extend(ids),
        Err(e) => tracing::warn!(error = %e, "listing the runtime's containers"),
    }
    for task in on_disk {
        if pass.plan.sandboxes.contains_key(&task) {
            continue;
        }
        pass.env.runner.stop(&task).await;
        let paths = run.task(&task);
        let r = pass
            .env
            .runner
            .remove_orphan(&task, &paths.container())
            .await;
        if !pass.note(
            Resource::Sandboxes,
            format!("removing leftover container of task {task}"),
            r,
        ) {
            continue;
        }
        let r = sandbox::remove_sandbox_at(&run.task_netns(&task)).await;
        pass.note(
            Resource::Sandboxes,
            format!("removing leftover sandbox of task {task}"),
            r,
        );
        let _ = std::fs::remove_dir_all(paths.dir);
    }
}

/// Writes `content` to `path` unless it already says exactly that.
fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}
