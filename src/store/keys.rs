//! The key layout, in one place. Every key routemesh writes is built here.

pub const ROOT: &str = "/routemesh/";
pub const NETWORKS: &str = "/routemesh/networks/";
pub const SERVICES: &str = "/routemesh/services/";
pub const TASKS: &str = "/routemesh/tasks/";
pub const STATUS: &str = "/routemesh/status/";
pub const NODES: &str = "/routemesh/nodes/";
pub const CLAIMS: &str = "/routemesh/claims/";
pub const NODE_ADDRS: &str = "/routemesh/nodeaddrs/";
/// Why some of a service's slots have no node (written by the orchestrator).
pub const PENDING: &str = "/routemesh/pending/";
/// `/routemesh/alive/NODE` exists while the node lives (on its lease, with etcd).
pub const ALIVE: &str = "/routemesh/alive/";
/// Held (on its lease) by the node that runs the orchestrator.
pub const LEADER: &str = "/routemesh/leader";
/// The encrypted overlays' keyring (written by the orchestrator).
pub const KEYRING: &str = "/routemesh/ipsec/keyring";

pub fn alive(node: &str) -> String {
    format!("{ALIVE}{node}")
}

pub fn pending(service: &str) -> String {
    format!("{PENDING}{service}")
}

pub fn network(name: &str) -> String {
    format!("{NETWORKS}{name}")
}
pub fn service(name: &str) -> String {
    format!("{SERVICES}{name}")
}
pub fn task(name: &str) -> String {
    format!("{TASKS}{name}")
}
pub fn status(task: &str) -> String {
    format!("{STATUS}{task}")
}
pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}
/// A node's own address on a network (`/routemesh/nodeaddrs/NETWORK/NODE`).
pub fn node_addr(network: &str, node: &str) -> String {
    format!("{NODE_ADDRS}{network}/{node}")
}
pub fn node_addrs_of(network: &str) -> String {
    format!("{NODE_ADDRS}{network}/")
}
/// A pool subnet taken by a network (networks with a `--subnet` of their own claim none).
pub fn subnet_claim(subnet: &ipnet::Ipv4Net) -> String {
    format!("{CLAIMS}subnet/{}", subnet.to_string().replace('/', "_"))
}
/// A published port, held by the service that publishes it (one owner per port/protocol).
pub fn port_claim(proto: crate::model::Proto, port: u16) -> String {
    format!("{CLAIMS}port/{proto}/{port}")
}
pub fn vni_claim(vni: u32) -> String {
    format!("{CLAIMS}vni/{vni}")
}
/// Prefix of every address claimed on one network (by network id, not name).
pub fn addr_claims(network_id: &str) -> String {
    format!("{CLAIMS}addr/{network_id}/")
}
pub fn addr_claim(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{CLAIMS}addr/{network_id}/{ip}")
}
pub fn gw_claims(node: &str) -> String {
    format!("{CLAIMS}gwaddr/{node}/")
}
pub fn gw_claim(node: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{CLAIMS}gwaddr/{node}/{ip}")
}

/// The last path segment of a key.
pub fn leaf(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
