//! The encrypted overlays' IPsec state in the node namespace (XFRM): ESP security associations
//! with every other node and the policies that send marked VXLAN through them. Synced whole
//! when the plan's changes (a node joins or leaves, a key rotates); the sync adds new SAs
//! before it removes old ones, so a rotation drops nothing.

use async_trait::async_trait;
use routemesh_netdev::xfrm::{IpsecSpec, Xfrm};

use super::{ApplyError, Pass, Reconciler, Resource};

#[derive(Default)]
pub struct Ipsec {
    applied: Option<IpsecSpec>,
}

#[async_trait]
impl Reconciler for Ipsec {
    fn resource(&self) -> Resource {
        Resource::Ipsec
    }

    fn forget(&mut self) {
        self.applied = None;
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let want = pass.plan.ipsec.clone();
        if self.applied.as_ref() == Some(&want) {
            return;
        }
        // Nothing encrypted, nothing applied yet: leave the kernel alone (no XFRM socket).
        if want == IpsecSpec::default() && self.applied.is_none() {
            self.applied = Some(want);
            return;
        }
        let sent = want.clone();
        let r: Result<(), ApplyError> =
            match tokio::task::spawn_blocking(move || Xfrm::open(None).and_then(|x| x.sync(&sent)))
                .await
            {
                Ok(r) => r.map_err(ApplyError::from),
                Err(e) => Err(e.into()),
            };
        let what = format!(
            "syncing IPsec ({} SAs, {} policies)",
            want.sas.len(),
            want.policies.len()
        );
        let ok = pass.note(self.resource(), what, r);
        self.applied = ok.then_some(want);
    }
}
