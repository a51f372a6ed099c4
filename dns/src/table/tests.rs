use super::*;
use crate::testutil::{cluster, ip};

fn found<'t>(table: &'t Table, name: &str, nets: &[&str]) -> Option<&'t Records> {
    match table.lookup(&NameKey::from_dotted(name).unwrap(), nets) {
        Lookup::Found(r) => Some(r),
        _ => None,
    }
}

#[test]
fn records_follow_the_rules() {
    let table = Table::build(&cluster(), TableOptions::default());
    assert!(table.skipped().is_empty(), "{:?}", table.skipped());
    assert_eq!(table.ttl(), DEFAULT_TTL);
    let app = ["app"];
    assert_eq!(found(&table, "web", &app).unwrap().a, vec![ip("10.0.1.2")]);
    let tasks = found(&table, "tasks.web", &app).unwrap();
    assert_eq!(
        tasks.a,
        vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]
    );
    assert!(tasks.rotate);
    let db = found(&table, "db", &app).unwrap();
    assert_eq!(db.a, vec![ip("10.0.1.20"), ip("10.0.1.21")]);
    assert!(db.rotate);
    assert_eq!(
        found(&table, "WEB.1.", &app).unwrap().a,
        vec![ip("10.0.1.5")]
    );
    assert!(
        found(&table, "web.4", &app).is_none(),
        "stopped tasks are not answered"
    );
    let vip_ptr = found(&table, "2.1.0.10.in-addr.arpa", &app).unwrap();
    assert_eq!(vip_ptr.ptr, vec![Name::from_ascii("web.").unwrap()]);
    let task_ptr = found(&table, "5.1.0.10.in-addr.arpa", &app).unwrap();
    assert_eq!(task_ptr.ptr, vec![Name::from_ascii("web.1.").unwrap()]);
    let srv = found(&table, "_80._tcp.web", &app).unwrap();
    assert_eq!(srv.srv.len(), 1);
    assert_eq!(srv.srv[0].target, Name::from_ascii("web.").unwrap());
    let db_srv = found(&table, "_5432._tcp.db", &app).unwrap();
    assert_eq!(db_srv.srv.len(), 2);
}

#[test]
fn names_are_scoped_by_network() {
    let table = Table::build(&cluster(), TableOptions::default());
    let key = NameKey::from_dotted("other").unwrap();
    assert_eq!(table.lookup(&key, &["app"]), Lookup::Hidden);
    assert!(matches!(
        table.lookup(&key, &["app", "private"]),
        Lookup::Found(_)
    ));
    let key = NameKey::from_dotted("tasks.other").unwrap();
    assert_eq!(table.lookup(&key, &["app"]), Lookup::Hidden);
    let key = NameKey::from_dotted("10.2.0.10.in-addr.arpa").unwrap();
    assert_eq!(table.lookup(&key, &["app"]), Lookup::Absent);
    let key = NameKey::from_dotted("example.com").unwrap();
    assert_eq!(table.lookup(&key, &["app"]), Lookup::Absent);
    let none: [&str; 0] = [];
    let key = NameKey::from_dotted("web").unwrap();
    assert_eq!(table.lookup(&key, &none), Lookup::Hidden);
}

#[test]
fn invalid_names_and_unknown_networks_are_skipped_not_fatal() {
    let mut input = cluster();
    input.services[0]
        .vips
        .push(("nowhere".into(), ip("10.9.9.9")));
    input.tasks[0].name = "bad name with spaces and way too long a label ".repeat(3);
    let table = Table::build(&input, TableOptions { ttl: 1 });
    assert_eq!(table.skipped().len(), 2, "{:?}", table.skipped());
    assert!(found(&table, "web", &["app"]).is_some());
}

#[test]
fn service_without_running_tasks_is_nodata_not_absent() {
    let mut input = cluster();
    for t in &mut input.tasks {
        t.running = false;
    }
    let table = Table::build(&input, TableOptions::default());
    assert!(found(&table, "db", &["app"]).unwrap().a.is_empty());
    assert!(found(&table, "tasks.web", &["app"]).unwrap().a.is_empty());
}

/// A name's key and its records per network.
type Dumped = (Vec<u8>, Vec<(String, Records)>);

/// Every name with its records per network, in a stable order, to compare two tables.
fn dump(table: &Table) -> Vec<Dumped> {
    let mut out: Vec<Dumped> = table
        .names
        .iter()
        .map(|(k, v)| {
            (
                k.to_vec(),
                v.iter()
                    .map(|s| (s.network.to_string(), s.records.clone()))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Changes one service, or one of its tasks, at random; returns the service's name. `step`
/// numbers the change (new names and addresses come from it).
fn change_one(input: &mut Input, rng: &mut Rng, step: usize) -> String {
    let nets = ["app", "private"];
    match rng.below(6) {
        // A new service, vip or dnsrr, with a port or not.
        0 => {
            let name = format!("s{step}");
            let net = nets[rng.below(2)];
            let vip = Ipv4Addr::from(u32::from(ip("10.1.0.0")) + step as u32);
            input.services.push(ServiceInput {
                name: name.clone(),
                mode: if rng.below(3) == 0 {
                    EndpointMode::Dnsrr
                } else {
                    EndpointMode::Vip
                },
                vips: vec![(net.into(), vip)],
                ports: if rng.below(2) == 0 {
                    vec![(80, Proto::Tcp)]
                } else {
                    vec![]
                },
            });
            name
        }
        // A service removed (its tasks stay a while, as when shutting down).
        1 if !input.services.is_empty() => {
            let i = rng.below(input.services.len());
            input.services.remove(i).name
        }
        // A task added to a service.
        2 if !input.services.is_empty() => {
            let s = input.services[rng.below(input.services.len())].name.clone();
            let addr = Ipv4Addr::from(u32::from(ip("10.2.0.0")) + step as u32);
            input.tasks.push(TaskInput {
                name: format!("{s}.t{step}"),
                service: s.clone(),
                addrs: vec![(nets[rng.below(2)].into(), addr)],
                running: rng.below(2) == 0,
            });
            s
        }
        // A task starts or stops running.
        3 if !input.tasks.is_empty() => {
            let i = rng.below(input.tasks.len());
            input.tasks[i].running = !input.tasks[i].running;
            input.tasks[i].service.clone()
        }
        // A task removed.
        4 if !input.tasks.is_empty() => {
            let i = rng.below(input.tasks.len());
            input.tasks.remove(i).service
        }
        // A service's ports change.
        _ if !input.services.is_empty() => {
            let i = rng.below(input.services.len());
            let s = &mut input.services[i];
            s.ports = if s.ports.is_empty() {
                vec![(53, Proto::Udp), (80, Proto::Tcp)]
            } else {
                vec![]
            };
            s.name.clone()
        }
        _ => String::new(),
    }
}

#[test]
fn updating_changed_services_matches_a_full_build() {
    let options = TableOptions::default();
    let mut input = cluster();
    let mut table = Table::build(&input, options);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut exact = 0;
    let mut seq = 0;
    for step in 0..400 {
        let mut changed = BTreeSet::new();
        for _ in 0..=rng.below(3) {
            seq += 1;
            changed.insert(change_one(&mut input, &mut rng, seq));
        }
        let full = Table::build(&input, options);
        table = match table.updated(&input, options, &changed) {
            Some(t) => {
                exact += 1;
                t
            }
            None => full.clone(),
        };
        assert_eq!(
            dump(&table),
            dump(&full),
            "step {step}, changed {changed:?}"
        );
        assert_eq!(table.len(), full.len());
    }
    assert!(exact > 350, "only {exact} of 400 updates were incremental");
}

#[test]
fn an_update_leaves_other_services_names_shared() {
    let options = TableOptions::default();
    let mut input = cluster();
    let table = Table::build(&input, options);
    input.services[0].ports.push((443, Proto::Tcp));
    let changed: BTreeSet<String> = ["web".to_string()].into();
    let next = table.updated(&input, options, &changed).unwrap();
    assert!(found(&next, "_443._tcp.web", &["app"]).is_some());
    // db's entry is the same allocation in both versions: nothing of it was re-made.
    let key = NameKey::from_dotted("db").unwrap();
    let (a, b) = (
        table.names.get(key.as_bytes()).unwrap(),
        next.names.get(key.as_bytes()).unwrap(),
    );
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn names_two_services_share_force_full_builds() {
    let options = TableOptions::default();
    let mut input = cluster();
    // A task of `other` with web.1's address on `app`: both make 5.1.0.10.in-addr.arpa.
    input.tasks.push(TaskInput {
        name: "other.2".into(),
        service: "other".into(),
        addrs: vec![("app".into(), ip("10.0.1.5"))],
        running: true,
    });
    let table = Table::build(&input, options);
    let changed: BTreeSet<String> = ["web".to_string()].into();
    assert!(table.updated(&input, options, &changed).is_none());
    // And an update that would make such a name is refused too.
    let input = cluster();
    let table = Table::build(&input, options);
    let mut next = input.clone();
    next.tasks.push(TaskInput {
        name: "other.2".into(),
        service: "other".into(),
        addrs: vec![("app".into(), ip("10.0.1.5"))],
        running: true,
    });
    let changed: BTreeSet<String> = ["other".to_string()].into();
    assert!(table.updated(&next, options, &changed).is_none());
    // Other networks: a full build.
    let mut next = input.clone();
    next.networks.pop();
    assert!(table.updated(&next, options, &changed).is_none());
}
