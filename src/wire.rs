//! What goes over the API socket, both ways: the request and answer bodies the server (`api`)
//! and its clients (`cli`, `demo`) exchange and `validate` checks. Documented in docs/api.md.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Network, Node, Service, TaskState};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub vni: Option<u32>,
    /// Driver options (`--opt KEY=VALUE`): `parent` for macvlan.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreate {
    pub name: String,
    /// Signed so that a negative count gets a clear error rather than a decode failure.
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub networks: Vec<String>,
    /// `KEY=VALUE` strings, as on the command line.
    #[serde(default)]
    pub env: Vec<String>,
    pub command: Vec<String>,
    /// `vip` (default) or `dnsrr`.
    #[serde(default)]
    pub endpoint_mode: Option<String>,
    /// `[mode=ingress|host,]PUBLISHED:TARGET[/tcp|/udp]`, or Docker's long form
    /// `published=P,target=T[,protocol=udp][,mode=host]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// IPVS scheduler: rr (default), wrr, lc, sh or mh.
    #[serde(default)]
    pub lb_scheduler: Option<String>,
    /// A local OCI image; `command` then overrides its Cmd and may be empty.
    #[serde(default)]
    pub image: Option<String>,
    /// `uid[:gid]` or `name[:group]`.
    #[serde(default)]
    pub user: Option<String>,
    /// Memory limit: bytes, or with a unit `k`, `m`, `g` (`32m`).
    #[serde(default)]
    pub limit_memory: Option<String>,
    /// CPUs, decimal (`0.5`).
    #[serde(default)]
    pub limit_cpu: Option<String>,
    /// Most processes the task may have.
    #[serde(default)]
    pub limit_pids: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUpdate {
    /// Port specs to publish, as in `ServiceCreate::publish`.
    #[serde(default)]
    pub publish_add: Vec<String>,
    /// `PUBLISHED[/tcp|/udp]` to stop publishing.
    #[serde(default)]
    pub publish_rm: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceScale {
    pub replicas: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressView {
    pub network: String,
    pub address: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub name: String,
    pub service: String,
    pub slot: u32,
    pub node: String,
    pub desired: crate::model::DesiredState,
    pub state: TaskState,
    pub message: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub ever_ran: bool,
    pub addresses: Vec<AddressView>,
    pub gateway_address: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    pub running: u32,
    pub tasks: Vec<TaskView>,
    /// Slots no node can take now, with the reason (state `pending`, node `""`).
    #[serde(default)]
    pub pending: Vec<TaskView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    pub services: Vec<String>,
}

pub type NodeView = Node;

/// What `routemesh exec` needs to enter a task's sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub task: String,
    pub node: String,
    pub netns: String,
    pub resolv_conf: String,
    pub hosts: String,
    pub hostname: String,
    pub addresses: Vec<Ipv4Addr>,
    /// The OCI runtime running the task's container, its state root and the container's id:
    /// `routemesh exec` runs `<runtime> --root <root> exec <container> ...`.
    pub runtime: String,
    pub runtime_root: String,
    pub container: String,
}

/// `POST /v1/images/load`: a file or directory on the daemon's machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLoad {
    pub path: String,
    /// The name to give the (single) image, when the source does not name it.
    #[serde(default)]
    pub tag: Option<String>,
}

/// `GET /v1/info`: the node answering, the store revision it read, and the store records it
/// left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub node: String,
    pub revision: u64,
    pub skipped_records: usize,
    pub skipped: Vec<crate::model::SkippedRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}
