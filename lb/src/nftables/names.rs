//! Every name the nftables backend uses. Other tools may rely on the table, the base chains and
//! the `no_backend_*` sets; the per-slot-count names (`vip_fe_3`, ...) come and go with the
//! services and are internal.

use super::keys::KeyKind;

/// Default name of the table one backend instance owns in its namespace.
pub const DEFAULT_TABLE: &str = routemesh_nft::tables::LB;

/// nat hook prerouting: DNAT of traffic arriving in the namespace.
pub const CHAIN_NAT_PREROUTING: &str = "nat_prerouting";
/// nat hook output: DNAT of traffic generated inside the namespace.
pub const CHAIN_NAT_OUTPUT: &str = "nat_output";
/// nat hook postrouting: SNAT of connections DNATed here.
pub const CHAIN_NAT_POSTROUTING: &str = "nat_postrouting";
/// filter hook prerouting: rejects new connections to frontends without a usable backend.
pub const CHAIN_FILTER_PREROUTING: &str = "filter_prerouting";
/// filter hook output: the same for traffic generated inside the namespace.
pub const CHAIN_FILTER_OUTPUT: &str = "filter_output";
/// Regular chain both nat DNAT hooks jump to; holds one jump per slot-count group.
pub const CHAIN_SERVICES: &str = "services";
/// Regular chain answering TCP with a reset and anything else with ICMP port unreachable.
pub const CHAIN_REJECT: &str = "reject_no_backend";

/// `ip daddr . meta l4proto . th dport` of VIP frontends that have no usable backend.
pub const SET_NO_BACKEND_VIP: &str = "no_backend_vip";
/// `ip daddr` of address-only VIP frontends that have no usable backend.
pub const SET_NO_BACKEND_VIP_ADDR: &str = "no_backend_vipa";
/// `meta l4proto . th dport` of published frontends that have no usable backend.
pub const SET_NO_BACKEND_PUBLISHED: &str = "no_backend_pub";

/// Prefix of VIP group objects (`vip_fe_N`, `vip_be_N`, chain `vip_N`).
pub const VIP_PREFIX: &str = "vip";
/// Prefix of address-only VIP group objects (`vipa_fe_N`, `vipa_be_N`, chain `vipa_N`).
pub const VIP_ADDR_PREFIX: &str = "vipa";
/// Prefix of published-port group objects (`pub_fe_N`, `pub_be_N`, chain `pub_N`).
pub const PUBLISHED_PREFIX: &str = "pub";

/// nat chains run at the standard dstnat/srcnat priorities.
pub const PRIORITY_DSTNAT: i32 = -100;
pub const PRIORITY_SRCNAT: i32 = 100;
/// The reject chains run after conntrack (-200) and before dstnat (-100).
pub const PRIORITY_REJECT: i32 = -110;

/// Default most slots one service takes in its `numgen random mod N` map (weights are
/// normalised down to it); a service with more active backends takes one slot per backend.
pub const MAX_SLOTS: u32 = 64;

fn prefix(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Vip => VIP_PREFIX,
        KeyKind::VipAddr => VIP_ADDR_PREFIX,
        KeyKind::Published => PUBLISHED_PREFIX,
    }
}

/// Set of the frontends whose services take `slots` slots.
pub fn frontend_set(kind: KeyKind, slots: u32) -> String {
    format!("{}_fe_{slots}", prefix(kind))
}

/// Map from frontend . slot to backend address . port (address only for address-only VIPs).
pub fn backend_map(kind: KeyKind, slots: u32) -> String {
    format!("{}_be_{slots}", prefix(kind))
}

/// Chain holding the one dispatch rule of a group.
pub fn group_chain(kind: KeyKind, slots: u32) -> String {
    format!("{}_{slots}", prefix(kind))
}

pub fn no_backend_set(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Vip => SET_NO_BACKEND_VIP,
        KeyKind::VipAddr => SET_NO_BACKEND_VIP_ADDR,
        KeyKind::Published => SET_NO_BACKEND_PUBLISHED,
    }
}
