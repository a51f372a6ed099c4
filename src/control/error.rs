//! What the writes behind the API can refuse, with the objects involved. The API decides the
//! HTTP status of each (`api::error`); the messages are the ones users see.

use ipnet::Ipv4Net;

use crate::model::{Driver, Proto};
use crate::store::StoreError;
use crate::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("network {name:?} not found")]
    NetworkNotFound { name: String },
    #[error("{subject}: --opt encrypted needs IPsec ESP (the kernel's esp4 and rfc4106(gcm(aes))), which this node's kernel does not have")]
    NoEsp { subject: Subject },
    #[error("{subject}: parent interface {parent:?} does not exist on this node")]
    NoParent { subject: Subject, parent: String },
    #[error("service {name:?} not found")]
    ServiceNotFound { name: String },
    #[error("service {service:?}: network {network:?} not found")]
    ServiceNetworkNotFound { service: String, network: String },
    #[error("service {service:?} does not publish {port}/{proto}")]
    PortNotPublished {
        service: String,
        port: u16,
        proto: Proto,
    },

    #[error("network {name:?} already exists")]
    NetworkExists { name: String },
    #[error("service {name:?} already exists")]
    ServiceExists { name: String },
    #[error("network {name:?} is the routing mesh's ingress network and cannot be removed")]
    IngressNetwork { name: String },
    #[error("network {name:?} is in use by service {}", services.join(", "))]
    NetworkInUse { name: String, services: Vec<String> },
    #[error("port {port}/{proto} is already published by service {owner:?}")]
    PortTaken {
        port: u16,
        proto: Proto,
        owner: String,
    },
    #[error("{subject}: subnet {subnet} overlaps the gateway bridge rm_gwbridge ({gwbridge})")]
    OverlapsGwbridge {
        subject: Subject,
        subnet: Ipv4Net,
        gwbridge: Ipv4Net,
    },
    #[error("{subject}: subnet {subnet} overlaps bridge network {other:?} ({other_subnet})")]
    OverlapsBridge {
        subject: Subject,
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("{subject}: subnet {subnet} overlaps {route}, which is already on this node")]
    OverlapsNodeRoute {
        subject: Subject,
        subnet: Ipv4Net,
        route: Ipv4Net,
    },
    #[error("{subject}: VNI {vni} in use by {owner:?}")]
    VniInUse {
        subject: Subject,
        vni: u32,
        owner: String,
    },

    #[error("{subject}: address pool {pool} is exhausted: no free /{prefix} left")]
    PoolExhausted {
        subject: Subject,
        pool: Ipv4Net,
        prefix: u8,
    },
    #[error("{subject}: no free VNI left")]
    VnisExhausted { subject: Subject },
    #[error("service {service:?}: network {network:?} ({subnet}) has no free address for a VIP")]
    NoAddressForVip {
        service: String,
        network: String,
        subnet: Ipv4Net,
    },
    #[error("service {service:?}: network {network:?} ({subnet}) has {free} free addresses, {needed} more are needed (one per task, one for the VIP)")]
    NotEnoughAddresses {
        service: String,
        network: String,
        subnet: Ipv4Net,
        free: usize,
        needed: usize,
    },
    /// Every attempt's compare-and-set lost to a concurrent write.
    #[error("{what}: the cluster state kept changing underneath, try again")]
    KeptChanging { what: Operation },

    #[error("{subject}: subnet {subnet} has no host address")]
    NoHostAddress { subject: Subject, subnet: Ipv4Net },
    #[error("service {service:?} cannot join networks {first:?} ({first_subnet}) and {second:?} ({second_subnet}): their subnets overlap")]
    NetworksOverlap {
        service: String,
        first: String,
        first_subnet: Ipv4Net,
        second: String,
        second_subnet: Ipv4Net,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The network a network check is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A network a user asked for.
    Network { driver: Driver, name: String },
    /// The routing mesh's own, made at daemon start.
    Ingress,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Network { driver, name } => write!(f, "{driver} network {name:?}"),
            Subject::Ingress => f.write_str("ingress network"),
        }
    }
}

/// An operation of `Control`, named in the error when it gives up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateNetwork { name: String },
    CreateIngress,
    RemoveNetwork { name: String },
    CreateService { name: String },
    ScaleService { name: String },
    UpdateService { name: String },
    RemoveService { name: String },
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operation::CreateNetwork { name } => write!(f, "creating network {name:?}"),
            Operation::CreateIngress => f.write_str("creating the ingress network"),
            Operation::RemoveNetwork { name } => write!(f, "removing network {name:?}"),
            Operation::CreateService { name } => write!(f, "creating service {name:?}"),
            Operation::ScaleService { name } => write!(f, "scaling service {name:?}"),
            Operation::UpdateService { name } => write!(f, "updating service {name:?}"),
            Operation::RemoveService { name } => write!(f, "removing service {name:?}"),
        }
    }
}
