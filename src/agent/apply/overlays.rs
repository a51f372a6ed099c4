//! Overlay networks: per network a namespace holding `br0` and its VXLAN device.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use async_trait::async_trait;
use routemesh_netdev::spec::OverlaySpec;
use routemesh_netdev::{netns, overlay};

use super::{Pass, Reconciler, Resource};
use crate::layout::NetnsOwner;

#[derive(Default)]
pub struct Overlays {
    /// By network name.
    applied: BTreeMap<String, OverlaySpec>,
}

impl Overlays {
    async fn ensure_one(&mut self, pass: &mut Pass<'_>, name: &str, spec: &OverlaySpec) {
        let r = overlay::ensure_overlay(&pass.env.node, spec).await;
        if pass.note(
            Resource::Overlays,
            format!("ensuring overlay network {name:?}"),
            r,
        ) {
            self.applied.insert(name.to_string(), spec.clone());
        }
    }
}

/// The VIPs to add and remove when `new` differs from `old` in them only; `None` when
/// anything else differs.
///
/// Both lists are in the same (service) order and a change touches a few services: the
/// common head and tail are skipped with a compare of plain addresses, and only what lies
/// between is looked at. No copy of either spec, whatever the number of VIPs.
fn vip_change(old: &OverlaySpec, new: &OverlaySpec) -> Option<(Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
    let OverlaySpec {
        netns,
        vxlan_ifname,
        vni,
        local_vtep,
        gateway,
        mtu,
        fdb,
        neighbours,
        addresses,
        vips: _,
    } = old;
    let same_rest = *netns == new.netns
        && *vxlan_ifname == new.vxlan_ifname
        && *vni == new.vni
        && *local_vtep == new.local_vtep
        && *gateway == new.gateway
        && *mtu == new.mtu
        && *fdb == new.fdb
        && *neighbours == new.neighbours
        && *addresses == new.addresses;
    if !same_rest {
        return None;
    }
    let (had, want) = (old.vips.as_slice(), new.vips.as_slice());
    let head = had.iter().zip(want).take_while(|(a, b)| a == b).count();
    let (had, want) = (&had[head..], &want[head..]);
    let tail = had
        .iter()
        .rev()
        .zip(want.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (had, want) = (&had[..had.len() - tail], &want[..want.len() - tail]);
    // An address in the skipped head or tail is in both lists; one between may have moved.
    let had: BTreeSet<&Ipv4Addr> = had.iter().collect();
    let want: BTreeSet<&Ipv4Addr> = want.iter().collect();
    Some((
        want.difference(&had).map(|a| **a).collect(),
        had.difference(&want).map(|a| **a).collect(),
    ))
}

#[async_trait]
impl Reconciler for Overlays {
    fn resource(&self) -> Resource {
        Resource::Overlays
    }

    fn forget(&mut self) {
        self.applied.clear();
    }

    async fn ensure(&mut self, pass: &mut Pass<'_>) {
        let plan = pass.plan;
        for (name, spec) in &plan.overlays {
            let Some(applied) = self.applied.get(name) else {
                self.ensure_one(pass, name, spec).await;
                continue;
            };
            if applied == spec {
                continue;
            }
            // A VIP came or went: change its local route alone, not the whole network.
            if let Some((add, remove)) = vip_change(applied, spec) {
                match overlay::change_vips(spec, &add, &remove).await {
                    Ok(()) => {
                        if let Some(applied) = self.applied.get_mut(name) {
                            applied.vips.clone_from(&spec.vips);
                        }
                        continue;
                    }
                    Err(e) => tracing::debug!(
                        network = %name, error = %e,
                        "changing overlay VIPs failed; ensuring the whole network"
                    ),
                }
            }
            self.ensure_one(pass, name, spec).await;
        }
    }

    async fn prune(&mut self, pass: &mut Pass<'_>) {
        let old: Vec<String> = self
            .applied
            .keys()
            .filter(|n| !pass.plan.overlays.contains_key(*n))
            .cloned()
            .collect();
        for name in old {
            let path = pass.env.ctx.run.overlay_netns(&name);
            let r = overlay::remove_overlay(&path).await;
            if pass.note(
                self.resource(),
                format!("removing overlay network {name:?}"),
                r,
            ) {
                self.applied.remove(&name);
            }
        }
        if !pass.full {
            return;
        }
        // Overlay namespaces no network plans (left by a previous daemon).
        let dir = pass.env.ctx.run.netns_dir();
        let Ok(names) = netns::list(&dir) else {
            return;
        };
        for name in names {
            let NetnsOwner::Overlay(net) = NetnsOwner::of(&name) else {
                continue;
            };
            if !pass.plan.overlays.contains_key(net) {
                let r = overlay::remove_overlay(&dir.join(&name)).await;
                pass.note(
                    self.resource(),
                    format!("removing leftover overlay network {net:?}"),
                    r,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec(vips: &[u8]) -> OverlaySpec {
        OverlaySpec {
            netns: PathBuf::from("/run/routemesh/netns/ov-a"),
            vxlan_ifname: "vxlan4096".into(),
            vni: 4096,
            local_vtep: None,
            gateway: "10.0.9.1/24".parse().unwrap(),
            mtu: 1450,
            fdb: Vec::new(),
            neighbours: Vec::new(),
            addresses: Vec::new(),
            vips: vips.iter().map(|i| Ipv4Addr::new(10, 0, 9, *i)).collect(),
        }
    }

    fn change(old: &[u8], new: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let last = |v: Vec<Ipv4Addr>| v.into_iter().map(|a| a.octets()[3]).collect();
        vip_change(&spec(old), &spec(new)).map(|(add, rm)| (last(add), last(rm)))
    }

    #[test]
    fn vip_changes_are_what_differs_between_the_lists() {
        let none: Vec<u8> = Vec::new();
        assert_eq!(
            change(&[1, 2, 3], &[1, 2, 3]),
            Some((none.clone(), none.clone()))
        );
        assert_eq!(change(&[1, 3], &[1, 2, 3]), Some((vec![2], none.clone())));
        assert_eq!(change(&[1, 2, 3], &[1, 3]), Some((none.clone(), vec![2])));
        assert_eq!(change(&[1, 2, 3], &[1, 4, 3]), Some((vec![4], vec![2])));
        assert_eq!(change(&[], &[5]), Some((vec![5], none.clone())));
        assert_eq!(change(&[5], &[]), Some((none.clone(), vec![5])));
        // Services renamed around: an address that moved is neither added nor removed.
        assert_eq!(
            change(&[1, 2, 3, 4], &[3, 1, 2, 4]),
            Some((none.clone(), none.clone()))
        );
        assert_eq!(change(&[1, 2, 3], &[3, 2, 6]), Some((vec![6], vec![1])));
        // Anything else differing: the whole network is ensured.
        let mut other = spec(&[1]);
        other.mtu = 1400;
        assert_eq!(vip_change(&spec(&[1]), &other), None);
    }
}
