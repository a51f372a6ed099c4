//! The load-balancer model: virtual services (a frontend spread over weighted backends) for one
//! load-balancing namespace, and its validation into [`ValidLbSpec`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::nftables::names::DEFAULT_TABLE;

/// Longest table name accepted; nft allows more, but nobody needs it.
pub const MAX_TABLE_NAME_LEN: usize = 64;

pub use routemesh_types::{Proto, Scheduler};

/// One destination of a virtual service. `weight` 0 means draining: the backend gets no new
/// connections, while its existing ones finish (NAT is decided on a connection's first packet).
/// Backends of a [`Frontend::VipAnyPort`] take the packet's own port: their `port` is ignored
/// (validation sets it to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

impl Backend {
    pub fn new(addr: Ipv4Addr, port: u16) -> Self {
        Backend {
            addr,
            port,
            weight: 1,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.weight == 0
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// What clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Frontend {
    /// A virtual IP: matches that destination address, port and protocol.
    Vip {
        addr: Ipv4Addr,
        port: u16,
        proto: Proto,
    },
    /// A published port: matches any local destination address of the namespace.
    Published { port: u16, proto: Proto },
    /// An address-only virtual IP, as Docker Swarm's VIPs behave: matches every packet to that
    /// destination address (any protocol, any port) and rewrites the destination address only,
    /// so a connection to `addr:P` reaches `backend:P`.
    #[serde(rename = "vip_any_port")]
    VipAnyPort { addr: Ipv4Addr },
}

impl Frontend {
    /// The destination address matched; `None` for a published port (any local address).
    pub fn addr(&self) -> Option<Ipv4Addr> {
        match *self {
            Frontend::Vip { addr, .. } | Frontend::VipAnyPort { addr } => Some(addr),
            Frontend::Published { .. } => None,
        }
    }

    /// The destination port matched; `None` for an address-only VIP (any port).
    pub fn port(&self) -> Option<u16> {
        match *self {
            Frontend::Vip { port, .. } | Frontend::Published { port, .. } => Some(port),
            Frontend::VipAnyPort { .. } => None,
        }
    }

    /// The protocol matched; `None` for an address-only VIP (any protocol).
    pub fn proto(&self) -> Option<Proto> {
        match *self {
            Frontend::Vip { proto, .. } | Frontend::Published { proto, .. } => Some(proto),
            Frontend::VipAnyPort { .. } => None,
        }
    }

    /// Whether backends are reached on their own port (false: the packet's port is kept).
    pub fn uses_backend_port(&self) -> bool {
        !matches!(self, Frontend::VipAnyPort { .. })
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frontend::Vip { addr, port, proto } => write!(f, "VIP {addr}:{port}/{proto}"),
            Frontend::Published { port, proto } => write!(f, "published port {port}/{proto}"),
            Frontend::VipAnyPort { addr } => write!(f, "address-only VIP {addr}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualService {
    pub frontend: Frontend,
    pub backends: Vec<Backend>,
    /// Used by the IPVS backend only; `rr` when absent.
    #[serde(default)]
    pub scheduler: Scheduler,
}

impl VirtualService {
    /// Backends that take new connections.
    pub fn active_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().filter(|b| !b.is_draining())
    }
}

/// How connections DNATed here are source-NATed, so replies come back through this namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snat {
    /// To the address of the outgoing interface.
    Masquerade,
    /// To this fixed address (e.g. the lb sandbox's own address on the overlay).
    To(Ipv4Addr),
}

/// Everything one load-balancing namespace should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbSpec {
    /// Name of the nftables table (family `ip`) this spec owns.
    pub table: String,
    pub snat: Snat,
    pub services: Vec<VirtualService>,
}

impl Default for LbSpec {
    fn default() -> Self {
        LbSpec {
            table: DEFAULT_TABLE.to_string(),
            snat: Snat::Masquerade,
            services: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "table name {0:?}: must be 1-{MAX_TABLE_NAME_LEN} characters of [A-Za-z0-9_] starting with a letter"
    )]
    BadTableName(String),
    #[error("SNAT address {0}: not a unicast address")]
    BadSnatAddr(Ipv4Addr),
    #[error("{0}: port 0 is not a usable port")]
    FrontendPortZero(Frontend),
    #[error("{0}: not a unicast address usable as a VIP")]
    BadVip(Frontend),
    #[error("{0}: declared twice")]
    DuplicateFrontend(Frontend),
    #[error("{0}: its address is also an address-only VIP")]
    VipAddrTaken(Frontend),
    #[error("{frontend}: backend {backend}: port 0 is not a usable port")]
    BackendPortZero {
        frontend: Frontend,
        backend: Backend,
    },
    #[error("{frontend}: backend {backend}: not a unicast address")]
    BadBackendAddr {
        frontend: Frontend,
        backend: Backend,
    },
    #[error("{frontend}: backend {backend} listed twice")]
    DuplicateBackend {
        frontend: Frontend,
        backend: Backend,
    },
}

/// A spec that passed [`LbSpec::validate`]: services sorted by frontend, each service's backends
/// sorted by address and port, so rendering is deterministic whatever order the caller used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLbSpec {
    table: String,
    snat: Snat,
    services: Vec<VirtualService>,
}

impl ValidLbSpec {
    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn snat(&self) -> Snat {
        self.snat
    }

    pub fn services(&self) -> &[VirtualService] {
        &self.services
    }
}

impl LbSpec {
    pub fn validate(self) -> Result<ValidLbSpec, SpecError> {
        if !is_valid_table_name(&self.table) {
            return Err(SpecError::BadTableName(self.table));
        }
        if let Snat::To(addr) = self.snat {
            if !is_unicast(addr) {
                return Err(SpecError::BadSnatAddr(addr));
            }
        }
        let mut seen = BTreeSet::new();
        let mut services = Vec::with_capacity(self.services.len());
        for service in self.services {
            let service = validate_service(service)?;
            if !seen.insert(service.frontend) {
                return Err(SpecError::DuplicateFrontend(service.frontend));
            }
            services.push(service);
        }
        // An address is either address-only (every port) or per port, never both: the two
        // would both claim its packets.
        let any_port: BTreeSet<Ipv4Addr> = services
            .iter()
            .filter_map(|s| match s.frontend {
                Frontend::VipAnyPort { addr } => Some(addr),
                _ => None,
            })
            .collect();
        if let Some(service) = services
            .iter()
            .find(|s| matches!(s.frontend, Frontend::Vip { addr, .. } if any_port.contains(&addr)))
        {
            return Err(SpecError::VipAddrTaken(service.frontend));
        }
        services.sort_by_key(|s| s.frontend);
        Ok(ValidLbSpec {
            table: self.table,
            snat: self.snat,
            services,
        })
    }
}

/// Checks one service on its own (frontend, backends); returns it with its backends
/// sorted, and ports zeroed where the packet keeps its own. What a whole spec adds:
/// no frontend twice, no address both address-only and per port.
pub fn validate_service(mut service: VirtualService) -> Result<VirtualService, SpecError> {
    let frontend = service.frontend;
    validate_frontend(frontend)?;
    if !frontend.uses_backend_port() {
        // The packet's port is kept: a backend is an address.
        for backend in &mut service.backends {
            backend.port = 0;
        }
    }
    let mut endpoints = BTreeSet::new();
    for backend in &service.backends {
        let backend = *backend;
        if backend.port == 0 && frontend.uses_backend_port() {
            return Err(SpecError::BackendPortZero { frontend, backend });
        }
        if !is_unicast(backend.addr) {
            return Err(SpecError::BadBackendAddr { frontend, backend });
        }
        if !endpoints.insert((backend.addr, backend.port)) {
            return Err(SpecError::DuplicateBackend { frontend, backend });
        }
    }
    service.backends.sort();
    Ok(service)
}

fn validate_frontend(frontend: Frontend) -> Result<(), SpecError> {
    if frontend.port() == Some(0) {
        return Err(SpecError::FrontendPortZero(frontend));
    }
    if let Some(addr) = frontend.addr() {
        if !is_unicast(addr) || addr.is_loopback() {
            return Err(SpecError::BadVip(frontend));
        }
    }
    Ok(())
}

fn is_unicast(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
}

fn is_valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_TABLE_NAME_LEN
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(last: u8, port: u16) -> Frontend {
        Frontend::Vip {
            addr: Ipv4Addr::new(10, 0, 0, last),
            port,
            proto: Proto::Tcp,
        }
    }

    fn spec(services: Vec<VirtualService>) -> LbSpec {
        LbSpec {
            services,
            ..LbSpec::default()
        }
    }

    fn service(frontend: Frontend, backends: &[(u8, u16)]) -> VirtualService {
        VirtualService {
            frontend,
            backends: backends
                .iter()
                .map(|&(last, port)| Backend::new(Ipv4Addr::new(10, 1, 0, last), port))
                .collect(),
            scheduler: Scheduler::default(),
        }
    }

    #[test]
    fn sorts_services_and_backends() {
        let valid = spec(vec![
            service(vip(9, 80), &[(3, 80), (1, 80)]),
            service(vip(2, 80), &[(2, 80)]),
        ])
        .validate()
        .unwrap();
        assert_eq!(valid.table(), "routemesh_lb");
        assert_eq!(valid.services()[0].frontend, vip(2, 80));
        assert_eq!(
            valid.services()[1].backends[0].addr,
            Ipv4Addr::new(10, 1, 0, 1)
        );
    }

    #[test]
    fn refuses_bad_input() {
        let cases: Vec<(LbSpec, &str)> = vec![
            (
                spec(vec![service(vip(2, 80), &[]), service(vip(2, 80), &[])]),
                "VIP 10.0.0.2:80/tcp: declared twice",
            ),
            (
                spec(vec![service(vip(2, 0), &[])]),
                "VIP 10.0.0.2:0/tcp: port 0 is not a usable port",
            ),
            (
                spec(vec![service(vip(2, 80), &[(1, 80), (1, 80)])]),
                "VIP 10.0.0.2:80/tcp: backend 10.1.0.1:80 listed twice",
            ),
            (
                spec(vec![service(vip(2, 80), &[(1, 0)])]),
                "VIP 10.0.0.2:80/tcp: backend 10.1.0.1:0: port 0 is not a usable port",
            ),
            (
                spec(vec![service(
                    Frontend::Vip {
                        addr: Ipv4Addr::UNSPECIFIED,
                        port: 80,
                        proto: Proto::Udp,
                    },
                    &[],
                )]),
                "VIP 0.0.0.0:80/udp: not a unicast address usable as a VIP",
            ),
            (
                LbSpec {
                    table: "bad name".into(),
                    ..LbSpec::default()
                },
                "table name \"bad name\": must be 1-64 characters of [A-Za-z0-9_] starting with a letter",
            ),
            (
                LbSpec {
                    snat: Snat::To(Ipv4Addr::BROADCAST),
                    ..LbSpec::default()
                },
                "SNAT address 255.255.255.255: not a unicast address",
            ),
        ];
        for (input, want) in cases {
            let err = input.validate().unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    fn any_port(a: u8, b: u8, c: u8, d: u8) -> Frontend {
        Frontend::VipAnyPort {
            addr: Ipv4Addr::new(a, b, c, d),
        }
    }

    #[test]
    fn refuses_bad_address_only_vips() {
        let cases: Vec<(Vec<VirtualService>, &str)> = vec![
            (
                vec![
                    service(any_port(10, 0, 0, 2), &[(1, 0)]),
                    service(any_port(10, 0, 0, 2), &[(2, 0)]),
                ],
                "address-only VIP 10.0.0.2: declared twice",
            ),
            (
                vec![
                    service(vip(2, 80), &[(1, 80)]),
                    service(any_port(10, 0, 0, 2), &[(1, 0)]),
                ],
                "VIP 10.0.0.2:80/tcp: its address is also an address-only VIP",
            ),
            (
                vec![
                    service(any_port(10, 0, 0, 2), &[(1, 0)]),
                    service(vip(3, 80), &[(1, 80)]),
                    service(vip(2, 443), &[(1, 443)]),
                ],
                "VIP 10.0.0.2:443/tcp: its address is also an address-only VIP",
            ),
            (
                vec![service(any_port(127, 0, 0, 5), &[(1, 0)])],
                "address-only VIP 127.0.0.5: not a unicast address usable as a VIP",
            ),
            (
                vec![service(any_port(239, 1, 2, 3), &[(1, 0)])],
                "address-only VIP 239.1.2.3: not a unicast address usable as a VIP",
            ),
            (
                vec![service(any_port(0, 0, 0, 0), &[])],
                "address-only VIP 0.0.0.0: not a unicast address usable as a VIP",
            ),
            (
                vec![service(any_port(10, 0, 0, 2), &[(1, 0), (1, 80)])],
                "address-only VIP 10.0.0.2: backend 10.1.0.1:0 listed twice",
            ),
        ];
        for (services, want) in cases {
            let err = spec(services).validate().unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn address_only_vip_backends_take_no_port() {
        let published = Frontend::Published {
            port: 80,
            proto: Proto::Tcp,
        };
        let valid = spec(vec![
            service(any_port(10, 0, 0, 9), &[(2, 8080), (1, 0)]),
            service(vip(2, 80), &[(1, 80)]),
            service(published, &[(1, 80)]),
        ])
        .validate()
        .unwrap();
        let any = &valid.services()[2];
        assert_eq!(any.frontend, any_port(10, 0, 0, 9));
        assert_eq!(any.frontend.port(), None);
        assert_eq!(any.frontend.proto(), None);
        assert_eq!(any.frontend.addr(), Some(Ipv4Addr::new(10, 0, 0, 9)));
        let ends: Vec<String> = any.backends.iter().map(|b| b.to_string()).collect();
        assert_eq!(ends, vec!["10.1.0.1:0", "10.1.0.2:0"]);
    }

    #[test]
    fn vip_and_published_on_same_port_are_distinct() {
        let published = Frontend::Published {
            port: 80,
            proto: Proto::Tcp,
        };
        assert!(spec(vec![
            service(vip(2, 80), &[(1, 80)]),
            service(published, &[(1, 80)])
        ])
        .validate()
        .is_ok());
    }
}
