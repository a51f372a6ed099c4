//! The words every routemesh crate shares, defined once: a transport protocol ([`Proto`]) and
//! how a load balancer picks a backend ([`Scheduler`]). Each is spelled the way the kernel's
//! tools spell it (`tcp`, `rr`), on the wire (serde), on the command line and in nft.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    /// Known to the kernel's IPVS and nft; routemesh's API publishes TCP and UDP only.
    Sctp,
}

impl Proto {
    /// The name nft, IPVS dumps and `/etc/protocols` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: expected tcp, udp or sctp")]
pub struct UnknownProto(pub String);

impl FromStr for Proto {
    type Err = UnknownProto;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => Err(UnknownProto(other.to_string())),
        }
    }
}

/// How a load balancer picks a backend for a new connection, by the names of the kernel's
/// IPVS scheduler modules (`ip_vs_<name>`). The nftables dataplane picks at random, in
/// proportion to the weights, whatever the scheduler.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin over the backends with a non-zero weight (weights otherwise ignored).
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Source hashing (a client address sticks to one backend).
    Sh,
    /// Maglev hashing.
    Mh,
}

impl Scheduler {
    pub const ALL: [Scheduler; 5] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Sh,
        Scheduler::Mh,
    ];

    /// The kernel's name of the scheduler module (`ip_vs_<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Sh => "sh",
            Scheduler::Mh => "mh",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?}: expected one of rr, wrr, lc, sh, mh")]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|sched| sched.as_str() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            assert_eq!(p.as_str().parse::<Proto>(), Ok(p));
            assert_eq!(Proto::from_number(p.number()), Some(p));
        }
        for s in Scheduler::ALL {
            assert_eq!(s.as_str().parse::<Scheduler>(), Ok(s));
        }
        assert!("icmp".parse::<Proto>().is_err());
        assert_eq!(
            "wlc".parse::<Scheduler>().unwrap_err().to_string(),
            "unknown scheduler \"wlc\": expected one of rr, wrr, lc, sh, mh"
        );
    }
}
