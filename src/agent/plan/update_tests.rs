use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;

use super::*;
use crate::agent::plan::{fnv32, plan, service_tasks, NodeContext, NodePlan};
use crate::layout::{RunDir, INGRESS_SBOX};
use crate::model::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn ctx(node: &str, addr: &str) -> NodeContext {
    NodeContext {
        node: node.into(),
        run: RunDir::new("/run/rm"),
        advertise_addr: Some(addr.parse().unwrap()),
        gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
        task_path: "/bin".into(),
    }
}

fn network(name: &str, driver: Driver, subnet: &str, vni: Option<u32>) -> Network {
    let subnet: Ipv4Net = subnet.parse().unwrap();
    Network {
        name: name.into(),
        id: format!("{:012x}", fnv32(name)),
        driver,
        subnet,
        gateway: subnet.hosts().next().unwrap(),
        vni,
        created_at: 0,
        ingress: name == "ingress",
        parent: None,
        encrypted: false,
    }
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Networks a service may join (the ingress network comes with ingress-mode ports).
const NETS: [&str; 3] = ["app", "back", "local"];
/// Names that are prefixes of each other, so finding a service's tasks by name is tested.
const NAMES: [&str; 8] = ["web", "web-2", "we", "w", "api", "db", "db-1", "x"];

fn base_state() -> ClusterState {
    let mut st = ClusterState::default();
    for n in [
        network("ingress", Driver::Overlay, "10.255.0.0/16", Some(4096)),
        network("app", Driver::Overlay, "10.1.0.0/16", Some(4097)),
        network("back", Driver::Overlay, "10.2.0.0/16", Some(4098)),
        network("local", Driver::Bridge, "10.3.0.0/16", None),
    ] {
        st.networks.insert(n.name.clone(), n);
    }
    for (i, name) in NODES.iter().enumerate() {
        st.nodes.insert(
            name.to_string(),
            Node {
                name: name.to_string(),
                advertise_addr: Some(Ipv4Addr::new(192, 168, 50, i as u8 + 1)),
                state: NodeState::Ready,
                api_socket: String::new(),
                run_dir: String::new(),
                updated_at: 0,
                images: vec![],
            },
        );
        for (net, prefix) in [("ingress", 255), ("app", 1), ("back", 2)] {
            st.node_addrs.insert(
                (net.to_string(), name.to_string()),
                NodeAddress {
                    network: net.into(),
                    node: name.to_string(),
                    address: Ipv4Net::new(Ipv4Addr::new(10, prefix, 255, i as u8 + 1), 16).unwrap(),
                },
            );
        }
    }
    st
}

/// Makes random services and tasks; addresses come from a counter (now and then one is
/// reused, so entries put there by two sources are tested too).
struct Gen {
    rng: Rng,
    next_addr: u32,
    next_port: u16,
}

impl Gen {
    fn addr(&mut self, net: &str, st: &ClusterState) -> Ipv4Net {
        if self.rng.chance(3) {
            let used: Vec<Ipv4Net> = st
                .tasks
                .values()
                .flat_map(|t| t.attachments.iter())
                .filter(|a| a.network == net)
                .map(|a| a.address)
                .collect();
            if !used.is_empty() {
                return *self.rng.pick(&used);
            }
        }
        self.next_addr += 1;
        let subnet = st.networks[net].subnet;
        let base = u32::from(subnet.network()) + self.next_addr;
        Ipv4Net::new(Ipv4Addr::from(base), subnet.prefix_len()).unwrap()
    }

    fn ports(&mut self) -> Vec<PortConfig> {
        (0..self.rng.below(3))
            .map(|_| {
                self.next_port += 1;
                PortConfig {
                    published: 30000 + self.next_port,
                    target: *self.rng.pick(&[80, 53, 8080]),
                    proto: *self.rng.pick(&[Proto::Tcp, Proto::Udp]),
                    mode: if self.rng.chance(70) {
                        PublishMode::Ingress
                    } else {
                        PublishMode::Host
                    },
                }
            })
            .collect()
    }

    fn service(&mut self, name: &str, st: &ClusterState) -> Service {
        let mut networks: Vec<String> = NETS
            .iter()
            .filter(|_| self.rng.chance(60))
            .map(|n| n.to_string())
            .collect();
        let ports = self.ports();
        if ports.iter().any(|p| p.mode == PublishMode::Ingress) {
            networks.insert(0, "ingress".into());
        }
        let endpoint_mode = if self.rng.chance(75) {
            EndpointMode::Vip
        } else {
            EndpointMode::Dnsrr
        };
        let vips = if endpoint_mode == EndpointMode::Vip {
            networks
                .iter()
                .filter(|n| st.networks[n.as_str()].driver == Driver::Overlay)
                .map(|n| ServiceVip {
                    network: n.clone(),
                    address: self.addr(n, st),
                })
                .collect()
        } else {
            vec![]
        };
        Service {
            name: name.into(),
            id: format!("id-{name}"),
            replicas: 1,
            networks,
            env: vec![("N".into(), self.rng.below(5).to_string())],
            command: vec!["x".into()],
            created_at: 0,
            updated_at: 0,
            endpoint_mode,
            ports,
            vips,
            lb_scheduler: *self.rng.pick(&[Scheduler::default(), Scheduler::Lc]),
            image: None,
            user: None,
            limits: Default::default(),
        }
    }

    fn task(&mut self, svc: &Service, slot: u32, st: &ClusterState) -> Task {
        Task {
            name: Task::name_for(&svc.name, slot),
            service: svc.name.clone(),
            slot,
            node: self.rng.pick(&NODES).to_string(),
            attachments: svc
                .networks
                .iter()
                .map(|n| TaskAttachment {
                    network: n.clone(),
                    address: self.addr(n, st),
                })
                .collect(),
            gateway_address: self.gateway(),
            created_at: 0,
            desired: if self.rng.chance(85) {
                DesiredState::Running
            } else {
                DesiredState::Shutdown
            },
        }
    }

    fn gateway(&mut self) -> Ipv4Net {
        self.next_addr += 1;
        Ipv4Net::new(
            Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 18, 0, 0)) + self.next_addr),
            16,
        )
        .unwrap()
    }

    fn status(&mut self) -> Option<TaskStatus> {
        let state = *self.rng.pick(&[
            TaskState::Running,
            TaskState::Running,
            TaskState::Starting,
            TaskState::Failed,
        ]);
        (!self.rng.chance(15)).then(|| TaskStatus {
            state,
            pid: None,
            message: String::new(),
            restarts: 0,
            ever_ran: state == TaskState::Running || self.rng.chance(50),
            updated_at: 0,
        })
    }

    fn add_task(&mut self, st: &mut ClusterState, svc: &Service) {
        let slot = (1..)
            .find(|s| !st.tasks.contains_key(&Task::name_for(&svc.name, *s)))
            .unwrap();
        let t = self.task(svc, slot, st);
        if let Some(status) = self.status() {
            st.statuses.insert(t.name.clone(), status);
        }
        st.tasks.insert(t.name.clone(), t);
    }

    /// One random change to `st`.
    fn change(&mut self, st: &mut ClusterState) {
        let services: Vec<String> = st.services.keys().cloned().collect();
        let tasks: Vec<String> = st.tasks.keys().cloned().collect();
        match self.rng.below(100) {
            // Create a service, with some tasks.
            0..=14 => {
                let name = *self.rng.pick(&NAMES);
                if st.services.contains_key(name) {
                    return;
                }
                let svc = self.service(name, st);
                for _ in 0..self.rng.below(4) {
                    self.add_task(st, &svc);
                }
                st.services.insert(name.into(), svc);
            }
            // Remove a service, and its tasks or not (the orchestrator does that later).
            15..=22 if !services.is_empty() => {
                let name = self.rng.pick(&services).clone();
                st.services.remove(&name);
                if self.rng.chance(50) {
                    let own: Vec<String> = tasks
                        .iter()
                        .filter(|t| t.starts_with(&format!("{name}.")))
                        .cloned()
                        .collect();
                    for t in own {
                        st.tasks.remove(&t);
                        st.statuses.remove(&t);
                    }
                }
            }
            // Update a service: mode, ports, env, VIP, scheduler.
            23..=37 if !services.is_empty() => {
                let name = self.rng.pick(&services).clone();
                let fresh = self.service(&name, st);
                let svc = st.services.get_mut(&name).unwrap();
                match self.rng.below(5) {
                    0 => svc.endpoint_mode = fresh.endpoint_mode,
                    1 => svc.ports = fresh.ports,
                    2 => svc.env = fresh.env,
                    3 => svc.vips = fresh.vips,
                    _ => svc.lb_scheduler = fresh.lb_scheduler,
                }
            }
            // Add a task (sometimes to a service that is gone).
            38..=52 => {
                let svc = if services.is_empty() || self.rng.chance(10) {
                    let name = *self.rng.pick(&NAMES);
                    self.service(name, st)
                } else {
                    let name = self.rng.pick(&services).clone();
                    st.services[&name].clone()
                };
                self.add_task(st, &svc);
            }
            // Remove a task, its status with it or not.
            53..=62 if !tasks.is_empty() => {
                let name = self.rng.pick(&tasks).clone();
                st.tasks.remove(&name);
                if self.rng.chance(80) {
                    st.statuses.remove(&name);
                }
            }
            // Move a task to another node.
            63..=70 if !tasks.is_empty() => {
                let name = self.rng.pick(&tasks).clone();
                let node = self.rng.pick(&NODES).to_string();
                let gw = self.gateway();
                let t = st.tasks.get_mut(&name).unwrap();
                t.node = node;
                t.gateway_address = gw;
            }
            // Its status changes.
            71..=88 if !tasks.is_empty() => {
                let name = self.rng.pick(&tasks).clone();
                match self.status() {
                    Some(s) => st.statuses.insert(name, s),
                    None => st.statuses.remove(&name),
                };
            }
            // It is wanted, or not any more.
            89..=95 if !tasks.is_empty() => {
                let name = self.rng.pick(&tasks).clone();
                let t = st.tasks.get_mut(&name).unwrap();
                t.desired = match t.desired {
                    DesiredState::Running => DesiredState::Shutdown,
                    _ => DesiredState::Running,
                };
            }
            // Something else: a node goes down or comes back.
            96..=99 => {
                let node = st.nodes.get_mut(*self.rng.pick(&NODES)).unwrap();
                node.state = match node.state {
                    NodeState::Ready => NodeState::Down,
                    _ => NodeState::Ready,
                };
            }
            _ => {}
        }
    }
}

/// The keys whose value differs between two of the state's maps (only `keys` and `get`, so
/// this reads `std` and `imbl` maps alike).
macro_rules! changed {
    ($a:expr, $b:expr, $out:expr) => {
        for k in $a.keys().chain($b.keys()) {
            if $a.get(k) != $b.get(k) {
                $out.insert(k.clone());
            }
        }
    };
}

/// What the agent would build from the store keys that changed.
fn diff(old: &ClusterState, new: &ClusterState) -> Dirty {
    let mut d = Dirty::default();
    changed!(old.services, new.services, d.services);
    changed!(old.tasks, new.tasks, d.tasks);
    changed!(old.statuses, new.statuses, d.tasks);
    d.all = old.networks != new.networks
        || old.nodes != new.nodes
        || old.node_addrs != new.node_addrs
        || old.keyring != new.keyring;
    d
}

/// Field by field, so a failure says where the plans differ.
fn assert_same(got: &NodePlan, want: &NodePlan, step: usize) {
    assert_eq!(got.overlays, want.overlays, "overlays, step {step}");
    assert_eq!(got.sandboxes, want.sandboxes, "sandboxes, step {step}");
    assert_eq!(got.containers, want.containers, "containers, step {step}");
    assert_eq!(got.task_files, want.task_files, "task files, step {step}");
    assert_eq!(got.firewall, want.firewall, "firewall, step {step}");
    assert_eq!(got.mesh, want.mesh, "mesh, step {step}");
    assert_eq!(got.dns, want.dns, "dns, step {step}");
    assert_eq!(got.remote, want.remote, "remote index, step {step}");
    assert_eq!(got, want, "step {step}");
}

#[test]
fn update_gives_what_plan_gives_after_every_random_change() {
    let ctxs = [ctx("n1", "192.168.50.1"), ctx("n2", "192.168.50.2")];
    let mut patched = 0;
    for seed in 1..=6u64 {
        let mut gen = Gen {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            next_addr: 10,
            next_port: 0,
        };
        let mut st = base_state();
        // A few services to start with.
        for _ in 0..6 {
            let name = *gen.rng.pick(&NAMES);
            if !st.services.contains_key(name) {
                let svc = gen.service(name, &st);
                for _ in 0..gen.rng.below(4) {
                    gen.add_task(&mut st, &svc);
                }
                st.services.insert(name.into(), svc);
            }
        }
        let mut plans: Vec<NodePlan> = ctxs.iter().map(|c| plan(&st, c)).collect();
        for step in 0..120 {
            let old = st.clone();
            for _ in 0..=gen.rng.below(2) {
                gen.change(&mut st);
            }
            let dirty = diff(&old, &st);
            if !dirty.all {
                patched += 1;
            }
            for (p, c) in plans.iter_mut().zip(&ctxs) {
                let before = p.dns.clone();
                let mesh_before = p.mesh.clone();
                update(p, &st, c, &dirty);
                assert_same(p, &plan(&st, c), step);
                if !dirty.all {
                    assert_dns_changes_named(&before, &p.dns, step);
                    assert_lb_changes_named(&mesh_before, &p.mesh, step);
                }
            }
        }
    }
    assert!(patched > 500, "most steps are patched, not planned anew");
}

/// `after.changed` names every service whose load-balancer entries (a VIP or published port
/// in any namespace) differ from `before`'s, relative to `before`'s version: what the load
/// balancers re-apply.
fn assert_lb_changes_named(before: &mesh::MeshPlan, after: &mesh::MeshPlan, step: usize) {
    assert_eq!(after.base, before.version, "step {step}");
    assert_ne!(after.version, before.version, "step {step}");
    type Entries = BTreeMap<(String, String), String>;
    let entries = |m: &mesh::MeshPlan| -> Entries {
        let mut out = Entries::new();
        for (ns, lb) in &m.lbs {
            for v in &lb.vips {
                let e = out.entry((v.service.clone(), ns.clone())).or_default();
                e.push_str(&format!("{v:?}"));
            }
            for p in &lb.published {
                let e = out.entry((p.service.clone(), ns.clone())).or_default();
                e.push_str(&format!("{p:?}"));
            }
        }
        out
    };
    let (old, new) = (entries(before), entries(after));
    let differ: BTreeSet<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|(service, _)| service)
        .collect();
    let missing: Vec<&&String> = differ
        .iter()
        .filter(|s| !after.changed.contains(**s))
        .collect();
    assert!(
        missing.is_empty(),
        "step {step}: lb changes of {missing:?} not named"
    );
}

/// `after.changed` names every service whose name-table entries (its own, or a task's)
/// differ from `before`'s, relative to `before`'s version: what the name table re-makes.
fn assert_dns_changes_named(before: &dns::DnsPlan, after: &dns::DnsPlan, step: usize) {
    assert_eq!(after.base, before.version, "step {step}");
    assert_ne!(after.version, before.version, "step {step}");
    let mut differ: BTreeSet<String> = BTreeSet::new();
    let services = |p: &dns::DnsPlan| -> BTreeMap<String, routemesh_dns::ServiceInput> {
        p.input
            .services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect()
    };
    let (old_s, new_s) = (services(before), services(after));
    for name in old_s.keys().chain(new_s.keys()) {
        if old_s.get(name) != new_s.get(name) {
            differ.insert(name.clone());
        }
    }
    let tasks = |p: &dns::DnsPlan| -> BTreeMap<String, routemesh_dns::TaskInput> {
        p.input
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect()
    };
    let (old_t, new_t) = (tasks(before), tasks(after));
    for name in old_t.keys().chain(new_t.keys()) {
        let (o, n) = (old_t.get(name), new_t.get(name));
        if o != n {
            differ.extend(o.iter().chain(n.iter()).map(|t| t.service.clone()));
        }
    }
    let missing: Vec<&String> = differ.difference(&after.changed).collect();
    assert!(
        missing.is_empty(),
        "step {step}: changed {missing:?} not named"
    );
}

#[test]
fn nothing_dirty_changes_nothing() {
    let c = ctx("n1", "192.168.50.1");
    let mut st = base_state();
    let mut gen = Gen {
        rng: Rng(7),
        next_addr: 10,
        next_port: 0,
    };
    let svc = gen.service("web", &st);
    gen.add_task(&mut st, &svc);
    st.services.insert("web".into(), svc);
    let mut p = plan(&st, &c);
    update(&mut p, &st, &c, &Dirty::default());
    assert_eq!(p, plan(&st, &c));
    assert!(Dirty::default().is_empty());
}

fn big_state(services: usize) -> ClusterState {
    let mut st = base_state();
    for i in 0..services {
        let name = format!("svc-{i:05}");
        let mut ports = vec![];
        if i % 10 == 0 {
            ports.push(PortConfig {
                published: 20000 + i as u16,
                target: 80,
                proto: Proto::Tcp,
                mode: if i % 20 == 0 {
                    PublishMode::Ingress
                } else {
                    PublishMode::Host
                },
            });
        }
        let ip = |net: u8| Ipv4Net::new(Ipv4Addr::new(10, net, (i >> 8) as u8, i as u8), 16);
        let svc = Service {
            name: name.clone(),
            id: format!("id-{i}"),
            replicas: 1,
            networks: vec!["ingress".into(), "app".into()],
            env: vec![],
            command: vec!["x".into()],
            created_at: 0,
            updated_at: 0,
            endpoint_mode: EndpointMode::Vip,
            ports,
            vips: vec![ServiceVip {
                network: "app".into(),
                address: ip(1).unwrap(),
            }],
            lb_scheduler: Default::default(),
            image: None,
            user: None,
            limits: Default::default(),
        };
        // One task each, on n1 or n2, running.
        let t = Task {
            name: Task::name_for(&name, 1),
            service: name.clone(),
            slot: 1,
            node: NODES[i % 2].into(),
            attachments: vec![
                TaskAttachment {
                    network: "ingress".into(),
                    address: Ipv4Net::new(
                        Ipv4Addr::new(10, 255, 100 + (i >> 8) as u8, i as u8),
                        16,
                    )
                    .unwrap(),
                },
                TaskAttachment {
                    network: "app".into(),
                    address: Ipv4Net::new(Ipv4Addr::new(10, 1, 100 + (i >> 8) as u8, i as u8), 16)
                        .unwrap(),
                },
            ],
            gateway_address: Ipv4Net::new(
                Ipv4Addr::new(172, 18, 100 + (i >> 8) as u8, i as u8),
                16,
            )
            .unwrap(),
            created_at: 0,
            desired: DesiredState::Running,
        };
        st.statuses.insert(
            t.name.clone(),
            TaskStatus {
                state: TaskState::Running,
                pid: None,
                message: String::new(),
                restarts: 0,
                ever_ran: true,
                updated_at: 0,
            },
        );
        st.tasks.insert(t.name.clone(), t);
        st.services.insert(name, svc);
    }
    st
}

#[test]
fn a_change_to_one_service_leaves_the_others_untouched() {
    let c = ctx("n1", "192.168.50.1");
    let n = 10_000;
    let st = big_state(n);
    let t0 = Instant::now();
    let mut p = plan(&st, &c);
    let full = t0.elapsed();
    let before = p.clone();
    let ov = crate::layout::netns_name(&c.run.overlay_netns("app"));
    // Where the other services' data lives now: rebuilt entries would be new allocations.
    let ptrs = |p: &NodePlan| -> Vec<usize> {
        let lb = &p.mesh.lbs[&ov];
        lb.vips
            .iter()
            .filter(|v| v.service != "svc-05000")
            .map(|v| v.backends.as_ptr() as usize)
            .chain(
                p.mesh.lbs[INGRESS_SBOX]
                    .published
                    .iter()
                    .filter(|v| v.service != "svc-05000")
                    .map(|v| v.backends.as_ptr() as usize),
            )
            .chain(
                p.dns
                    .input
                    .services
                    .iter()
                    .filter(|s| s.name != "svc-05000")
                    .map(|s| s.vips.as_ptr() as usize),
            )
            .collect()
    };
    let ptrs_before = ptrs(&p);

    // svc-05000 publishes one more port and gets a second task, running on n2.
    let mut new = st.clone();
    let svc = new.services.get_mut("svc-05000").unwrap();
    svc.ports.push(PortConfig {
        published: 40000,
        target: 80,
        proto: Proto::Udp,
        mode: PublishMode::Ingress,
    });
    let mut t = new.tasks["svc-05000.1"].clone();
    t.name = "svc-05000.2".into();
    t.slot = 2;
    t.node = "n2".into();
    for a in &mut t.attachments {
        a.address =
            Ipv4Net::new(Ipv4Addr::new(10, a.address.addr().octets()[1], 250, 1), 16).unwrap();
    }
    new.statuses
        .insert(t.name.clone(), new.statuses["svc-05000.1"].clone());
    new.tasks.insert(t.name.clone(), t);
    let dirty = diff(&st, &new);
    assert_eq!(dirty.services.len(), 1);
    assert_eq!(dirty.tasks.len(), 1);

    let t0 = Instant::now();
    update(&mut p, &new, &c, &dirty);
    let patched = t0.elapsed();
    println!(
        "{n} services: plan {:.3} ms, update for one service {:.3} ms",
        full.as_secs_f64() * 1e3,
        patched.as_secs_f64() * 1e3
    );

    let t0 = Instant::now();
    let want = plan(&new, &c);
    println!(
        "{n} services: plan of the new state {:.3} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_same(&p, &want, 0);
    assert_eq!(
        ptrs(&p),
        ptrs_before,
        "no other service's entry was rebuilt"
    );

    // The other services' entries are the same, svc-05000's changed.
    let others = |p: &NodePlan| {
        let vips: Vec<_> = p.mesh.lbs[&ov]
            .vips
            .iter()
            .filter(|v| v.service != "svc-05000")
            .cloned()
            .collect();
        let published: Vec<_> = p.mesh.lbs[INGRESS_SBOX]
            .published
            .iter()
            .filter(|v| v.service != "svc-05000")
            .cloned()
            .collect();
        let dns: Vec<_> = p
            .dns
            .input
            .services
            .iter()
            .filter(|s| s.name != "svc-05000")
            .cloned()
            .collect();
        (vips, published, dns)
    };
    assert_eq!(others(&p), others(&before));
    let web = |p: &NodePlan| {
        p.mesh.lbs[INGRESS_SBOX]
            .published
            .iter()
            .filter(|v| v.service == "svc-05000")
            .count()
    };
    assert_eq!((web(&before), web(&p)), (1, 2));
    let vip = |p: &NodePlan| {
        p.mesh.lbs[&ov]
            .vips
            .iter()
            .find(|v| v.service == "svc-05000")
            .map(|v| v.backends.len())
    };
    assert_eq!((vip(&before), vip(&p)), (Some(1), Some(2)));
    // The new remote task is reachable.
    let fdb = &p.overlays["app"].fdb;
    assert!(fdb.contains(&(
        routemesh_netdev::spec::Mac::from_ipv4(Ipv4Addr::new(10, 1, 250, 1)),
        Ipv4Addr::new(192, 168, 50, 2)
    )));
}

#[test]
fn a_service_is_found_by_its_tasks_names_only() {
    let mut st = base_state();
    let mut gen = Gen {
        rng: Rng(3),
        next_addr: 10,
        next_port: 0,
    };
    for name in ["w", "we", "web", "web-2"] {
        let svc = gen.service(name, &st);
        gen.add_task(&mut st, &svc);
        gen.add_task(&mut st, &svc);
        st.services.insert(name.into(), svc);
    }
    let names: Vec<&str> = service_tasks(&st, "web").map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2"]);
    let names: Vec<&str> = service_tasks(&st, "w").map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w.1", "w.2"]);
}
