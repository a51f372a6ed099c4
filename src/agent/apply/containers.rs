//! Task containers: every task whose sandbox is in place runs its container there.

use async_trait::async_trait;

use super::{Pass, Reconciler, Resource};

pub struct Containers;

#[async_trait]
impl Reconciler for Containers {
    fn resource(&self) -> Resource {
        Resource::Containers
    }

    /// The runner supervises what it started; there is no cache to drop.
    fn forget(&mut self) {}

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let ready: Vec<String> = pass.ready.keys().cloned().collect();
        for task in ready {
            if let Some(c) = pass.plan.containers.get(&task) {
                pass.env.runner.ensure(c.clone()).await;
            }
        }
    }
}
