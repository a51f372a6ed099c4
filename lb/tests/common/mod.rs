//! Specs shared by the tracer, golden and kernel tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use routemesh_lb::{Backend, Frontend, LbSpec, Proto, Snat, ValidLbSpec, VirtualService};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn be(addr: &str, port: u16, weight: u32) -> Backend {
    Backend {
        addr: ip(addr),
        port,
        weight,
    }
}

pub fn vip(addr: &str, port: u16, proto: Proto, backends: Vec<Backend>) -> VirtualService {
    VirtualService {
        frontend: Frontend::Vip {
            addr: ip(addr),
            port,
            proto,
        },
        backends,
        scheduler: Default::default(),
    }
}

pub fn any_port(addr: &str, backends: Vec<Backend>) -> VirtualService {
    VirtualService {
        frontend: Frontend::VipAnyPort { addr: ip(addr) },
        backends,
        scheduler: Default::default(),
    }
}

pub fn published(port: u16, proto: Proto, backends: Vec<Backend>) -> VirtualService {
    VirtualService {
        frontend: Frontend::Published { port, proto },
        backends,
        scheduler: Default::default(),
    }
}

pub fn valid(snat: Snat, services: Vec<VirtualService>) -> ValidLbSpec {
    LbSpec {
        snat,
        services,
        ..LbSpec::default()
    }
    .validate()
    .unwrap()
}

/// Every path the tracer cases cover.
pub fn services() -> Vec<VirtualService> {
    use Proto::{Tcp, Udp};
    vec![
        vip(
            "10.0.0.2",
            80,
            Tcp,
            vec![
                be("10.1.0.1", 8080, 1),
                be("10.1.0.2", 8080, 1),
                be("10.1.0.3", 8080, 1),
            ],
        ),
        vip(
            "10.0.0.3",
            53,
            Udp,
            vec![be("10.1.0.4", 53, 1), be("10.1.0.5", 53, 1)],
        ),
        vip(
            "10.0.0.4",
            80,
            Tcp,
            vec![
                be("10.1.0.1", 80, 1),
                be("10.1.0.2", 80, 0),
                be("10.1.0.3", 80, 2),
            ],
        ),
        vip("10.0.0.5", 80, Tcp, vec![be("10.1.0.1", 80, 0)]),
        vip("10.0.0.6", 443, Tcp, vec![]),
        vip("10.0.0.7", 53, Udp, vec![]),
        published(
            8080,
            Tcp,
            vec![be("10.255.0.7", 80, 1), be("10.255.0.8", 80, 1)],
        ),
        published(9053, Udp, vec![be("10.255.0.9", 53, 1)]),
        published(9999, Tcp, vec![]),
        // Address-only VIPs: backend ports are ignored.
        any_port(
            "10.0.0.20",
            vec![
                be("10.2.0.1", 0, 1),
                be("10.2.0.2", 0, 1),
                be("10.2.0.3", 0, 1),
            ],
        ),
        any_port(
            "10.0.0.21",
            vec![
                be("10.2.0.1", 0, 1),
                be("10.2.0.2", 0, 0),
                be("10.2.0.3", 0, 2),
            ],
        ),
        any_port("10.0.0.22", vec![be("10.2.0.1", 0, 0)]),
        any_port("10.0.0.23", vec![]),
        any_port("10.0.0.24", vec![be("10.2.0.4", 0, 1)]),
    ]
}

pub fn fixture() -> ValidLbSpec {
    valid(Snat::Masquerade, services())
}
