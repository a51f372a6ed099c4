//! The immutable name table: built once from [`Input`], then only read. Every lookup is one
//! hash lookup of the name (hit or miss) plus a scan of the few networks that name lives on.

mod input;
mod key;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::rr::Name;

pub use input::{EndpointMode, Input, NetInput, Proto, ServiceInput, TaskInput};
pub use key::NameKey;

/// Default TTL of every answer: short, so clients stop using dead tasks quickly.
pub const DEFAULT_TTL: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    pub ttl: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions { ttl: DEFAULT_TTL }
    }
}

/// One SRV answer: `priority 0, weight, port, target`, with the target's address as glue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub weight: u16,
    pub port: u16,
    pub target: Name,
    pub addr: Ipv4Addr,
}

/// The records a name has on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    pub a: Vec<Ipv4Addr>,
    /// Answer `a` in a rotating order (dnsrr services, `tasks.SERVICE`).
    pub rotate: bool,
    pub ptr: Vec<Name>,
    pub srv: Vec<SrvTarget>,
}

/// What a name means to one querier.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'t> {
    /// The name exists on one of the querier's networks.
    Found(&'t Records),
    /// The name is routemesh's but lives only on networks the querier is not on: NXDOMAIN,
    /// never forwarded.
    Hidden,
    /// Not a routemesh name: forward it.
    Absent,
}

#[derive(Clone, Debug)]
struct Scoped {
    network: Arc<str>,
    records: Records,
}

/// A name's records, one entry per network it lives on. Shared between table versions.
type Entry = Arc<Vec<Scoped>>;

/// A name's lookup key (see [`NameKey`]), shared by the name map and the family index.
type Key = Arc<[u8]>;

/// The table: names, and per service the names its entries made (its "family": the
/// service's own names and its tasks'), so that a changed service is re-made alone. The maps
/// are persistent: a new version shares every name it did not change with the old one.
#[derive(Clone, Debug, Default)]
pub struct Table {
    names: imbl::HashMap<Key, Entry>,
    families: imbl::HashMap<Arc<str>, Arc<[Key]>>,
    /// The networks the table was built for, by id.
    networks: Arc<[Arc<str>]>,
    /// Two families made the same name (two networks with the same address, say): the merge
    /// order matters, so every change rebuilds the whole table.
    shared: bool,
    ttl: u32,
    skipped: Vec<String>,
}

impl Table {
    pub fn build(input: &Input, options: TableOptions) -> Table {
        let mut builder = Builder::new(input, Table::empty(options));
        // A service's tasks, found once rather than by a scan per service.
        let mut by_service: HashMap<&str, Vec<&TaskInput>> = HashMap::new();
        for t in &input.tasks {
            by_service.entry(t.service.as_str()).or_default().push(t);
        }
        for service in &input.services {
            let tasks = by_service
                .get(service.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            builder.family(&service.name);
            builder.add_service(service, tasks);
        }
        for task in input.tasks.iter().filter(|t| t.running) {
            builder.family(&task.service);
            builder.add_task(task);
        }
        builder.finish()
    }

    /// The table for `input`, when `input` differs from the input this table was built from
    /// only in the services named in `changed` and their tasks (created, changed or removed).
    /// Re-makes only those services' names: O(changed) map updates, the changed services
    /// found by binary search when `input.services` is sorted by name (as the planner keeps
    /// it; one scan for a name not found that way), plus one scan of the tasks. `None` when that cannot be done exactly (other networks or TTL, or
    /// names two services share); build the whole table then.
    pub fn updated(
        &self,
        input: &Input,
        options: TableOptions,
        changed: &BTreeSet<String>,
    ) -> Option<Table> {
        if self.shared
            || options.ttl != self.ttl
            || input.networks.len() != self.networks.len()
            || input
                .networks
                .iter()
                .zip(self.networks.iter())
                .any(|(n, id)| *n.id != **id)
        {
            return None;
        }
        let mut table = Table {
            skipped: Vec::new(),
            ..self.clone()
        };
        for family in changed {
            if let Some(keys) = table.families.remove(family.as_str()) {
                for key in keys.iter() {
                    table.names.remove(key);
                }
            }
        }
        let mut builder = Builder::new(input, table);
        builder.strict = true;
        let mut tasks: HashMap<&str, Vec<&TaskInput>> = HashMap::new();
        for t in input.tasks.iter().filter(|t| changed.contains(&t.service)) {
            tasks.entry(t.service.as_str()).or_default().push(t);
        }
        for service in changed
            .iter()
            .filter_map(|name| find_service(&input.services, name))
        {
            let mine = tasks
                .get(service.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            builder.family(&service.name);
            builder.add_service(service, mine);
        }
        for task in tasks.values().flatten().filter(|t| t.running) {
            builder.family(&task.service);
            builder.add_task(task);
        }
        let table = builder.finish();
        (!table.shared).then_some(table)
    }

    pub fn empty(options: TableOptions) -> Table {
        Table {
            ttl: options.ttl,
            ..Table::default()
        }
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Inputs that could not become names (invalid DNS names, unknown networks), for logging:
    /// of the whole input after [`Table::build`], of the changed services after
    /// [`Table::updated`].
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Number of distinct names (over all networks).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Looks `key` up for a querier on `networks`; the first of the querier's networks (in its
    /// order) that carries the name wins.
    pub fn lookup<N: AsRef<str>>(&self, key: &NameKey, networks: &[N]) -> Lookup<'_> {
        let Some(scoped) = self.names.get(key.as_bytes()) else {
            return Lookup::Absent;
        };
        for network in networks {
            let network = network.as_ref();
            if let Some(hit) = scoped.iter().find(|s| &*s.network == network) {
                return Lookup::Found(&hit.records);
            }
        }
        Lookup::Hidden
    }
}

/// `d.c.b.a.in-addr.arpa` for `a.b.c.d`.
pub fn reverse_name(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

struct Builder {
    networks: HashSet<Arc<str>>,
    table: Table,
    /// Per family, the names it made (in this build or update).
    made: HashMap<Arc<str>, Vec<Arc<[u8]>>>,
    /// Who made each name in this build or update.
    owner: HashMap<Arc<[u8]>, Arc<str>>,
    family: Arc<str>,
    /// An update: a name already in the table that this build did not make belongs to a
    /// family that did not change, so the update cannot be exact.
    strict: bool,
}

impl Builder {
    fn new(input: &Input, mut table: Table) -> Self {
        let ids: Vec<Arc<str>> = input
            .networks
            .iter()
            .map(|n| Arc::from(n.id.as_str()))
            .collect();
        let networks = ids.iter().cloned().collect();
        table.networks = ids.into();
        Builder {
            networks,
            table,
            made: HashMap::new(),
            owner: HashMap::new(),
            family: Arc::from(""),
            strict: false,
        }
    }

    fn family(&mut self, name: &str) {
        if &*self.family != name {
            self.family = Arc::from(name);
        }
    }

    fn finish(mut self) -> Table {
        for (family, keys) in self.made {
            self.table.families.insert(family, keys.into());
        }
        self.table
    }

    fn add_service(&mut self, service: &ServiceInput, tasks: &[&TaskInput]) {
        let Some(service_fqdn) = self.fqdn(&service.name, "service") else {
            return;
        };
        let running: Vec<&TaskInput> = tasks.iter().copied().filter(|t| t.running).collect();
        for network in self.service_networks(service, tasks) {
            let task_addrs = running_addrs_on(&running, &network);
            let mut records = Records::default();
            match service.mode {
                EndpointMode::Vip => {
                    if let Some((_, vip)) = service.vips.iter().find(|(n, _)| **n == *network) {
                        records.a.push(*vip);
                        self.add(&reverse_name(*vip), &network, |r| {
                            r.ptr.push(service_fqdn.clone())
                        });
                    }
                }
                EndpointMode::Dnsrr => {
                    records.a = task_addrs.iter().map(|(_, a)| *a).collect();
                    records.rotate = true;
                }
            }
            let srv = srv_targets(service, &service_fqdn, &records.a, &task_addrs);
            self.add(&service.name, &network, |r| merge(r, &records));
            for (port, proto) in &service.ports {
                let name = format!("_{port}.{}.{}", input::srv_label(*proto), service.name);
                let wanted: Vec<SrvTarget> =
                    srv.iter().filter(|s| s.port == *port).cloned().collect();
                self.add(&name, &network, |r| r.srv.extend(wanted));
            }
            let tasks_name = format!("tasks.{}", service.name);
            self.add(&tasks_name, &network, |r| {
                r.a.extend(task_addrs.iter().map(|(_, a)| *a));
                r.rotate = true;
            });
        }
    }

    fn add_task(&mut self, task: &TaskInput) {
        let Some(task_fqdn) = self.fqdn(&task.name, "task") else {
            return;
        };
        for (network, addr) in &task.addrs {
            if !self.networks.contains(network.as_str()) {
                self.table
                    .skipped
                    .push(format!("task {:?}: unknown network {network:?}", task.name));
                continue;
            }
            self.add(&task.name, network, |r| {
                if r.a.is_empty() {
                    r.a.push(*addr)
                }
            });
            self.add(&reverse_name(*addr), network, |r| {
                r.ptr.push(task_fqdn.clone())
            });
        }
    }

    /// The networks a service is visible on: its VIP networks (`vip`), or the networks its tasks
    /// have addresses on (`dnsrr`, running or not, so a scaled-to-zero service stays NODATA).
    fn service_networks(&mut self, service: &ServiceInput, tasks: &[&TaskInput]) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        let candidates: Vec<&str> = match service.mode {
            EndpointMode::Vip => service.vips.iter().map(|(n, _)| n.as_str()).collect(),
            EndpointMode::Dnsrr => tasks
                .iter()
                .flat_map(|t| t.addrs.iter().map(|(n, _)| n.as_str()))
                .collect(),
        };
        for network in candidates {
            if out.iter().any(|n| **n == *network) {
                continue;
            }
            match self.networks.get(network) {
                Some(n) => out.push(n.clone()),
                None => self.table.skipped.push(format!(
                    "service {:?}: unknown network {network:?}",
                    service.name
                )),
            }
        }
        out
    }

    fn fqdn(&mut self, name: &str, what: &str) -> Option<Name> {
        match fqdn(name) {
            Ok(n) => Some(n),
            Err(e) => {
                self.table
                    .skipped
                    .push(format!("{what} {name:?}: not a DNS name: {e}"));
                None
            }
        }
    }

    /// Adds (or updates) the records of `name` on `network`.
    fn add(&mut self, name: &str, network: &str, update: impl FnOnce(&mut Records)) {
        let Some(net) = self.networks.get(network).cloned() else {
            self.table
                .skipped
                .push(format!("name {name:?}: unknown network {network:?}"));
            return;
        };
        let Some(key) = NameKey::from_dotted(name) else {
            self.table.skipped.push(format!(
                "name {name:?} on network {network:?}: not a DNS name"
            ));
            return;
        };
        let key: Arc<[u8]> = Arc::from(key.as_bytes());
        match self.owner.get(&key) {
            Some(owner) if *owner != self.family => self.table.shared = true,
            Some(_) => {}
            None => {
                if self.strict && self.table.names.contains_key(&key) {
                    self.table.shared = true;
                }
                self.owner.insert(key.clone(), self.family.clone());
                self.made
                    .entry(self.family.clone())
                    .or_default()
                    .push(key.clone());
            }
        }
        let scoped = Arc::make_mut(self.table.names.entry(key).or_default());
        let idx = match scoped.iter().position(|s| s.network == net) {
            Some(idx) => idx,
            None => {
                // Most names live on one network: no room for four.
                scoped.reserve_exact(1);
                scoped.push(Scoped {
                    network: net,
                    records: Records::default(),
                });
                scoped.len() - 1
            }
        };
        let records = &mut scoped[idx].records;
        update(records);
        // Tables hold tens of thousands of names, nearly all with one record of one kind.
        records.a.shrink_to_fit();
        records.ptr.shrink_to_fit();
        records.srv.shrink_to_fit();
    }
}

/// A service name wins over a task of the same name: addresses are only added where none exist.
fn merge(into: &mut Records, from: &Records) {
    if into.a.is_empty() {
        into.a.clone_from(&from.a);
        into.rotate = from.rotate;
    }
    into.ptr.extend(from.ptr.iter().cloned());
}

/// SRV targets: the service name itself in `vip` mode (it resolves to the VIP; weight 0), one
/// target per running task in `dnsrr` mode (weight 1 each).
fn srv_targets(
    service: &ServiceInput,
    service_fqdn: &Name,
    vip: &[Ipv4Addr],
    task_addrs: &[(&str, Ipv4Addr)],
) -> Vec<SrvTarget> {
    let mut out = Vec::new();
    for (port, _) in &service.ports {
        match service.mode {
            EndpointMode::Vip => out.extend(vip.iter().map(|addr| SrvTarget {
                weight: 0,
                port: *port,
                target: service_fqdn.clone(),
                addr: *addr,
            })),
            EndpointMode::Dnsrr => {
                for (task, addr) in task_addrs {
                    if let Ok(target) = fqdn(task) {
                        out.push(SrvTarget {
                            weight: 1,
                            port: *port,
                            target,
                            addr: *addr,
                        });
                    }
                }
            }
        }
    }
    out
}

fn running_addrs_on<'i>(running: &[&'i TaskInput], network: &str) -> Vec<(&'i str, Ipv4Addr)> {
    running
        .iter()
        .flat_map(|t| {
            t.addrs
                .iter()
                .filter(move |(n, _)| n == network)
                .map(move |(_, a)| (t.name.as_str(), *a))
        })
        .collect()
}

/// The service named `name`: by binary search, which finds it when `services` is sorted by
/// name, else by a scan (a removed service, or a list in another order).
fn find_service<'a>(services: &'a [ServiceInput], name: &str) -> Option<&'a ServiceInput> {
    match services.binary_search_by(|s| s.name.as_str().cmp(name)) {
        Ok(i) => services.get(i),
        Err(_) => services.iter().find(|s| s.name == name),
    }
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut n = Name::from_ascii(name)?;
    n.set_fqdn(true);
    Ok(n)
}

#[cfg(test)]
mod tests;
