//! Helpers shared by the unit tests.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::table::{EndpointMode, Input, NetInput, Proto, ServiceInput, TaskInput};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn task(name: &str, service: &str, net: &str, addr: &str, running: bool) -> TaskInput {
    TaskInput {
        name: name.into(),
        service: service.into(),
        addrs: vec![(net.into(), ip(addr))],
        running,
    }
}

/// `web` (vip, 3 running tasks + 1 stopped) and `db` (dnsrr, 2 tasks) on `app`; `other` (vip)
/// on `private` only; `big` (dnsrr, 100 tasks) on `app`.
pub fn cluster() -> Input {
    let mut tasks = vec![
        task("web.1", "web", "app", "10.0.1.5", true),
        task("web.2", "web", "app", "10.0.1.6", true),
        task("web.3", "web", "app", "10.0.1.7", true),
        task("web.4", "web", "app", "10.0.1.8", false),
        task("db.1", "db", "app", "10.0.1.20", true),
        task("db.2", "db", "app", "10.0.1.21", true),
        task("other.1", "other", "private", "10.0.2.5", true),
    ];
    for i in 0..100u32 {
        let addr = Ipv4Addr::from(u32::from(ip("10.0.3.0")) + i + 1);
        tasks.push(task(
            &format!("big.{}", i + 1),
            "big",
            "app",
            &addr.to_string(),
            true,
        ));
    }
    Input {
        networks: vec![
            NetInput { id: "app".into() },
            NetInput {
                id: "private".into(),
            },
        ],
        services: vec![
            ServiceInput {
                name: "web".into(),
                mode: EndpointMode::Vip,
                vips: vec![("app".into(), ip("10.0.1.2"))],
                ports: vec![(80, Proto::Tcp)],
            },
            ServiceInput {
                name: "db".into(),
                mode: EndpointMode::Dnsrr,
                vips: vec![],
                ports: vec![(5432, Proto::Tcp)],
            },
            ServiceInput {
                name: "other".into(),
                mode: EndpointMode::Vip,
                vips: vec![("private".into(), ip("10.0.2.2"))],
                ports: vec![],
            },
            ServiceInput {
                name: "big".into(),
                mode: EndpointMode::Dnsrr,
                vips: vec![],
                ports: vec![],
            },
        ],
        tasks,
    }
}

pub fn query_message(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message
}

pub fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_message(name, qtype, edns).to_vec().unwrap()
}

pub fn a_records(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}
