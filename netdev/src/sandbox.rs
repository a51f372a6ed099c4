//! Task sandboxes: a namespace with `lo` and one veth leg per network, the outer end of each
//! enslaved to the network's bridge (`br0` in an overlay namespace, or a node bridge).

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::netlink::{LinkSummary, Netlink};
use crate::netns;
use crate::overlay::OVERLAY_BRIDGE;
use crate::spec::{Attachment, InterfaceSpec, SandboxSpec};

/// Makes the sandbox match `spec`. Interfaces already present with the right kind, MAC and
/// address are kept (adopted), so a second call with the same spec changes nothing.
pub async fn ensure_sandbox(node: &Netlink, spec: &SandboxSpec) -> Result<()> {
    netns::create(&spec.netns)?;
    let sandbox = Netlink::open(&spec.netns).await?;
    let lo = sandbox.require_link("lo").await?;
    if !lo.up {
        sandbox.set_up(&lo).await?;
    }
    delete_unknown_links(&sandbox, spec).await?;
    for iface in &spec.interfaces {
        let opened;
        let outside = match &iface.attach {
            Attachment::Overlay { netns } => {
                opened = Netlink::open(netns).await?;
                &opened
            }
            Attachment::NodeBridge { .. } => node,
            Attachment::Macvlan { parent } => {
                ensure_macvlan(node, &sandbox, spec, iface, parent).await?;
                continue;
            }
        };
        ensure_interface(outside, &sandbox, spec, iface).await?;
    }
    match (spec.default_gateway, sandbox.default_gateway().await?) {
        (Some(want), Some(have)) if want == have => Ok(()),
        (Some(want), _) => sandbox.replace_default_route(want).await,
        (None, Some(_)) => sandbox.delete_default_route().await,
        (None, None) => Ok(()),
    }
}

/// Deletes the sandbox's interfaces (each takes its outer veth end with it) and any outer end
/// left behind, then the namespace. Collects every error; Ok if everything is already gone.
/// Removes a sandbox known only by its namespace path (left by an earlier run): every link in
/// it, then the namespace.
pub async fn remove_sandbox_at(netns: &std::path::Path) -> Result<()> {
    crate::overlay::remove_namespace(netns).await
}

pub async fn remove_sandbox(node: &Netlink, spec: &SandboxSpec) -> Result<()> {
    let mut errors = Vec::new();
    if netns::is_mounted(&spec.netns) {
        match Netlink::open(&spec.netns).await {
            Ok(sandbox) => errors.extend(crate::overlay::delete_all_links(&sandbox).await),
            Err(e) => errors.push(e),
        }
    }
    for iface in &spec.interfaces {
        let deleted = match &iface.attach {
            Attachment::Overlay { netns } if netns::is_mounted(netns) => {
                match Netlink::open(netns).await {
                    Ok(overlay) => overlay.delete_link(&iface.outer_ifname).await,
                    Err(e) => Err(e),
                }
            }
            Attachment::Overlay { .. } => Ok(false),
            Attachment::NodeBridge { .. } => node.delete_link(&iface.outer_ifname).await,
            // Inside the sandbox only: gone with its links above.
            Attachment::Macvlan { .. } => Ok(false),
        };
        if let Err(e) = deleted {
            errors.push(e);
        }
    }
    if let Err(e) = netns::remove(&spec.netns) {
        errors.push(e);
    }
    Error::collect(errors)
}

fn bridge_name(iface: &InterfaceSpec) -> &str {
    match &iface.attach {
        Attachment::Overlay { .. } => OVERLAY_BRIDGE,
        Attachment::NodeBridge { bridge, .. } => bridge,
        Attachment::Macvlan { parent } => parent,
    }
}

/// A macvlan leg: made on the parent (a node link) directly inside the sandbox, with its name
/// and the task's MAC in the same request. Kept when kind, MAC and address match.
async fn ensure_macvlan(
    node: &Netlink,
    sandbox: &Netlink,
    spec: &SandboxSpec,
    iface: &InterfaceSpec,
    parent: &str,
) -> Result<()> {
    let parent = node.require_link(parent).await?;
    let inner = match sandbox.link(&iface.ifname).await? {
        Some(l)
            if l.kind.as_deref() == Some("macvlan")
                && l.mac == Some(iface.mac)
                && sandbox.ipv4_addrs_of(&l).await?.contains(&iface.address) =>
        {
            l
        }
        other => {
            if other.is_some() {
                sandbox.delete_link(&iface.ifname).await?;
            }
            node.add_macvlan(&iface.ifname, &parent, &spec.netns, iface.mac, iface.mtu)
                .await?;
            sandbox.require_link(&iface.ifname).await?
        }
    };
    if inner.mtu != iface.mtu {
        sandbox.set_mtu(&inner, iface.mtu).await?;
    }
    sandbox.set_only_ipv4_addr(&inner, iface.address).await?;
    if !inner.up {
        sandbox.set_up(&inner).await?;
    }
    Ok(())
}

/// Links in the sandbox that no interface of the spec names (left by an older spec).
async fn delete_unknown_links(sandbox: &Netlink, spec: &SandboxSpec) -> Result<()> {
    let known: BTreeSet<&str> = spec.interfaces.iter().map(|i| i.ifname.as_str()).collect();
    for link in sandbox.links().await? {
        if link.name != "lo" && !known.contains(link.name.as_str()) {
            sandbox.delete_link(&link.name).await?;
        }
    }
    Ok(())
}

async fn ensure_interface(
    outside: &Netlink,
    sandbox: &Netlink,
    spec: &SandboxSpec,
    iface: &InterfaceSpec,
) -> Result<()> {
    let bridge = outside.require_link(bridge_name(iface)).await?;
    let inner = sandbox.link(&iface.ifname).await?;
    let outer = outside.link(&iface.outer_ifname).await?;
    let in_place = match (&inner, &outer) {
        (Some(inner), Some(outer)) => {
            inner.kind.as_deref() == Some("veth")
                && outer.kind.as_deref() == Some("veth")
                && inner.mac == Some(iface.mac)
                && sandbox.ipv4_addrs_of(inner).await?.contains(&iface.address)
        }
        _ => false,
    };
    let (inner, outer) = match (inner, outer) {
        (Some(inner), Some(outer)) if in_place => (inner, outer),
        (inner, outer) => {
            if inner.is_some() {
                sandbox.delete_link(&iface.ifname).await?;
            }
            if outer.is_some() {
                outside.delete_link(&iface.outer_ifname).await?;
            }
            create_pair(outside, sandbox, spec, iface).await?
        }
    };
    if inner.mtu != iface.mtu {
        sandbox.set_mtu(&inner, iface.mtu).await?;
    }
    sandbox.set_only_ipv4_addr(&inner, iface.address).await?;
    if !inner.up {
        sandbox.set_up(&inner).await?;
    }
    if outer.mtu != iface.mtu {
        outside.set_mtu(&outer, iface.mtu).await?;
    }
    if outer.master != Some(bridge.index) {
        outside.set_master(&outer, &bridge).await?;
    }
    if let Attachment::NodeBridge { isolated: true, .. } = iface.attach {
        // Sent every time: a port adopted from an older daemon may not be isolated yet.
        outside.set_port_isolated(&outer, &bridge).await?;
    }
    if !outer.up {
        outside.set_up(&outer).await?;
    }
    Ok(())
}

/// Creates `outer_ifname` on the outside with its peer made in the sandbox under its own
/// name and MAC (no temporary name, no move between namespaces). On failure the pair is
/// deleted again.
async fn create_pair(
    outside: &Netlink,
    sandbox: &Netlink,
    spec: &SandboxSpec,
    iface: &InterfaceSpec,
) -> Result<(LinkSummary, LinkSummary)> {
    outside
        .add_veth(
            &iface.outer_ifname,
            &iface.ifname,
            &spec.netns,
            iface.mac,
            iface.mtu,
        )
        .await?;
    let made = async {
        let inner = sandbox.require_link(&iface.ifname).await?;
        let outer = outside.require_link(&iface.outer_ifname).await?;
        Ok((inner, outer))
    }
    .await;
    if made.is_err() {
        let _ = outside.delete_link(&iface.outer_ifname).await;
    }
    made
}
