//! The overlay driver: per network, a namespace holding `br0` and one VXLAN device whose UDP
//! socket lives in the node namespace, with static fdb and neighbour entries for remote tasks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::bridge::ensure_bridge_state;
use crate::error::{Error, Result};
use crate::netlink::{LinkSummary, Netlink};
use crate::netns;
use crate::spec::{BridgeSpec, Mac, OverlaySpec};

/// The bridge inside every overlay namespace; sandbox legs are enslaved to it.
pub const OVERLAY_BRIDGE: &str = "br0";

/// Makes the overlay namespace match `spec`; `node` is the node namespace, from which a
/// missing VXLAN device is created inside the overlay namespace (its socket on the underlay).
pub async fn ensure_overlay(node: &Netlink, spec: &OverlaySpec) -> Result<()> {
    check_fdb(spec)?;
    netns::create(&spec.netns)?;
    let ovl = Netlink::open(&spec.netns).await?;
    // The overlay namespace is also the network's load balancer on this node: it forwards
    // VIP traffic from br0 back out through br0.
    netns::set_sysctl(Some(&spec.netns), "net/ipv4/ip_forward", "1")?;
    let lo = ovl.require_link("lo").await?;
    if !lo.up {
        ovl.set_up(&lo).await?;
    }
    let br0 = ensure_br0(&ovl, spec).await?;
    sync_vips(&ovl, &br0, spec).await?;
    let vxlan = ensure_vxlan(node, &ovl, spec).await?;
    if vxlan.mtu != spec.mtu {
        ovl.set_mtu(&vxlan, spec.mtu).await?;
    }
    if vxlan.master != Some(br0.index) {
        ovl.set_master(&vxlan, &br0).await?;
    }
    if !vxlan.up {
        ovl.set_up(&vxlan).await?;
    }
    sync_fdb(&ovl, &vxlan, spec).await?;
    // On br0 for traffic from the overlay namespace itself; on the VXLAN device because its
    // proxy ARP answers the tasks' ARP requests from that device's table.
    sync_neighbours(&ovl, &br0, spec).await?;
    sync_neighbours(&ovl, &vxlan, spec).await
}

/// What differs between two specs of one overlay that agree on everything but its entries:
/// VIPs, forwarding (fdb) entries and neighbour entries. Each list holds only the changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryChange {
    pub vips_added: Vec<Ipv4Addr>,
    pub vips_removed: Vec<Ipv4Addr>,
    pub fdb_added: Vec<(Mac, Ipv4Addr)>,
    pub fdb_removed: Vec<(Mac, Ipv4Addr)>,
    /// Neighbour entries that are new or whose MAC changed (replaced in place).
    pub neighbours_set: Vec<(Ipv4Addr, Mac)>,
    /// Addresses whose neighbour entry goes.
    pub neighbours_removed: Vec<Ipv4Addr>,
}

impl EntryChange {
    /// The change from `old` to `new` when they differ in their entries only; `None` when
    /// anything else differs (the whole overlay is ensured then).
    ///
    /// VIPs: both lists are in the same (service) order and a change touches a few services,
    /// so the common head and tail are skipped with a compare of plain addresses and only what
    /// lies between is looked at: no copy of either list, whatever the number of VIPs.
    /// Forwarding and neighbour entries (one per remote task) are compared as sets.
    pub fn between(old: &OverlaySpec, new: &OverlaySpec) -> Option<EntryChange> {
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
        let (vips_removed, vips_added) = vip_diff(&old.vips, &new.vips);
        let (fdb_removed, fdb_added) = diff(&old.fdb, &new.fdb);
        let (neighbours_removed, neighbours_set) = neighbour_diff(&old.neighbours, &new.neighbours);
        Some(EntryChange {
            vips_added,
            vips_removed,
            fdb_added,
            fdb_removed,
            neighbours_set,
            neighbours_removed,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == EntryChange::default()
    }
}

/// Applies `change` to an overlay otherwise in place (`spec` is the new spec): costs what
/// changed, with no dump of the thousands of VIPs a network with many services holds, nor of
/// the forwarding and neighbour tables.
pub async fn change_entries(spec: &OverlaySpec, change: &EntryChange) -> Result<()> {
    check_fdb(spec)?;
    let ovl = Netlink::open(&spec.netns).await?;
    let br0 = ovl.require_link(OVERLAY_BRIDGE).await?;
    for a in &change.vips_removed {
        ovl.delete_local_route(&br0, *a).await?;
    }
    for a in &change.vips_added {
        ovl.add_local_route(&br0, *a).await?;
    }
    let neighbours = !change.neighbours_set.is_empty() || !change.neighbours_removed.is_empty();
    if change.fdb_added.is_empty() && change.fdb_removed.is_empty() && !neighbours {
        return Ok(());
    }
    let vxlan = ovl.require_link(&spec.vxlan_ifname).await?;
    for (mac, vtep) in &change.fdb_removed {
        ovl.delete_fdb(&vxlan, *mac, *vtep).await?;
    }
    for (mac, vtep) in &change.fdb_added {
        ovl.add_fdb(&vxlan, *mac, *vtep).await?;
    }
    // On both devices, as `ensure_overlay` keeps them.
    for dev in [&br0, &vxlan] {
        for ip in &change.neighbours_removed {
            ovl.delete_neighbour(dev, *ip).await?;
        }
        for (ip, mac) in &change.neighbours_set {
            ovl.set_neighbour(dev, *ip, *mac).await?;
        }
    }
    Ok(())
}

/// Deletes every link in the overlay namespace (so the VXLAN socket is released even if
/// something else pins the namespace), then the namespace. Ok if it is already gone.
pub async fn remove_overlay(netns: &Path) -> Result<()> {
    remove_namespace(netns).await
}

/// Deletes every link in the namespace at `netns` (so no veth end outlives it on a bridge and
/// no socket stays bound), then the namespace. Ok if it is already gone.
pub(crate) async fn remove_namespace(netns: &Path) -> Result<()> {
    let mut errors = Vec::new();
    if netns::is_mounted(netns) {
        match Netlink::open(netns).await {
            Ok(ovl) => errors.extend(delete_all_links(&ovl).await),
            Err(e) => errors.push(e),
        }
    }
    if let Err(e) = netns::remove(netns) {
        errors.push(e);
    }
    Error::collect(errors)
}

/// Deletes every link but `lo` in the namespace of `nl`, returning the errors.
pub(crate) async fn delete_all_links(nl: &Netlink) -> Vec<Error> {
    let links = match nl.links().await {
        Ok(links) => links,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for link in links.iter().filter(|l| l.name != "lo") {
        if let Err(e) = nl.delete_link(&link.name).await {
            errors.push(e);
        }
    }
    errors
}

async fn ensure_br0(ovl: &Netlink, spec: &OverlaySpec) -> Result<LinkSummary> {
    let bridge_spec = BridgeSpec {
        ifname: OVERLAY_BRIDGE.into(),
        gateway: spec.gateway,
        mtu: spec.mtu,
    };
    let br0 = match ovl.link(OVERLAY_BRIDGE).await? {
        Some(link) => link,
        None => {
            ovl.add_bridge(OVERLAY_BRIDGE, spec.mtu).await?;
            ovl.require_link(OVERLAY_BRIDGE).await?
        }
    };
    // A bridge takes the lowest MAC of its ports unless it has one of its own, and a MAC
    // change flushes its neighbour table, permanent entries included: every task joining
    // would wipe the static entries for remote endpoints. So br0 gets a fixed MAC: the one
    // derived from this node's own address on the network (the first of `addresses`), which
    // remote nodes' static neighbour entries give that address. Frames they send to it (the
    // replies to this node's load balancer) must be addressed to br0 itself: without
    // br_netfilter nothing else delivers a frame for a MAC no port owns. The gateway address
    // is the same on every node, so its MAC could not name one node; it serves before the
    // node has an address.
    let own = spec.addresses.first().map(|a| a.addr());
    let mac = Mac::from_ipv4(own.unwrap_or(spec.gateway.addr()));
    if br0.mac != Some(mac) {
        ovl.set_mac(&br0, mac).await?;
    }
    ensure_bridge_state(ovl, &br0, &bridge_spec, &spec.addresses).await?;
    Ok(br0)
}

/// The VXLAN device in the overlay namespace, created there (its socket in the node
/// namespace) if missing or if the link under that name is not a VXLAN device with our VNI.
async fn ensure_vxlan(node: &Netlink, ovl: &Netlink, spec: &OverlaySpec) -> Result<LinkSummary> {
    if let Some(link) = ovl.link(&spec.vxlan_ifname).await? {
        if link.kind.as_deref() == Some("vxlan") && link.vni == Some(spec.vni) {
            return Ok(link);
        }
        ovl.delete_link(&spec.vxlan_ifname).await?;
    }
    node.add_vxlan(
        &spec.vxlan_ifname,
        spec.vni,
        spec.local_vtep,
        &spec.netns,
        spec.mtu,
    )
    .await?;
    ovl.require_link(&spec.vxlan_ifname).await
}

/// br0's local routes are exactly the VIPs (see [`Netlink::add_local_route`]).
async fn sync_vips(ovl: &Netlink, br0: &LinkSummary, spec: &OverlaySpec) -> Result<()> {
    let have = ovl.local_routes_of(br0).await?;
    let (extra, missing) = diff(&have, &spec.vips);
    for addr in extra {
        ovl.delete_local_route(br0, addr).await?;
    }
    for addr in missing {
        ovl.add_local_route(br0, addr).await?;
    }
    Ok(())
}

async fn sync_fdb(ovl: &Netlink, vxlan: &LinkSummary, spec: &OverlaySpec) -> Result<()> {
    let have = ovl.fdb_entries(vxlan).await?;
    let (extra, missing) = diff(&have, &spec.fdb);
    for (mac, vtep) in extra {
        ovl.delete_fdb(vxlan, mac, vtep).await?;
    }
    for (mac, vtep) in missing {
        ovl.add_fdb(vxlan, mac, vtep).await?;
    }
    Ok(())
}

async fn sync_neighbours(ovl: &Netlink, dev: &LinkSummary, spec: &OverlaySpec) -> Result<()> {
    let have = ovl.neighbours(dev).await?;
    let (gone, set) = neighbour_diff(&have, &spec.neighbours);
    for ip in gone {
        ovl.delete_neighbour(dev, ip).await?;
    }
    for (ip, mac) in set {
        ovl.set_neighbour(dev, ip, mac).await?;
    }
    Ok(())
}

/// A VXLAN fdb holds one static destination per MAC here; two would make every sync flap.
fn check_fdb(spec: &OverlaySpec) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for (mac, vtep) in &spec.fdb {
        if let Some(other) = seen.insert(*mac, *vtep) {
            if other != *vtep {
                return Err(Error::Invalid {
                    what: format!("fdb of {}", spec.vxlan_ifname),
                    detail: format!("{mac} is behind both {other} and {vtep}"),
                });
            }
        }
    }
    Ok(())
}

/// (addresses whose entry goes, entries to set): an address whose MAC changed is set again
/// in place, not deleted first.
fn neighbour_diff(
    have: &[(Ipv4Addr, Mac)],
    want: &[(Ipv4Addr, Mac)],
) -> (Vec<Ipv4Addr>, Vec<(Ipv4Addr, Mac)>) {
    let (extra, missing) = diff(have, want);
    let wanted: BTreeSet<Ipv4Addr> = want.iter().map(|(ip, _)| *ip).collect();
    let gone = extra
        .into_iter()
        .map(|(ip, _)| ip)
        .filter(|ip| !wanted.contains(ip))
        .collect();
    (gone, missing)
}

/// [`diff`] of two VIP lists in the same order (see [`EntryChange::between`]): the common
/// head and tail are skipped first.
fn vip_diff(had: &[Ipv4Addr], want: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let head = had.iter().zip(want).take_while(|(a, b)| a == b).count();
    let (had, want) = (&had[head..], &want[head..]);
    let tail = had
        .iter()
        .rev()
        .zip(want.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    // An address in the skipped head or tail is in both lists; one between may have moved.
    diff(&had[..had.len() - tail], &want[..want.len() - tail])
}

/// (entries in `have` but not in `want`, entries in `want` but not in `have`), sorted.
fn diff<T: Ord + Clone>(have: &[T], want: &[T]) -> (Vec<T>, Vec<T>) {
    let have: BTreeSet<T> = have.iter().cloned().collect();
    let want: BTreeSet<T> = want.iter().cloned().collect();
    (
        have.difference(&want).cloned().collect(),
        want.difference(&have).cloned().collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::spec::Mac;

    #[test]
    fn diff_splits_extra_and_missing() {
        let (extra, missing) = diff(&[1, 2, 3, 3], &[3, 4]);
        assert_eq!(extra, vec![1, 2]);
        assert_eq!(missing, vec![4]);
    }

    #[test]
    fn one_mac_behind_two_vteps_is_refused() {
        let mac = Mac::from_ipv4(Ipv4Addr::new(10, 0, 1, 5));
        let spec = OverlaySpec {
            netns: "/run/routemesh/netns/ov-app".into(),
            vxlan_ifname: "vxlan4096".into(),
            vni: 4096,
            local_vtep: None,
            gateway: "10.0.1.1/24".parse().unwrap_or_else(|e| panic!("{e}")),
            mtu: 1450,
            fdb: vec![
                (mac, Ipv4Addr::new(192, 168, 0, 2)),
                (mac, Ipv4Addr::new(192, 168, 0, 3)),
            ],
            neighbours: vec![],
            addresses: vec![],
            vips: vec![],
        };
        let err = check_fdb(&spec).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid fdb of vxlan4096: 02:42:0a:00:01:05 is behind both 192.168.0.2 and 192.168.0.3")
        );
    }

    fn spec(vips: &[u8]) -> OverlaySpec {
        OverlaySpec {
            netns: "/run/routemesh/netns/ov-a".into(),
            vxlan_ifname: "vxlan4096".into(),
            vni: 4096,
            local_vtep: None,
            gateway: "10.0.9.1/24".parse().unwrap_or_else(|e| panic!("{e}")),
            mtu: 1450,
            fdb: Vec::new(),
            neighbours: Vec::new(),
            addresses: Vec::new(),
            vips: vips.iter().map(|i| Ipv4Addr::new(10, 0, 9, *i)).collect(),
        }
    }

    fn change(old: &[u8], new: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let last = |v: Vec<Ipv4Addr>| v.into_iter().map(|a| a.octets()[3]).collect();
        EntryChange::between(&spec(old), &spec(new))
            .map(|c| (last(c.vips_added), last(c.vips_removed)))
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
        assert_eq!(EntryChange::between(&spec(&[1]), &other), None);
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
        let c = EntryChange::between(&old, &new).unwrap();
        assert_eq!(c.fdb_added, vec![(mac(12), vtep(2)), (mac(13), vtep(2))]);
        assert_eq!(c.fdb_removed, vec![(mac(11), vtep(3))]);
        assert_eq!(c.neighbours_set, vec![(ip(10), mac(13)), (ip(12), mac(12))]);
        assert_eq!(c.neighbours_removed, vec![ip(11)]);
        assert!(c.vips_added.is_empty() && c.vips_removed.is_empty());
        assert!(EntryChange::between(&new, &new).unwrap().is_empty());
    }
}
