//! Task processes: every task whose sandbox is in place runs its command there.

use async_trait::async_trait;

use super::{Pass, Reconciler, Resource};

pub struct Processes;

#[async_trait]
impl Reconciler for Processes {
    fn resource(&self) -> Resource {
        Resource::Processes
    }

    /// The runner supervises what it started; there is no cache to drop.
    fn forget(&mut self) {}

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let ready: Vec<String> = pass.ready.keys().cloned().collect();
        for task in ready {
            if let Some(p) = pass.plan.processes.get(&task) {
                pass.env.runner.ensure(p.clone()).await;
            }
        }
    }
}
