//! Plain input types the daemon translates its cluster state into. Nothing here knows about
//! the rest of routemesh.

use std::net::Ipv4Addr;

/// Everything the name table is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    pub networks: Vec<NetInput>,
    pub services: Vec<ServiceInput>,
    pub tasks: Vec<TaskInput>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInput {
    pub id: String,
}

/// How a service name resolves: to one virtual IP, or to the running tasks (DNS round robin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

pub use routemesh_types::Proto;

/// The SRV label of a protocol (`_tcp`, `_udp`, `_sctp`).
pub fn srv_label(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "_tcp",
        Proto::Udp => "_udp",
        Proto::Sctp => "_sctp",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInput {
    pub name: String,
    pub mode: EndpointMode,
    /// `(network id, VIP)`; used in `Vip` mode, ignored in `Dnsrr` mode.
    pub vips: Vec<(String, Ipv4Addr)>,
    /// `(target port, protocol)`, answered as SRV `_PORT._PROTO.SERVICE`.
    pub ports: Vec<(u16, Proto)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInput {
    /// The task's DNS name, e.g. `web.1`.
    pub name: String,
    /// The service the task belongs to.
    pub service: String,
    /// `(network id, address)`, one per network the task is attached to.
    pub addrs: Vec<(String, Ipv4Addr)>,
    /// Only running tasks are answered.
    pub running: bool,
}
