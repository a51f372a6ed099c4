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
