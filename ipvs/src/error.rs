//! What went wrong, on which IPVS object.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::types::ServiceKey;

/// The operation a request was part of; errors display it first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    OpenSocket,
    ResolveFamily,
    AddService(ServiceKey),
    UpdateService(ServiceKey),
    DeleteService(ServiceKey),
    GetService(ServiceKey),
    ListServices,
    AddDestination(ServiceKey, SocketAddr),
    UpdateDestination(ServiceKey, SocketAddr),
    DeleteDestination(ServiceKey, SocketAddr),
    ListDestinations(ServiceKey),
    Flush,
    GetTimeouts,
    SetTimeouts,
    GetInfo,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::OpenSocket => write!(f, "opening a generic netlink socket"),
            Operation::ResolveFamily => write!(f, "resolving generic netlink family \"IPVS\""),
            Operation::AddService(key) => write!(f, "adding service {key}"),
            Operation::UpdateService(key) => write!(f, "updating service {key}"),
            Operation::DeleteService(key) => write!(f, "deleting service {key}"),
            Operation::GetService(key) => write!(f, "reading service {key}"),
            Operation::ListServices => write!(f, "listing IPVS services"),
            Operation::AddDestination(key, dest) => {
                write!(f, "adding destination {dest} to {key}")
            }
            Operation::UpdateDestination(key, dest) => {
                write!(f, "updating destination {dest} of {key}")
            }
            Operation::DeleteDestination(key, dest) => {
                write!(f, "deleting destination {dest} from {key}")
            }
            Operation::ListDestinations(key) => write!(f, "listing destinations of {key}"),
            Operation::Flush => write!(f, "flushing IPVS services"),
            Operation::GetTimeouts => write!(f, "reading IPVS timeouts"),
            Operation::SetTimeouts => write!(f, "setting IPVS timeouts"),
            Operation::GetInfo => write!(f, "reading IPVS version"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel refused the request.
    #[error("{op}: {}", errno_text(*errno))]
    Kernel { op: Operation, errno: i32 },
    /// The kernel of this namespace has no IPVS: the generic netlink family is missing.
    #[error(
        "IPVS is not available in this network namespace: the kernel has no generic netlink \
         family \"IPVS\" (is the ip_vs module loaded, or can it be?)"
    )]
    Unavailable,
    #[error("{op}: {source}")]
    Io {
        op: Operation,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: malformed reply: {detail}")]
    Decode { op: Operation, detail: String },
    #[error("entering network namespace {}: {source}", path.display())]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IpvsError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The service or destination already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The service (ESRCH) or destination (ENOENT) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(libc::ESRCH) | Some(libc::ENOENT))
    }
}

fn errno_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}
