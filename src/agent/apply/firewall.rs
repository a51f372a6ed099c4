//! The node namespace's own nftables table (published ports, egress masquerade), replaced
//! whole when it changes.

use async_trait::async_trait;
use routemesh_netdev::firewall;
use routemesh_nft::Table;

use super::{ApplyError, Pass, Reconciler, Resource};

#[derive(Default)]
pub struct Firewall {
    applied: Option<Table>,
}

#[async_trait]
impl Reconciler for Firewall {
    fn resource(&self) -> Resource {
        Resource::Firewall
    }

    fn forget(&mut self) {
        self.applied = None;
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let table = firewall::table(&pass.plan.firewall);
        if self.applied.as_ref() == Some(&table) {
            return;
        }
        // nft is a child process: run it off the async workers.
        let sent = table.clone();
        let r: Result<(), ApplyError> =
            match tokio::task::spawn_blocking(move || firewall::replace(None, sent)).await {
                Ok(r) => r.map_err(ApplyError::from),
                Err(e) => Err(e.into()),
            };
        let ok = pass.note(self.resource(), "applying the node's nftables table", r);
        self.applied = ok.then_some(table);
    }
}
