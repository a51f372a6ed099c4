//! IPVS over generic netlink: routemesh's own client (no published crate creates fwmark
//! services).
//!
//! [`IpvsClient`] speaks the `IPVS` generic netlink family exactly as the kernel's
//! `net/netfilter/ipvs/ip_vs_ctl.c` parses it: host byte order for fwmark, weight, timeouts
//! and flags, network byte order for ports, 16-byte addresses, and the netmask as a prefix
//! length for IPv6. The socket belongs to the network namespace it was opened in.
//!
//! ```no_run
//! use routemesh_ipvs::{Destination, IpvsClient, Family, Scheduler, Service, ServiceKey};
//! # fn main() -> Result<(), routemesh_ipvs::IpvsError> {
//! let mut ipvs = IpvsClient::open()?;
//! let key = ServiceKey::Fwmark { mark: 260, family: Family::Inet };
//! ipvs.add_service(&Service::new(key, Scheduler::Rr))?;
//! ipvs.add_destination(&key, &Destination::new([10, 0, 1, 5].into(), 80))?;
//! # Ok(()) }
//! ```

mod client;
mod consts;
mod decode;
mod encode;
mod error;
mod exchange;
#[doc(hidden)]
pub mod fuzzing;
mod message;
mod types;

#[cfg(test)]
mod tests;

pub use client::IpvsClient;
pub use error::{IpvsError, Operation};
pub use types::{
    Destination, DestinationEntry, Family, Forwarding, Info, Proto, SchedName, Scheduler, Service,
    ServiceEntry, ServiceFlags, ServiceKey, Stats, Timeouts,
};
