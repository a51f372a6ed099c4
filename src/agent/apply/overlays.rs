//! Overlay networks: per network a namespace holding `br0` and its VXLAN device.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use async_trait::async_trait;
use routemesh_netdev::netns;
use routemesh_netdev::overlay::{self, EntryChange};
use routemesh_netdev::spec::OverlaySpec;

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

/// The entries to change when `new` differs from `old` in its VIPs, forwarding entries and
/// neighbour entries only; `None` when anything else differs.
///
/// VIPs: both lists are in the same (service) order and a change touches a few services, so
/// the common head and tail are skipped with a compare of plain addresses and only what lies
/// between is looked at: no copy of either list, whatever the number of VIPs. Forwarding and
/// neighbour entries (one per remote task) are compared as sets.
fn entry_change(old: &OverlaySpec, new: &OverlaySpec) -> Option<EntryChange> {
    let OverlaySpec {
        netns,
        vxlan_ifname,
        vni,
        local_vtep,
        gateway,
        mtu,
        fdb: _,
        neighbours: _,
        addresses,
        vips: _,
    } = old;
    let same_rest = *netns == new.netns
        && *vxlan_ifname == new.vxlan_ifname
        && *vni == new.vni
        && *local_vtep == new.local_vtep
        && *gateway == new.gateway
        && *mtu == new.mtu
        && *addresses == new.addresses;
    if !same_rest {
        return None;
    }
    let (vips_added, vips_removed) = vip_change(&old.vips, &new.vips);
    let (fdb_added, fdb_removed) = set_change(&old.fdb, &new.fdb);
    let (neighbours_set, gone) = set_change(&old.neighbours, &new.neighbours);
    // An address whose MAC changed is set again in place, not removed.
    let kept: BTreeSet<Ipv4Addr> = new.neighbours.iter().map(|(ip, _)| *ip).collect();
    let neighbours_removed = gone
        .into_iter()
        .map(|(ip, _)| ip)
        .filter(|ip| !kept.contains(ip))
        .collect();
    Some(EntryChange {
        vips_added,
        vips_removed,
        fdb_added,
        fdb_removed,
        neighbours_set,
        neighbours_removed,
    })
}

/// (added, removed) between two VIP lists in the same order (see [`entry_change`]).
fn vip_change(had: &[Ipv4Addr], want: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
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
    set_change(had, want)
}

/// (in `want` but not `had`, in `had` but not `want`), sorted.
fn set_change<T: Ord + Copy>(had: &[T], want: &[T]) -> (Vec<T>, Vec<T>) {
    let had: BTreeSet<&T> = had.iter().collect();
    let want: BTreeSet<&T> = want.iter().collect();
    (
        want.difference(&had).map(|a| **a).collect(),
        had.difference(&want).map(|a| **a).collect(),
    )
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
            // A VIP or a remote task came or went: change those entries alone, not the
            // whole network (whose ensure reads back every VIP route and neighbour).
            if let Some(change) = entry_change(applied, spec) {
                match overlay::change_entries(spec, &change).await {
                    Ok(()) => {
                        if let Some(applied) = self.applied.get_mut(name) {
                            applied.clone_from(spec);
                        }
                        continue;
                    }
                    Err(e) => tracing::debug!(
                        network = %name, error = %e,
                        "changing overlay entries failed; ensuring the whole network"
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

    use routemesh_netdev::spec::Mac;

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
        entry_change(&spec(old), &spec(new)).map(|c| (last(c.vips_added), last(c.vips_removed)))
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
        assert_eq!(entry_change(&spec(&[1]), &other), None);
    }

    #[test]
    fn remote_task_changes_are_fdb_and_neighbour_entries_alone() {
        let mac = |i: u8| Mac([2, 0, 0, 0, 0, i]);
        let ip = |i: u8| Ipv4Addr::new(10, 0, 9, i);
        let vtep = |i: u8| Ipv4Addr::new(192, 168, 0, i);
        let mut old = spec(&[1, 2]);
        old.fdb = vec![(mac(10), vtep(2)), (mac(11), vtep(3))];
        old.neighbours = vec![(ip(10), mac(10)), (ip(11), mac(11))];
        let mut new = old.clone();
        // Task .11 left; task .12 came on node 2; task .10's address now has another MAC.
        new.fdb = vec![(mac(10), vtep(2)), (mac(12), vtep(2)), (mac(13), vtep(2))];
        new.neighbours = vec![(ip(10), mac(13)), (ip(12), mac(12))];
        let c = entry_change(&old, &new).unwrap();
        assert_eq!(c.fdb_added, vec![(mac(12), vtep(2)), (mac(13), vtep(2))]);
        assert_eq!(c.fdb_removed, vec![(mac(11), vtep(3))]);
        assert_eq!(c.neighbours_set, vec![(ip(10), mac(13)), (ip(12), mac(12))]);
        assert_eq!(c.neighbours_removed, vec![ip(11)]);
        assert!(c.vips_added.is_empty() && c.vips_removed.is_empty());
        assert!(entry_change(&new, &new).unwrap().is_empty());
    }
}
