//! Daemon configuration: flags, an optional TOML file with the same keys (`--config`), and
//! defaults, resolved into one validated struct before anything starts.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::Args;
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::store::StoreError;
use crate::validate::ValidationError;

pub const DEFAULT_INGRESS_SUBNET: &str = "10.255.0.0/16";

/// A daemon setting (flag or config file key) that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {source}", path.display())]
    ParseFile {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid node name {name:?}: use 1-63 letters, digits, '-', '_' or '.', not \".\" or \"..\"")]
    NodeName { name: String },
    #[error("invalid --advertise-addr {value:?}: expected an IPv4 address")]
    AdvertiseAddr { value: String },
    #[error("invalid --store: {0}")]
    StoreUrl(#[source] StoreError),
    #[error("invalid --store {value:?}: expected \"local\" or etcd://HOST:PORT[,HOST:PORT...]")]
    StoreKind { value: String },
    #[error("invalid --lease-ttl {value}: must be between 2 and 300 seconds")]
    LeaseTtl { value: u64 },
    #[error("--etcd-cert and --etcd-key go together")]
    CertWithoutKey,
    #[error(
        "--etcd-cert and --etcd-key need --etcd-cacert (the CA that signed etcd's certificate)"
    )]
    CertWithoutCa,
    #[error("invalid --dataplane {value:?}: expected auto, ipvs or nftables")]
    Dataplane { value: String },
    #[error("invalid {flag} {value}: must be between 1 and 2000000 seconds")]
    IpvsTimeout { flag: &'static str, value: u32 },
    #[error("invalid --log-level {value:?}: expected trace, debug, info, warn or error")]
    LogLevel { value: String },
    #[error("--gwbridge-subnet: {0}")]
    GwbridgeSubnet(#[source] ValidationError),
    #[error("--ingress-subnet: {0}")]
    IngressSubnet(#[source] ValidationError),
    #[error("--ingress-subnet {ingress} overlaps --gwbridge-subnet {gwbridge}")]
    SubnetsOverlap { ingress: Ipv4Net, gwbridge: Ipv4Net },
    #[error("invalid --dns {value:?}: expected IP or IP:PORT")]
    Dns { value: String },
    #[error("invalid --dns-ttl {value}: at most 86400")]
    DnsTtl { value: u32 },
    #[error("--ipsec-key-rotation {value}: expected 10 to 31536000 seconds")]
    KeyRotation { value: u64 },
    #[error("{} must be an absolute path", path.display())]
    RelativeDir { path: PathBuf },
}

#[derive(Args, Debug, Default, Clone)]
pub struct DaemonArgs {
    /// TOML file with the same keys as these flags (e.g. `node-name = "n1"`); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's name [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Underlay IPv4 address for VXLAN.
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Where desired state is kept [default: /var/lib/routemesh].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Socket, named namespaces and task logs [default: /run/routemesh].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// `local` (a file in the state dir) or `etcd://HOST:PORT[,HOST:PORT...]` [default: local].
    #[arg(long)]
    pub store: Option<String>,
    /// CA certificate for etcd over TLS.
    #[arg(long)]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd over TLS.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd over TLS.
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// Seconds a node stays registered without renewing its lease (etcd) [default: 10].
    #[arg(long)]
    pub lease_ttl: Option<u64>,
    /// Load-balancing dataplane: `auto` (IPVS where the kernel has it, else nftables),
    /// `ipvs` or `nftables` [default: auto].
    #[arg(long)]
    pub dataplane: Option<String>,
    /// IPVS idle timeout of TCP connections, seconds [default: 86400].
    #[arg(long)]
    pub ipvs_tcp_timeout: Option<u32>,
    /// IPVS timeout of TCP connections after FIN, seconds [default: 120].
    #[arg(long)]
    pub ipvs_tcpfin_timeout: Option<u32>,
    /// IPVS timeout of UDP flows, seconds [default: 300].
    #[arg(long)]
    pub ipvs_udp_timeout: Option<u32>,
    /// trace, debug, info, warn or error [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Subnet of the per-node gateway bridge rm_gwbridge [default: 172.18.0.0/16].
    #[arg(long)]
    pub gwbridge_subnet: Option<String>,
    /// Subnet of the ingress overlay, used when it is first created [default: 10.255.0.0/16].
    #[arg(long)]
    pub ingress_subnet: Option<String>,
    /// Upstream DNS server (IP or IP:PORT, repeatable) [default: the node's /etc/resolv.conf].
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// TTL of the embedded DNS's answers, in seconds [default: 5].
    #[arg(long)]
    pub dns_ttl: Option<u32>,
    /// OCI runtime running the tasks: `runc`, `crun` or a path [default: runc].
    #[arg(long)]
    pub runtime: Option<String>,
    /// How often the encrypted overlays' IPsec key is rotated, seconds [default: 43200, 12 h].
    #[arg(long)]
    pub ipsec_key_rotation: Option<u64>,
}

#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub runtime: Option<String>,
    pub advertise_addr: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub lease_ttl: Option<u64>,
    pub dataplane: Option<String>,
    pub ipvs_tcp_timeout: Option<u32>,
    pub ipvs_tcpfin_timeout: Option<u32>,
    pub ipvs_udp_timeout: Option<u32>,
    pub log_level: Option<String>,
    pub gwbridge_subnet: Option<String>,
    pub ingress_subnet: Option<String>,
    pub dns: Option<Vec<String>>,
    pub dns_ttl: Option<u32>,
    pub ipsec_key_rotation: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    Local,
    Etcd {
        endpoints: Vec<String>,
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        lease_ttl: u64,
    },
}

/// Which load-balancing dataplane was asked for; `Auto` is settled at start by probing the
/// kernel for IPVS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    Auto,
    Nftables,
    Ipvs,
}

/// IPVS connection timeouts, in seconds. The TCP idle default is a day, far above Docker's
/// 900 s, so long-lived idle connections (a client's 7200 s keepalive) survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpvsTimeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Default for IpvsTimeouts {
    fn default() -> Self {
        IpvsTimeouts {
            tcp: 86_400,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub node_name: String,
    pub advertise_addr: Option<Ipv4Addr>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub store: StoreSpec,
    pub dataplane: Dataplane,
    pub ipvs_timeouts: IpvsTimeouts,
    pub log_level: String,
    pub gwbridge_subnet: Ipv4Net,
    pub ingress_subnet: Ipv4Net,
    /// Empty: read the node's /etc/resolv.conf at start.
    pub dns: Vec<std::net::SocketAddr>,
    pub dns_ttl: u32,
    /// The OCI runtime's name or path (found when the daemon starts).
    pub runtime: String,
    /// Seconds between two rotations of the IPsec key.
    pub ipsec_key_rotation: u64,
}

impl DaemonConfig {
    pub fn socket(&self) -> PathBuf {
        crate::layout::RunDir::new(&self.run_dir).socket()
    }
}

pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Flags over file over defaults, every value checked.
pub fn resolve(
    args: &DaemonArgs,
    file: FileConfig,
    hostname: &str,
) -> Result<DaemonConfig, ConfigError> {
    let pick = |a: &Option<String>, f: Option<String>| a.clone().or(f);
    let node_name = pick(&args.node_name, file.node_name).unwrap_or_else(|| hostname.to_string());
    if !crate::model::names::is_node_name(&node_name) {
        return Err(ConfigError::NodeName { name: node_name });
    }
    let advertise_addr = pick(&args.advertise_addr, file.advertise_addr)
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| ConfigError::AdvertiseAddr { value: s.clone() })
        })
        .transpose()?;
    let store = match pick(&args.store, file.store).as_deref().unwrap_or("local") {
        "local" => StoreSpec::Local,
        s if s.starts_with("etcd://") => {
            let endpoints =
                crate::store::etcd::endpoints_from_url(s).map_err(ConfigError::StoreUrl)?;
            let lease_ttl = args.lease_ttl.or(file.lease_ttl).unwrap_or(10);
            if !(2..=300).contains(&lease_ttl) {
                return Err(ConfigError::LeaseTtl { value: lease_ttl });
            }
            let cert = args.etcd_cert.clone().or(file.etcd_cert);
            let key = args.etcd_key.clone().or(file.etcd_key);
            if cert.is_some() != key.is_some() {
                return Err(ConfigError::CertWithoutKey);
            }
            let cacert = args.etcd_cacert.clone().or(file.etcd_cacert);
            if cert.is_some() && cacert.is_none() {
                // Without a CA there is no TLS at all: a client certificate would be ignored.
                return Err(ConfigError::CertWithoutCa);
            }
            StoreSpec::Etcd {
                endpoints,
                cacert,
                cert,
                key,
                lease_ttl,
            }
        }
        s => return Err(ConfigError::StoreKind { value: s.into() }),
    };
    let dataplane = match pick(&args.dataplane, file.dataplane)
        .as_deref()
        .unwrap_or("auto")
    {
        "auto" => Dataplane::Auto,
        "nftables" => Dataplane::Nftables,
        "ipvs" => Dataplane::Ipvs,
        s => return Err(ConfigError::Dataplane { value: s.into() }),
    };
    let defaults = IpvsTimeouts::default();
    let timeout = |flag: &'static str, a: Option<u32>, f: Option<u32>, d: u32| {
        let v = a.or(f).unwrap_or(d);
        if v == 0 || v > 2_000_000 {
            return Err(ConfigError::IpvsTimeout { flag, value: v });
        }
        Ok(v)
    };
    let ipvs_timeouts = IpvsTimeouts {
        tcp: timeout(
            "--ipvs-tcp-timeout",
            args.ipvs_tcp_timeout,
            file.ipvs_tcp_timeout,
            defaults.tcp,
        )?,
        tcp_fin: timeout(
            "--ipvs-tcpfin-timeout",
            args.ipvs_tcpfin_timeout,
            file.ipvs_tcpfin_timeout,
            defaults.tcp_fin,
        )?,
        udp: timeout(
            "--ipvs-udp-timeout",
            args.ipvs_udp_timeout,
            file.ipvs_udp_timeout,
            defaults.udp,
        )?,
    };
    let log_level = pick(&args.log_level, file.log_level).unwrap_or_else(|| "info".into());
    if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
        return Err(ConfigError::LogLevel { value: log_level });
    }
    let gw = pick(&args.gwbridge_subnet, file.gwbridge_subnet)
        .unwrap_or_else(|| crate::ipam::DEFAULT_GWBRIDGE_SUBNET.into());
    let gwbridge_subnet = crate::validate::subnet(&gw).map_err(ConfigError::GwbridgeSubnet)?;
    let ing = pick(&args.ingress_subnet, file.ingress_subnet)
        .unwrap_or_else(|| DEFAULT_INGRESS_SUBNET.into());
    let ingress_subnet = crate::validate::subnet(&ing).map_err(ConfigError::IngressSubnet)?;
    if crate::ipam::overlaps(&ingress_subnet, &gwbridge_subnet) {
        return Err(ConfigError::SubnetsOverlap {
            ingress: ingress_subnet,
            gwbridge: gwbridge_subnet,
        });
    }
    let dns_given = if args.dns.is_empty() {
        file.dns.unwrap_or_default()
    } else {
        args.dns.clone()
    };
    let dns = dns_given
        .iter()
        .map(|s| {
            s.parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    s.parse::<Ipv4Addr>()
                        .map(|ip| std::net::SocketAddr::from((ip, 53)))
                })
                .map_err(|_| ConfigError::Dns { value: s.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dns_ttl = args.dns_ttl.or(file.dns_ttl).unwrap_or(5);
    if dns_ttl > 86_400 {
        return Err(ConfigError::DnsTtl { value: dns_ttl });
    }
    let ipsec_key_rotation = args
        .ipsec_key_rotation
        .or(file.ipsec_key_rotation)
        .unwrap_or(43_200);
    if !(10..=31_536_000).contains(&ipsec_key_rotation) {
        return Err(ConfigError::KeyRotation {
            value: ipsec_key_rotation,
        });
    }
    let dir = |a: &Option<PathBuf>, f: Option<PathBuf>, d: &str| {
        let path = a.clone().or(f).unwrap_or_else(|| PathBuf::from(d));
        if !path.is_absolute() {
            return Err(ConfigError::RelativeDir { path });
        }
        Ok(path)
    };
    Ok(DaemonConfig {
        node_name,
        advertise_addr,
        state_dir: dir(&args.state_dir, file.state_dir, "/var/lib/routemesh")?,
        run_dir: dir(&args.run_dir, file.run_dir, crate::layout::DEFAULT_RUN_DIR)?,
        store,
        dataplane,
        ipvs_timeouts,
        log_level,
        gwbridge_subnet,
        ingress_subnet,
        dns,
        dns_ttl,
        runtime: args
            .runtime
            .clone()
            .or(file.runtime)
            .unwrap_or_else(|| routemesh_runtime::oci::DEFAULT_RUNTIME.to_string()),
        ipsec_key_rotation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = resolve(&DaemonArgs::default(), FileConfig::default(), "host1").unwrap();
        assert_eq!(c.node_name, "host1");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/routemesh"));
        assert_eq!(c.socket(), PathBuf::from("/run/routemesh/routemesh.sock"));
        assert_eq!((c.store, c.dataplane), (StoreSpec::Local, Dataplane::Auto));
        assert_eq!(c.gwbridge_subnet.to_string(), "172.18.0.0/16");
        assert_eq!(c.dns_ttl, 5);
        let a = DaemonArgs {
            dns: vec!["10.1.1.1".into(), "10.1.1.2:5353".into()],
            ..Default::default()
        };
        let c = resolve(&a, FileConfig::default(), "h").unwrap();
        let dns: Vec<String> = c.dns.iter().map(|d| d.to_string()).collect();
        assert_eq!(dns, ["10.1.1.1:53", "10.1.1.2:5353"]);
    }

    #[test]
    fn etcd_tls_flags_reach_the_store_spec() {
        let args = DaemonArgs {
            store: Some("etcd://10.0.0.1:2379,10.0.0.2:2379".into()),
            etcd_cacert: Some("/c/ca.pem".into()),
            etcd_cert: Some("/c/me.pem".into()),
            etcd_key: Some("/c/me.key".into()),
            ..Default::default()
        };
        let c = resolve(&args, FileConfig::default(), "h").unwrap();
        match c.store {
            StoreSpec::Etcd {
                endpoints,
                cacert,
                cert,
                key,
                lease_ttl,
            } => {
                assert_eq!(endpoints.len(), 2);
                assert_eq!(cacert, Some(PathBuf::from("/c/ca.pem")));
                assert_eq!(cert, Some(PathBuf::from("/c/me.pem")));
                assert_eq!(key, Some(PathBuf::from("/c/me.key")));
                assert_eq!(lease_ttl, 10);
            }
            other => panic!("{other:?}"),
        }
        let no_ca = DaemonArgs {
            etcd_cacert: None,
            ..args.clone()
        };
        let err = resolve(&no_ca, FileConfig::default(), "h").unwrap_err();
        assert!(err.to_string().contains("need --etcd-cacert"), "{err}");
        let no_key = DaemonArgs {
            etcd_key: None,
            ..args
        };
        let err = resolve(&no_key, FileConfig::default(), "h").unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
    }

    #[test]
    fn file_keys_match_flags_and_flags_win() {
        let file: FileConfig = toml::from_str(
            "node-name = \"n1\"\nadvertise-addr = \"192.168.9.1\"\nrun-dir = \"/tmp/r\"\nlog-level = \"debug\"\n",
        )
        .unwrap();
        let args = DaemonArgs {
            node_name: Some("n2".into()),
            ..Default::default()
        };
        let c = resolve(&args, file, "h").unwrap();
        assert_eq!(c.node_name, "n2");
        assert_eq!(c.advertise_addr, Some("192.168.9.1".parse().unwrap()));
        assert_eq!(c.run_dir, PathBuf::from("/tmp/r"));
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("nod-name = \"x\"").is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |f: fn(&mut DaemonArgs)| {
            let mut a = DaemonArgs::default();
            f(&mut a);
            resolve(&a, FileConfig::default(), "h")
                .unwrap_err()
                .to_string()
        };
        assert!(bad(|a| a.advertise_addr = Some("x".into())).contains("--advertise-addr"));
        assert!(bad(|a| a.store = Some("etcd://".into())).contains("invalid --store"));
        assert!(bad(|a| {
            a.store = Some("etcd://h:1".into());
            a.lease_ttl = Some(1);
        })
        .contains("--lease-ttl"));
        let ok = resolve(
            &DaemonArgs {
                store: Some("etcd://10.9.0.1:2379,10.9.0.2:2379".into()),
                ..Default::default()
            },
            FileConfig::default(),
            "h",
        )
        .unwrap();
        assert!(
            matches!(ok.store, StoreSpec::Etcd { ref endpoints, lease_ttl: 10, .. } if endpoints.len() == 2)
        );
        assert!(bad(|a| a.store = Some("zk".into())).contains("invalid --store"));
        assert!(bad(|a| a.dataplane = Some("lvs".into())).contains("invalid --dataplane"));
        assert!(bad(|a| a.ipvs_tcp_timeout = Some(0)).contains("--ipvs-tcp-timeout"));
        assert!(bad(|a| a.log_level = Some("loud".into())).contains("--log-level"));
        assert!(bad(|a| a.run_dir = Some("rel".into())).contains("absolute"));
        assert!(bad(|a| a.node_name = Some("a b".into())).contains("node name"));
        // A node's name is part of store keys: `..` would climb out of its place.
        assert!(bad(|a| a.node_name = Some("..".into())).contains("node name"));
        assert!(bad(|a| a.ingress_subnet = Some("172.18.0.0/24".into())).contains("overlaps"));
        assert!(bad(|a| a.dns = vec!["resolver".into()]).contains("--dns"));
    }
}
