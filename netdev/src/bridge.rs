//! The Linux bridge driver for the node namespace (`bridge` networks and `rm_gwbridge`).

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::netlink::{LinkSummary, Netlink};
use crate::spec::{BridgeSpec, Mac};

/// Makes `spec.ifname` a bridge that is up, has `spec.mtu` and exactly the gateway address.
/// A new bridge is refused if its subnet overlaps a route the namespace already has.
pub async fn ensure_bridge(node: &Netlink, spec: &BridgeSpec) -> Result<()> {
    let bridge = match node.link(&spec.ifname).await? {
        Some(link) => require_bridge(node, link)?,
        None => {
            let routes = node.ipv4_routes().await?;
            if let Some(route) = overlapping_route(spec.gateway, &routes) {
                return Err(Error::Conflict {
                    object: format!("bridge {} in {}", spec.ifname, node.label()),
                    detail: format!("subnet {} overlaps route {route}", spec.gateway.trunc()),
                });
            }
            node.add_bridge(&spec.ifname, spec.mtu).await?;
            node.require_link(&spec.ifname).await?
        }
    };
    // A bridge without a MAC of its own takes the lowest of its ports', and changes it when
    // that port leaves: every neighbour's ARP entry for the gateway then points nowhere until
    // it is probed again (about 5 s of lost traffic; seen when a node of the test fabric
    // went away and another lost etcd for 5 s). The gateway's MAC, set once, never moves.
    let mac = Mac::from_ipv4(spec.gateway.addr());
    if bridge.mac != Some(mac) {
        node.set_mac(&bridge, mac).await?;
    }
    ensure_bridge_state(node, &bridge, spec, &[]).await
}

/// MTU, addresses (the gateway, then `extra`) and up state of an existing bridge.
pub(crate) async fn ensure_bridge_state(
    node: &Netlink,
    bridge: &LinkSummary,
    spec: &BridgeSpec,
    extra: &[Ipv4Net],
) -> Result<()> {
    if bridge.mtu != spec.mtu {
        node.set_mtu(bridge, spec.mtu).await?;
    }
    let mut addrs = vec![spec.gateway];
    addrs.extend(extra.iter().filter(|a| **a != spec.gateway));
    node.set_exact_ipv4_addrs(bridge, &addrs).await?;
    if !bridge.up {
        node.set_up(bridge).await?;
    }
    Ok(())
}

/// Deletes the bridge; Ok if it does not exist.
pub async fn remove_bridge(node: &Netlink, ifname: &str) -> Result<()> {
    if let Some(link) = node.link(ifname).await? {
        require_bridge(node, link)?;
        node.delete_link(ifname).await?;
    }
    Ok(())
}

fn require_bridge(node: &Netlink, link: LinkSummary) -> Result<LinkSummary> {
    if link.kind.as_deref() == Some("bridge") {
        return Ok(link);
    }
    Err(Error::Conflict {
        object: format!("link {} in {}", link.name, node.label()),
        detail: format!(
            "exists but is a {} device, not a bridge",
            link.kind.as_deref().unwrap_or("physical")
        ),
    })
}

/// The first route (other than a default route) whose destination overlaps `subnet`.
pub fn overlapping_route(subnet: Ipv4Net, routes: &[Ipv4Net]) -> Option<Ipv4Net> {
    let subnet = subnet.trunc();
    routes
        .iter()
        .filter(|r| r.prefix_len() > 0)
        .find(|r| r.contains(&subnet.network()) || subnet.contains(&r.network()))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn overlap_ignores_default_route_and_disjoint_subnets() {
        let routes = [net("0.0.0.0/0"), net("192.168.1.0/24"), net("10.0.0.0/8")];
        assert_eq!(overlapping_route(net("172.18.0.1/16"), &routes), None);
        assert_eq!(
            overlapping_route(net("10.1.0.1/16"), &routes),
            Some(net("10.0.0.0/8"))
        );
        assert_eq!(
            overlapping_route(net("192.168.0.1/16"), &routes),
            Some(net("192.168.1.0/24"))
        );
    }
}
