//! Preparing a load-balancing namespace for IPVS, and finding out whether the kernel has it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use routemesh_ipvs::{IpvsClient, IpvsError};
use serde::{Deserialize, Serialize};

/// The sysctls libnetwork sets in its ingress and lb sandboxes, written by
/// [`prepare_namespace`] (paths under `/proc/sys/`):
/// - `conn_reuse_mode=0`: a new connection reusing the source port of a finished one goes to
///   the same destination instead of being dropped for a second while the old entry expires
///   (the 1-second SYN stall of mode 1 under port reuse);
/// - `expire_nodest_conn=1`: connections of a deleted destination are expired at their next
///   packet instead of being silently dropped until they time out;
/// - `expire_quiescent_template=1`: persistence templates of a weight-0 destination expire;
/// - `conntrack=1`: keep conntrack entries for IPVS connections, which the nftables SNAT needs.
pub const SYSCTLS: [(&str, &str); 4] = [
    ("net/ipv4/vs/conn_reuse_mode", "0"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
    ("net/ipv4/vs/conntrack", "1"),
];

/// Longest timeout accepted, in seconds: the kernel keeps timeouts in jiffies in an `int`.
pub const MAX_TIMEOUT: u32 = 2_000_000;

/// IPVS connection timeouts of a namespace, in seconds (`ipvsadm --set tcp tcpfin udp`).
/// The TCP idle default is a day, far above Docker's 900 s, so that idle long-lived
/// connections (a client's keepalive starts at 7200 s) are not cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP connections, idle.
    pub tcp: u32,
    /// TCP after a FIN.
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 86_400,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

impl Timeouts {
    /// Each timeout must be 1..=[`MAX_TIMEOUT`] (the kernel reads 0 as "leave unchanged").
    pub fn validate(&self) -> Result<(), PrepareError> {
        for (name, value) in [
            ("tcp", self.tcp),
            ("tcp_fin", self.tcp_fin),
            ("udp", self.udp),
        ] {
            if value == 0 || value > MAX_TIMEOUT {
                return Err(PrepareError::BadTimeout { name, value });
            }
        }
        Ok(())
    }
}

impl From<Timeouts> for routemesh_ipvs::Timeouts {
    fn from(t: Timeouts) -> Self {
        routemesh_ipvs::Timeouts {
            tcp: t.tcp,
            tcp_fin: t.tcp_fin,
            udp: t.udp,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("IPVS {name} timeout {value} s: must be 1-{MAX_TIMEOUT} seconds")]
    BadTimeout { name: &'static str, value: u32 },
    #[error("preparing IPVS in {}: entering the namespace: {source}", netns.display())]
    EnterNetns {
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing IPVS in {}: {source}", netns.display())]
    Ipvs {
        netns: PathBuf,
        #[source]
        source: IpvsError,
    },
    #[error("preparing IPVS in {}: writing /proc/sys/{key} = {value}: {source}", netns.display())]
    Sysctl {
        netns: PathBuf,
        key: &'static str,
        value: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing IPVS in {}: the thread that entered the namespace panicked", netns.display())]
    Panicked { netns: PathBuf },
}

/// Sets [`SYSCTLS`] and the IPVS `timeouts` in the namespace at `netns` (e.g.
/// `/run/netns/ingress_sbox`), from a thread made for it: `/proc/sys/net` shows the namespace
/// of the thread that opens the file, and the IPVS socket is opened there too. Idempotent;
/// call it before the first sync of the namespace's [`IpvsBackend`](super::IpvsBackend).
pub fn prepare_namespace(netns: &Path, timeouts: Timeouts) -> Result<(), PrepareError> {
    timeouts.validate()?;
    let owned = || netns.to_path_buf();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(netns).map_err(|source| PrepareError::EnterNetns {
                    netns: owned(),
                    source,
                })?;
                enter(&file).map_err(|source| PrepareError::EnterNetns {
                    netns: owned(),
                    source,
                })?;
                // IPVS first: its sysctls exist only once ip_vs is loaded.
                let mut ipvs = IpvsClient::open().map_err(|source| PrepareError::Ipvs {
                    netns: owned(),
                    source,
                })?;
                ipvs.set_timeouts(&timeouts.into())
                    .map_err(|source| PrepareError::Ipvs {
                        netns: owned(),
                        source,
                    })?;
                for (key, value) in SYSCTLS {
                    std::fs::write(format!("/proc/sys/{key}"), value).map_err(|source| {
                        PrepareError::Sysctl {
                            netns: owned(),
                            key,
                            value,
                            source,
                        }
                    })?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(PrepareError::Panicked { netns: owned() }))
    })
}

// The C library's setns(2) wrapper, which std links anyway (lb takes no libc/nix dependency).
fn enter(file: &File) -> std::io::Result<()> {
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// What `modprobe ip_vs` did.
#[derive(Debug)]
pub enum Modprobe {
    Succeeded,
    Failed { status: String, stderr: String },
    CouldNotRun(std::io::Error),
}

impl std::fmt::Display for Modprobe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Modprobe::Succeeded => f.write_str("`modprobe ip_vs` succeeded"),
            Modprobe::Failed { status, stderr } => {
                write!(f, "`modprobe ip_vs` failed ({status}): {stderr}")
            }
            Modprobe::CouldNotRun(e) => write!(f, "`modprobe ip_vs` could not run: {e}"),
        }
    }
}

/// Why the IPVS dataplane cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum IpvsUnavailable {
    #[error("IPVS is not usable: {0}")]
    Unusable(#[source] Box<IpvsError>),
    #[error(
        "IPVS is not available: this kernel has no IPVS (no generic netlink family \"IPVS\"), and {modprobe}"
    )]
    NoFamily { modprobe: Modprobe },
    #[error("IPVS is not usable ({modprobe}): {source}")]
    UnusableAfterModprobe {
        modprobe: Modprobe,
        #[source]
        source: Box<IpvsError>,
    },
}

/// Whether the kernel, seen from the calling thread's namespace, has IPVS: opens an IPVS
/// client; when the kernel has no IPVS family, runs `modprobe ip_vs` once and tries again.
/// `Err` says why not, for `--dataplane ipvs` to refuse to start with.
pub fn ipvs_available() -> Result<(), IpvsUnavailable> {
    match IpvsClient::open() {
        Ok(_) => return Ok(()),
        Err(IpvsError::Unavailable) => {}
        Err(e) => return Err(IpvsUnavailable::Unusable(Box::new(e))),
    }
    let modprobe = match Command::new("modprobe").arg("ip_vs").output() {
        Ok(out) if out.status.success() => Modprobe::Succeeded,
        Ok(out) => Modprobe::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        },
        Err(e) => Modprobe::CouldNotRun(e),
    };
    match IpvsClient::open() {
        Ok(_) => Ok(()),
        Err(IpvsError::Unavailable) => Err(IpvsUnavailable::NoFamily { modprobe }),
        Err(source) => Err(IpvsUnavailable::UnusableAfterModprobe {
            modprobe,
            source: Box::new(source),
        }),
    }
}
