//! Syntax checks of everything a user can send, turning raw requests into typed ones.
//! Checks that need the cluster state (does the network exist, is the VNI free) live in
//! `control`, next to the transaction that depends on them.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use crate::model::{Driver, EndpointMode, Limits, PortConfig, Proto, PublishMode, Scheduler};
use crate::wire::{NetworkCreate, ServiceCreate};

/// A bad request: which field, the value given, and what is wrong with it, in words a user
/// can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("invalid network name {name:?}: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")]
    NetworkName { name: String },
    #[error("network name {name:?} is reserved")]
    ReservedNetworkName { name: String },
    #[error("invalid service name {name:?}: use 1-{MAX_SERVICE_NAME} letters, digits or '-', not starting or ending with '-'")]
    ServiceName { name: String },
    #[error("invalid replicas {value}: must be between 0 and {MAX_REPLICAS}")]
    Replicas { value: i64 },
    #[error("invalid --env {spec:?}: expected KEY=VALUE")]
    EnvNotKeyValue { spec: String },
    #[error(
        "invalid --env {spec:?}: KEY must be letters, digits and '_', not starting with a digit"
    )]
    EnvKey { spec: String },
    #[error("missing command: give it after `--`, e.g. `-- routemesh whoami --port 80`")]
    MissingCommand,
    #[error("invalid command: the program name is empty")]
    EmptyProgram,
    #[error("command {program:?} not found or not executable")]
    NotExecutable { program: String },
    #[error("command {program:?} not found in PATH ({path})")]
    NotInPath { program: String, path: String },
    #[error("invalid driver {value:?}: expected \"overlay\", \"bridge\" or \"macvlan\"")]
    Driver { value: String },
    #[error("unknown option {key:?} for a {driver} network{hint}")]
    NetworkOption {
        key: String,
        driver: Driver,
        hint: &'static str,
    },
    #[error("invalid --opt {key}={value:?}: expected true or false")]
    NetworkOptionValue { key: String, value: String },
    #[error("invalid --opt {value:?}: expected KEY=VALUE")]
    NetworkOptionSyntax { value: String },
    #[error("a macvlan network needs --opt parent=IF (the node interface its tasks hang off)")]
    MacvlanParentMissing,
    #[error("a macvlan network needs --subnet (and usually --gateway): its tasks take addresses on the parent's segment")]
    MacvlanSubnetMissing,
    #[error("invalid macvlan mode {value:?}: only \"bridge\" is supported")]
    MacvlanMode { value: String },
    #[error(
        "invalid interface name {value:?}: 1-15 characters, no '/', ':', whitespace or quotes"
    )]
    Ifname { value: String },
    #[error("invalid subnet {value:?}: expected an IPv4 CIDR like 10.1.0.0/24")]
    SubnetSyntax { value: String },
    #[error("invalid subnet {value}: a /{prefix} has no room for a gateway and a task; use /30 or wider")]
    SubnetTooSmall { value: String, prefix: u8 },
    #[error("invalid subnet {value}: host bits set, did you mean {network}?")]
    SubnetHostBits { value: String, network: Ipv4Net },
    #[error("invalid gateway {value:?}: expected an IPv4 address")]
    GatewaySyntax { value: String },
    #[error("invalid gateway {gateway}: not a host address of subnet {subnet}")]
    GatewayNotInSubnet { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    #[error("invalid VNI {value}: must be between 1 and {}", crate::ipam::VNI_MAX)]
    Vni { value: u32 },
    #[error("--vni is only for overlay networks")]
    VniOnBridge,
    #[error("invalid --publish {spec:?}: {problem}")]
    Publish {
        spec: String,
        problem: PublishProblem,
    },
    #[error("port {port}/{proto} is published twice")]
    PublishedTwice { port: u16, proto: Proto },
    #[error("invalid --lb-scheduler {value:?}: expected rr, wrr, lc, sh or mh")]
    Scheduler { value: String },
    #[error("invalid --endpoint-mode {value:?}: expected vip or dnsrr")]
    EndpointMode { value: String },
    #[error("network {network:?} given twice")]
    NetworkTwice { network: String },
    #[error("invalid --image {value:?}: {problem}")]
    Image { value: String, problem: String },
    #[error("invalid --user {value:?}: expected uid[:gid] or name[:group]")]
    User { value: String },
    #[error(
        "invalid --limit-memory {value:?}: expected bytes or a number with k, m or g, at least 6m"
    )]
    Memory { value: String },
    #[error(
        "invalid --limit-cpu {value:?}: expected a number of CPUs like 0.5, between 0.01 and 1024"
    )]
    Cpu { value: String },
    #[error("invalid --limit-pids {value}: must be between 1 and 4194304")]
    Pids { value: i64 },
}

/// What is wrong with one `--publish` spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishProblem {
    #[error("{role} port {value:?} must be 1-65535")]
    Port { role: PortRole, value: String },
    #[error("protocol {value:?} must be tcp or udp")]
    Protocol { value: String },
    #[error("mode {value:?} must be ingress or host")]
    Mode { value: String },
    #[error("unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("expected PUBLISHED:TARGET[/tcp|/udp]")]
    Syntax,
    #[error("both a published and a target port are needed")]
    Incomplete,
}

/// Which port of a `--publish` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    Published,
    Target,
}

impl std::fmt::Display for PortRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortRole::Published => "published",
            PortRole::Target => "target",
        })
    }
}

type Result<T> = std::result::Result<T, ValidationError>;

pub const MAX_REPLICAS: i64 = 10_000;
/// Names the ingress network will take; refused for user networks from the start.
pub const RESERVED_NETWORK_NAMES: &[&str] = &["ingress", "host", "none", "rm_gwbridge"];

/// Network names: 1-63 characters, letters, digits, `_`, `.`, `-`, starting with a letter or
/// digit (Docker's rule).
pub fn network_name(name: &str) -> Result<()> {
    if !crate::model::names::is_network_name(name) {
        return Err(ValidationError::NetworkName { name: name.into() });
    }
    if RESERVED_NETWORK_NAMES.contains(&name) {
        return Err(ValidationError::ReservedNetworkName { name: name.into() });
    }
    Ok(())
}

pub use crate::model::names::MAX_SERVICE_NAME;

/// Service names are DNS labels (they become DNS names): 1-58 letters, digits and `-`, not
/// starting or ending with `-`. No `.`, which separates a task's slot (`web.1`).
pub fn service_name(name: &str) -> Result<()> {
    if !crate::model::names::is_service_name(name) {
        return Err(ValidationError::ServiceName { name: name.into() });
    }
    Ok(())
}

pub fn replicas(n: i64) -> Result<u32> {
    if !(0..=MAX_REPLICAS).contains(&n) {
        return Err(ValidationError::Replicas { value: n });
    }
    Ok(n as u32)
}

pub fn env_var(kv: &str) -> Result<(String, String)> {
    let Some((k, v)) = kv.split_once('=') else {
        return Err(ValidationError::EnvNotKeyValue { spec: kv.into() });
    };
    let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(ValidationError::EnvKey { spec: kv.into() });
    }
    Ok((k.to_string(), v.to_string()))
}

/// The command must be something this node can execute: an executable path, or a name found
/// on `path_var` (the daemon's PATH). A task that cannot start is refused before anything is
/// stored, rather than restarted forever.
pub fn command(argv: &[String], path_var: &str) -> Result<()> {
    let Some(prog) = argv.first() else {
        return Err(ValidationError::MissingCommand);
    };
    if prog.is_empty() {
        return Err(ValidationError::EmptyProgram);
    }
    if prog.contains('/') {
        return if is_executable(Path::new(prog)) {
            Ok(())
        } else {
            Err(ValidationError::NotExecutable {
                program: prog.clone(),
            })
        };
    }
    let found = path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|d| is_executable(&Path::new(d).join(prog)));
    if !found {
        return Err(ValidationError::NotInPath {
            program: prog.clone(),
            path: path_var.into(),
        });
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn driver(s: Option<&str>) -> Result<Driver> {
    match s.unwrap_or("overlay") {
        "overlay" => Ok(Driver::Overlay),
        "bridge" => Ok(Driver::Bridge),
        "macvlan" => Ok(Driver::Macvlan),
        other => Err(ValidationError::Driver {
            value: other.into(),
        }),
    }
}

/// An IPv4 subnet with room for a gateway and at least one task, given in canonical form.
pub fn subnet(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| ValidationError::SubnetSyntax { value: s.into() })?;
    if net.prefix_len() > 30 {
        return Err(ValidationError::SubnetTooSmall {
            value: s.into(),
            prefix: net.prefix_len(),
        });
    }
    if net.network() != net.addr() {
        return Err(ValidationError::SubnetHostBits {
            value: s.into(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

pub fn gateway(s: &str, subnet: &Ipv4Net) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| ValidationError::GatewaySyntax { value: s.into() })?;
    if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(ValidationError::GatewayNotInSubnet {
            gateway: ip,
            subnet: *subnet,
        });
    }
    Ok(ip)
}

pub fn vni(v: u32) -> Result<u32> {
    if !(1..=crate::ipam::VNI_MAX).contains(&v) {
        return Err(ValidationError::Vni { value: v });
    }
    Ok(v)
}

/// A network request whose every field has been checked on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub name: String,
    pub driver: Driver,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub vni: Option<u32>,
    /// The macvlan parent interface.
    pub parent: Option<String>,
    /// An overlay carried in IPsec ESP between nodes.
    pub encrypted: bool,
}

/// A Linux interface name the kernel accepts and that is safe to print in nft and paths.
pub fn ifname(s: &str) -> Result<&str> {
    if crate::model::names::is_ifname(s) {
        Ok(s)
    } else {
        Err(ValidationError::Ifname { value: s.into() })
    }
}

/// The driver options of a network request: `parent` (and `macvlan_mode=bridge`) for macvlan,
/// `encrypted` for overlays.
fn network_options(
    driver: Driver,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(Option<String>, bool)> {
    let mut parent = None;
    let mut encrypted = false;
    for (key, value) in options {
        match (driver, key.as_str()) {
            (Driver::Macvlan, "parent") => parent = Some(ifname(value)?.to_string()),
            (Driver::Macvlan, "macvlan_mode") if value == "bridge" => {}
            (Driver::Macvlan, "macvlan_mode") => {
                return Err(ValidationError::MacvlanMode {
                    value: value.clone(),
                })
            }
            (Driver::Overlay, "encrypted") => match value.as_str() {
                "" | "true" => encrypted = true,
                "false" => {}
                _ => {
                    return Err(ValidationError::NetworkOptionValue {
                        key: key.clone(),
                        value: value.clone(),
                    })
                }
            },
            _ => {
                return Err(ValidationError::NetworkOption {
                    key: key.clone(),
                    driver,
                    hint: if driver == Driver::Macvlan {
                        " (known: parent, macvlan_mode)"
                    } else {
                        ""
                    },
                })
            }
        }
    }
    if driver == Driver::Macvlan && parent.is_none() {
        return Err(ValidationError::MacvlanParentMissing);
    }
    Ok((parent, encrypted))
}

pub fn network_request(req: &NetworkCreate) -> Result<NetworkRequest> {
    network_name(&req.name)?;
    let driver = driver(req.driver.as_deref())?;
    let subnet = req.subnet.as_deref().map(subnet).transpose()?;
    let gateway = match (&req.gateway, &subnet) {
        (Some(g), Some(s)) => Some(gateway(g, s)?),
        (Some(_), None) => return Err(ValidationError::GatewayWithoutSubnet),
        (None, _) => None,
    };
    let vni = match (req.vni, driver) {
        (Some(v), Driver::Overlay) => Some(vni(v)?),
        (Some(_), Driver::Bridge | Driver::Macvlan) => return Err(ValidationError::VniOnBridge),
        (None, _) => None,
    };
    let (parent, encrypted) = network_options(driver, &req.options)?;
    if driver == Driver::Macvlan && subnet.is_none() {
        return Err(ValidationError::MacvlanSubnetMissing);
    }
    Ok(NetworkRequest {
        name: req.name.clone(),
        driver,
        subnet,
        gateway,
        vni,
        parent,
        encrypted,
    })
}

fn bad_publish(spec: &str, problem: PublishProblem) -> ValidationError {
    ValidationError::Publish {
        spec: spec.into(),
        problem,
    }
}

fn port(s: &str, role: PortRole, spec: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad_publish(
            spec,
            PublishProblem::Port {
                role,
                value: s.into(),
            },
        )),
    }
}

fn proto(s: &str, spec: &str) -> Result<Proto> {
    match s {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(bad_publish(
            spec,
            PublishProblem::Protocol {
                value: other.into(),
            },
        )),
    }
}

fn publish_mode(s: &str, spec: &str) -> Result<PublishMode> {
    match s {
        "ingress" => Ok(PublishMode::Ingress),
        "host" => Ok(PublishMode::Host),
        other => Err(bad_publish(
            spec,
            PublishProblem::Mode {
                value: other.into(),
            },
        )),
    }
}

/// A published port, in Docker's short form `[mode=M,]PUBLISHED:TARGET[/PROTO]` or long form
/// `published=P,target=T[,protocol=PROTO][,mode=M]`.
pub fn publish(spec: &str) -> Result<PortConfig> {
    let mut mode = PublishMode::Ingress;
    let (mut published, mut target, mut protocol) = (None, None, Proto::Tcp);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("mode", v)) => mode = publish_mode(v, spec)?,
            Some(("published", v)) => published = Some(port(v, PortRole::Published, spec)?),
            Some(("target", v)) => target = Some(port(v, PortRole::Target, spec)?),
            Some(("protocol", v)) => protocol = proto(v, spec)?,
            Some((k, _)) => {
                return Err(bad_publish(
                    spec,
                    PublishProblem::UnknownKey { key: k.into() },
                ))
            }
            None => {
                let (ports, p) = match part.split_once('/') {
                    Some((ports, p)) => (ports, proto(p, spec)?),
                    None => (part, Proto::Tcp),
                };
                let Some((pub_s, tgt_s)) = ports.split_once(':') else {
                    return Err(bad_publish(spec, PublishProblem::Syntax));
                };
                published = Some(port(pub_s, PortRole::Published, spec)?);
                target = Some(port(tgt_s, PortRole::Target, spec)?);
                protocol = p;
            }
        }
    }
    match (published, target) {
        (Some(published), Some(target)) => Ok(PortConfig {
            published,
            target,
            proto: protocol,
            mode,
        }),
        _ => Err(bad_publish(spec, PublishProblem::Incomplete)),
    }
}

/// `PUBLISHED[/PROTO]`, as `--publish-rm` takes it.
pub fn published_port(spec: &str) -> Result<(u16, Proto)> {
    let (p, pr) = match spec.split_once('/') {
        Some((p, pr)) => (p, proto(pr, spec)?),
        None => (spec, Proto::Tcp),
    };
    Ok((port(p, PortRole::Published, spec)?, pr))
}

/// No two ports of one list with the same published port and protocol.
pub fn distinct_ports(ports: &[PortConfig]) -> Result<()> {
    for (i, a) in ports.iter().enumerate() {
        if ports[..i]
            .iter()
            .any(|b| a.published == b.published && a.proto == b.proto)
        {
            return Err(ValidationError::PublishedTwice {
                port: a.published,
                proto: a.proto,
            });
        }
    }
    Ok(())
}

pub fn lb_scheduler(s: Option<&str>) -> Result<Scheduler> {
    let s = s.unwrap_or("rr");
    s.parse()
        .map_err(|_| ValidationError::Scheduler { value: s.into() })
}

pub fn endpoint_mode(s: Option<&str>) -> Result<EndpointMode> {
    match s.unwrap_or("vip") {
        "vip" => Ok(EndpointMode::Vip),
        "dnsrr" => Ok(EndpointMode::Dnsrr),
        other => Err(ValidationError::EndpointMode {
            value: other.into(),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub name: String,
    pub replicas: u32,
    pub networks: Vec<String>,
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
    pub endpoint_mode: EndpointMode,
    pub ports: Vec<PortConfig>,
    pub lb_scheduler: Scheduler,
    /// Normalised (`web` is `web:latest`).
    pub image: Option<String>,
    pub user: Option<String>,
    pub limits: Limits,
}

/// An image reference, normalised as the image store names images.
pub fn image(value: &str) -> Result<String> {
    routemesh_runtime::image::normalize_reference(value).map_err(|e| ValidationError::Image {
        value: value.into(),
        problem: e.to_string(),
    })
}

/// `uid[:gid]` or `name[:group]` (names as `useradd` takes them).
pub fn user(value: &str) -> Result<String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && (p.bytes().all(|b| b.is_ascii_digit())
                || (p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0] == b'_')
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b)
                    }))
    };
    let mut parts = value.splitn(2, ':');
    let ok = parts.next().is_some_and(part_ok) && parts.next().is_none_or(part_ok);
    if ok {
        Ok(value.to_string())
    } else {
        Err(ValidationError::User {
            value: value.into(),
        })
    }
}

/// Docker's smallest memory limit.
pub const MIN_MEMORY: u64 = 6 << 20;

/// `67108864`, `64m`, `1g`, `512k` (also with a trailing `b`, any case).
pub fn memory(value: &str) -> Result<u64> {
    let bad = || ValidationError::Memory {
        value: value.into(),
    };
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, shift) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 10),
        Some('m') => (&v[..v.len() - 1], 20),
        Some('g') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(bad)?;
    if bytes < MIN_MEMORY {
        return Err(bad());
    }
    Ok(bytes)
}

/// CPUs as a decimal, returned in thousandths.
pub fn cpu(value: &str) -> Result<u64> {
    let bad = || ValidationError::Cpu {
        value: value.into(),
    };
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let f: f64 = v.parse().map_err(|_| bad())?;
    if !(0.01..=1024.0).contains(&f) {
        return Err(bad());
    }
    Ok((f * 1000.0).round() as u64)
}

pub fn pids(value: i64) -> Result<i64> {
    if (1..=4_194_304).contains(&value) {
        Ok(value)
    } else {
        Err(ValidationError::Pids { value })
    }
}

pub fn service_request(req: &ServiceCreate, path_var: &str) -> Result<ServiceRequest> {
    service_name(&req.name)?;
    let replicas = replicas(req.replicas.unwrap_or(1))?;
    let mut networks: Vec<String> = Vec::new();
    for n in &req.networks {
        if networks.contains(n) {
            return Err(ValidationError::NetworkTwice { network: n.clone() });
        }
        networks.push(n.clone());
    }
    let env = req
        .env
        .iter()
        .map(|kv| env_var(kv))
        .collect::<Result<Vec<_>>>()?;
    let image = req.image.as_deref().map(image).transpose()?;
    // With an image the command runs inside it (and may be empty: the image's Cmd runs).
    if image.is_none() {
        command(&req.command, path_var)?;
    } else if req.command.first().is_some_and(|p| p.is_empty()) {
        return Err(ValidationError::EmptyProgram);
    }
    let user = req.user.as_deref().map(user).transpose()?;
    let limits = Limits {
        memory_bytes: req.limit_memory.as_deref().map(memory).transpose()?,
        cpu_millis: req.limit_cpu.as_deref().map(cpu).transpose()?,
        pids: req.limit_pids.map(pids).transpose()?,
    };
    let endpoint_mode = endpoint_mode(req.endpoint_mode.as_deref())?;
    let ports = req
        .publish
        .iter()
        .map(|p| publish(p))
        .collect::<Result<Vec<_>>>()?;
    distinct_ports(&ports)?;
    let lb_scheduler = lb_scheduler(req.lb_scheduler.as_deref())?;
    Ok(ServiceRequest {
        lb_scheduler,
        name: req.name.clone(),
        replicas,
        networks,
        env,
        command: req.command.clone(),
        endpoint_mode,
        ports,
        image,
        user,
        limits,
    })
}

#[cfg(test)]
mod tests;
