//! The cluster state as stored: networks, services, tasks, task status and nodes.
//!
//! These are plain serde structs; what may be stored is decided in `validate`, and what the
//! kernel should hold is derived from them in `agent::plan`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Overlay,
    /// Tasks get a macvlan leg (mode bridge) on a parent interface of their node: addresses
    /// on that interface's segment, reachable from it without NAT.
    Macvlan,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
            Driver::Macvlan => "macvlan",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// Random 12-hex-digit id; names the network's kernel objects so that a network removed
    /// and created again under the same name never meets the old one's leftovers.
    pub id: String,
    pub driver: Driver,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// VXLAN network identifier (overlay only).
    pub vni: Option<u32>,
    pub created_at: u64,
    /// The routing mesh's own overlay, carrying published-port traffic between nodes.
    #[serde(default)]
    pub ingress: bool,
    /// The node interface a macvlan network's legs hang off (`--opt parent=IF`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// An overlay whose VXLAN travels between nodes in IPsec ESP (`--opt encrypted`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// The keys of the encrypted overlays: one keyring for the cluster (as Swarm's), generated and
/// rotated by the orchestrator. Every node accepts ESP under each key; it sends under
/// `primary`. A rotation adds a key, then makes it primary, then drops the old one, a settle
/// time apart, so no node ever sends under a key another node cannot read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    pub keys: Vec<IpsecKey>,
    /// Tag of the key nodes send under.
    pub primary: u32,
    pub phase: RotationPhase,
    /// When the current phase began (seconds since the epoch).
    pub phase_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecKey {
    /// Distinguishes the keys (and their SPIs).
    pub tag: u32,
    /// AES-128-GCM key and 4-byte salt (RFC 4106), 40 hex digits.
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationPhase {
    /// One key; the next rotation is due `rotation` after `phase_at`.
    Steady,
    /// A new key was added (accepted everywhere, not sent under yet).
    Added,
    /// The new key is primary; the old one is still accepted.
    Switched,
}

impl Network {
    /// The gateway with the subnet's prefix length, as set on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP per network, load-balanced over the tasks (every port).
    #[default]
    Vip,
    /// No VIP: DNS answers the tasks' addresses in turn.
    Dnsrr,
}

pub use routemesh_types::{Proto, Scheduler};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Every node answers and forwards over the ingress network (the routing mesh).
    #[default]
    Ingress,
    /// Only nodes running a task answer, straight to their local tasks.
    Host,
}

impl std::fmt::Display for PublishMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortConfig {
    pub published: u16,
    pub target: u16,
    pub proto: Proto,
    #[serde(default)]
    pub mode: PublishMode,
}

impl std::fmt::Display for PortConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.published, self.target, self.proto)?;
        if self.mode == PublishMode::Host {
            f.write_str(" (host)")?;
        }
        Ok(())
    }
}

/// A service's virtual IP on one of its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceVip {
    pub network: String,
    pub address: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub id: String,
    pub replicas: u32,
    pub networks: Vec<String>,
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// Allocated when the service is created (endpoint mode `vip`), released with it.
    #[serde(default)]
    pub vips: Vec<ServiceVip>,
    /// How the IPVS dataplane picks a task (nftables picks at random, weighted). A scheduler
    /// only a newer version knows reads as the default (round robin).
    #[serde(default, deserialize_with = "or_default")]
    pub lb_scheduler: Scheduler,
    /// A local OCI image (`name:tag`); without one the task's root is the host's, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `uid[:gid]` or `name[:group]`; the image's user (or root) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

/// Decodes a field whose values a newer version may extend, where the default is a safe
/// reading of any value this version does not know.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

/// A task's cgroup limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Thousandths of a CPU (`--limit-cpu 0.5` is 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl Service {
    pub fn publishes_ingress(&self) -> bool {
        self.ports.iter().any(|p| p.mode == PublishMode::Ingress)
    }
}

/// A node's own address on an overlay network: the source address its load balancer
/// translates to (so replies come back to the node that balanced), and on the ingress
/// network the address of its `ingress_sbox`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub network: String,
    pub node: String,
    pub address: Ipv4Net,
}

/// One network leg of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAttachment {
    pub network: String,
    pub address: Ipv4Net,
}

/// A task as the orchestrator assigned it: desired state only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `SERVICE.SLOT`, e.g. `web.1`.
    pub name: String,
    pub service: String,
    pub slot: u32,
    pub node: String,
    /// One per service network, in the service's order (`eth0`, `eth1`, ...).
    pub attachments: Vec<TaskAttachment>,
    /// The task's address on the node's gateway bridge (its egress leg, last interface).
    pub gateway_address: Ipv4Net,
    pub created_at: u64,
    /// Running until the orchestrator wants the task gone; the node's agent then stops it,
    /// tears its sandbox down and only then deletes the record (Swarm's desired state).
    #[serde(default)]
    pub desired: DesiredState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Shutdown,
    /// A value written by a newer version: neither started nor counted as running.
    #[serde(other)]
    Unknown,
}

impl Task {
    pub fn name_for(service: &str, slot: u32) -> String {
        format!("{service}.{slot}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Assigned, sandbox or process not up yet.
    Starting,
    Running,
    /// Exited or failed to start; will be restarted after a back-off.
    Failed,
    /// No node can take it now (`task ls` says why); placed as soon as one can.
    Pending,
    /// A value written by a newer version: not running as far as this version can tell.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Failed => "failed",
            TaskState::Pending => "pending",
            TaskState::Unknown => "unknown",
        })
    }
}

/// What the node running a task reports about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub pid: Option<u32>,
    /// Why the task is not running (spawn error, exit status), empty when running.
    pub message: String,
    pub restarts: u32,
    /// True once the process has been seen running at least once.
    pub ever_ran: bool,
    pub updated_at: u64,
}

/// Slots of a service the orchestrator could not place, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub service: String,
    pub slots: Vec<u32>,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Ready,
    Down,
    /// A value written by a newer version (the store's alive key decides anyway).
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub advertise_addr: Option<Ipv4Addr>,
    pub state: NodeState,
    /// The node's API socket, so a CLI talking to any daemon can be pointed at the right one.
    pub api_socket: String,
    pub run_dir: String,
    pub updated_at: u64,
    /// Names of the OCI images in the node's store: a service with an image is placed only
    /// on nodes that have it.
    #[serde(default)]
    pub images: Vec<String>,
}

/// A persistent ordered map: a clone is O(1) and shares every unchanged node, so a snapshot of
/// the cluster costs nothing to take and one changed object costs O(log n) to write.
pub type Map<K, V> = imbl::OrdMap<K, V>;
pub type Set<K> = imbl::OrdSet<K>;

/// Everything the planner and the orchestrator look at: the store's records, decoded and
/// checked once. The daemon's informer cache (`store::cache`) keeps one and updates it per
/// watch event; readers hold immutable snapshots of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub networks: Map<String, Network>,
    pub services: Map<String, Service>,
    pub tasks: Map<String, Task>,
    pub statuses: Map<String, TaskStatus>,
    pub nodes: Map<String, Node>,
    /// Keyed by (network, node).
    pub node_addrs: Map<(String, String), NodeAddress>,
    /// Keyed by service.
    pub pending: Map<String, Pending>,
    /// The encrypted overlays' keys, once one exists.
    pub keyring: Option<Keyring>,
    /// Nodes whose alive key exists (their record's `state` says Ready).
    pub alive: Set<String>,
    /// Every claim key (addresses, VNIs, subnets, ports): the allocators' index.
    pub claims: Set<String>,
    /// The addresses claimed under each claims prefix (`/routemesh/claims/addr/NETWORK-ID/`,
    /// `/routemesh/claims/gwaddr/NODE/`), sorted: the next free address is found by walking
    /// the taken ones in order, not by parsing every claim.
    pub claimed_addrs: Map<String, Set<Ipv4Addr>>,
    pub revision: u64,
    /// Records left out because they did not decode or named something unsafe (see
    /// `store::state`), by key; everything else is used as usual.
    pub skipped: Map<String, SkippedRecord>,
}

/// A store record `store::state::read` left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    pub key: String,
    pub reason: String,
}

impl ClusterState {
    /// The tasks of `service`, found by their names (`SERVICE.SLOT`), not by a scan.
    pub fn tasks_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        let prefix = format!("{service}.");
        self.tasks
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, t)| t)
            .filter(move |t| t.service == service)
    }

    /// The addresses claimed under `prefix` (a claims prefix ending in `/`).
    pub fn taken(&self, prefix: &str) -> Set<Ipv4Addr> {
        self.claimed_addrs.get(prefix).cloned().unwrap_or_default()
    }

    /// The leaf names of every claim under `prefix` (a claims prefix from `store::keys`).
    pub fn claimed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.claims
            .range(prefix.to_string()..)
            .take_while(move |k| k.starts_with(prefix))
            .map(|k| &k[prefix.len()..])
    }

    /// Whether any overlay is encrypted (then the keyring is needed).
    pub fn any_encrypted(&self) -> bool {
        self.networks
            .values()
            .any(|n| n.encrypted && n.vni.is_some())
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn random_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")[..12].to_string()
}

/// The syntax of the names that become paths, interface names, hostnames, DNS names and nft
/// identifiers. `validate` checks requests with these, and `store::state::read` checks every
/// record read back from the store with them again (a store is not trusted to hold only what
/// this version wrote).
pub mod names {
    /// Longest service name: its tasks' names (`NAME.SLOT`, up to `.10000`) are their
    /// hostnames, which the kernel caps at 64 bytes.
    pub const MAX_SERVICE_NAME: usize = 58;

    /// 1-63 letters, digits, `_`, `.`, `-`, starting with a letter or digit (Docker's rule).
    pub fn is_network_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    /// A DNS label of 1-58 letters, digits and `-`, not starting or ending with `-`.
    pub fn is_service_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_SERVICE_NAME
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }

    /// 1-63 letters, digits, `-`, `_`, `.`, and not `.` or `..` (a node's name is part of
    /// store keys and of its tasks' cgroup path).
    pub fn is_node_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    /// A task's name, `SERVICE.SLOT`: returns the service and the slot.
    pub fn parse_task_name(name: &str) -> Option<(&str, u32)> {
        let (service, slot) = name.rsplit_once('.')?;
        let ok = is_service_name(service)
            && !slot.is_empty()
            && slot.len() <= 5
            && slot.bytes().all(|b| b.is_ascii_digit())
            && !slot.starts_with('0');
        let slot: u32 = slot.parse().ok()?;
        ok.then_some((service, slot))
    }

    /// A network's id: what `random_id` makes, 12 lowercase hex digits (kernel object names
    /// are built from it).
    pub fn is_network_id(id: &str) -> bool {
        id.len() == 12
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// A Linux interface name the kernel accepts and that nft can quote (a macvlan parent):
    /// 1-15 printable ASCII characters, not `.` or `..`, without `/`, `:`, quotes or `\`.
    pub fn is_ifname(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '"' | '\'' | '\\'))
    }
}
