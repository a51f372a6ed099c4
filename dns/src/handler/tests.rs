use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::*;
use crate::table::{Table, TableOptions};
use crate::testutil::{a_records, cluster, ip, query_bytes, query_message};

fn resolver() -> Resolver {
    Resolver::new(Table::build(&cluster(), TableOptions::default()))
}

fn ctx(transport: Transport) -> QueryContext<'static, &'static str> {
    QueryContext {
        networks: &["app"],
        transport,
        max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
    }
}

fn reply(resolver: &Resolver, bytes: &[u8], transport: Transport) -> (Vec<u8>, Message) {
    match handle(resolver, bytes, &ctx(transport)) {
        Outcome::Reply(bytes) => {
            let message = Message::from_vec(&bytes).unwrap();
            (bytes, message)
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(resolver: &Resolver, name: &str, qtype: RecordType) -> Message {
    reply(resolver, &query_bytes(name, qtype, None), Transport::Udp).1
}

#[test]
fn service_task_and_tasks_names() {
    let r = resolver();
    let web = ask(&r, "web", RecordType::A);
    assert_eq!(web.metadata.response_code, ResponseCode::NoError);
    assert!(web.metadata.authoritative);
    assert_eq!(a_records(&web), vec![ip("10.0.1.2")]);
    assert_eq!(web.answers[0].ttl, 5);
    let mut tasks = a_records(&ask(&r, "tasks.web.", RecordType::A));
    tasks.sort();
    assert_eq!(tasks, vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]);
    assert_eq!(
        a_records(&ask(&r, "Web.2", RecordType::A)),
        vec![ip("10.0.1.6")]
    );
}

#[test]
fn dnsrr_order_varies() {
    let r = resolver();
    let orders: std::collections::HashSet<Vec<_>> = (0..20)
        .map(|_| a_records(&ask(&r, "db", RecordType::A)))
        .collect();
    assert_eq!(orders.len(), 2, "{orders:?}");
    for order in orders {
        assert_eq!(order.len(), 2);
    }
}

#[test]
fn nodata_for_existing_name_without_that_type() {
    let r = resolver();
    for qtype in [
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
    ] {
        let m = ask(&r, "web", qtype);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{qtype}");
        assert!(m.answers.is_empty(), "{qtype}");
    }
}

#[test]
fn names_on_other_networks_are_nxdomain_not_forwarded() {
    let r = resolver();
    for name in ["other", "tasks.other", "other.1"] {
        let m = ask(&r, name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty());
    }
}

#[test]
fn unknown_names_are_forwarded() {
    let r = resolver();
    match handle(
        &r,
        &query_bytes("example.com", RecordType::A, None),
        &ctx(Transport::Udp),
    ) {
        Outcome::Forward(p) => assert_eq!(p.query().name().to_ascii(), "example.com."),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ptr_for_tasks_and_vips() {
    let r = resolver();
    let ptr = |name: &str| match &ask(&r, name, RecordType::PTR).answers[0].data {
        RData::PTR(p) => p.0.to_ascii(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ptr("2.1.0.10.in-addr.arpa."), "web.");
    assert_eq!(ptr("21.1.0.10.in-addr.arpa."), "db.2.");
    // A PTR name exists: asking it for A is NODATA.
    let m = ask(&r, "2.1.0.10.in-addr.arpa.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn srv_records_with_glue() {
    let r = resolver();
    let m = ask(&r, "_80._tcp.web", RecordType::SRV);
    assert_eq!(m.answers.len(), 1);
    match &m.answers[0].data {
        RData::SRV(srv) => {
            assert_eq!(srv.port, 80);
            assert_eq!(srv.target.to_ascii(), "web.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.additionals.len(), 1);
    let m = ask(&r, "_5432._tcp.db", RecordType::SRV);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.additionals.len(), 2);
    // No such port: the name does not exist at all (forwarded).
    assert!(matches!(
        handle(
            &r,
            &query_bytes("_81._tcp.web", RecordType::SRV, None),
            &ctx(Transport::Udp)
        ),
        Outcome::Forward(_)
    ));
}

#[test]
fn big_answer_truncated_over_udp_complete_over_tcp() {
    let r = resolver();
    let (bytes, m) = reply(
        &r,
        &query_bytes("tasks.big", RecordType::A, None),
        Transport::Udp,
    );
    assert!(bytes.len() <= 512, "{}", bytes.len());
    assert!(m.metadata.truncation);
    assert!(m.answers.len() < 100);

    let (bytes, m) = reply(
        &r,
        &query_bytes("tasks.big", RecordType::A, Some(1232)),
        Transport::Udp,
    );
    assert!(bytes.len() <= 1232, "{}", bytes.len());
    assert!(m.metadata.truncation);

    let (_, m) = reply(
        &r,
        &query_bytes("tasks.big", RecordType::A, None),
        Transport::Tcp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    let mut addrs = a_records(&m);
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 100);
}

#[test]
fn client_edns_size_is_capped_by_server() {
    let r = resolver();
    let mut c = ctx(Transport::Udp);
    c.max_udp_payload = 600;
    let bytes = query_bytes("tasks.big", RecordType::A, Some(4096));
    match handle(&r, &bytes, &c) {
        Outcome::Reply(b) => assert!(b.len() <= 600, "{}", b.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn table_swap_is_seen_by_the_next_query() {
    let r = resolver();
    let mut input = cluster();
    input.tasks[3].running = true; // web.4
    r.update(&input, TableOptions { ttl: 1 });
    let m = ask(&r, "tasks.web", RecordType::A);
    assert_eq!(a_records(&m).len(), 4);
    assert_eq!(m.answers[0].ttl, 1);
}

fn rcode_of(bytes: &[u8]) -> Option<ResponseCode> {
    match handle(&resolver(), bytes, &ctx(Transport::Udp)) {
        Outcome::Reply(reply) => {
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.message_type, MessageType::Response);
            Some(m.metadata.response_code)
        }
        Outcome::Drop => None,
        Outcome::Forward(p) => panic!("malformed packet forwarded: {p:?}"),
    }
}

#[test]
fn malformed_packets_get_formerr_or_are_dropped() {
    // Too short for a header: dropped.
    assert_eq!(rcode_of(&[]), None);
    assert_eq!(rcode_of(&[0x12, 0x34, 0x01]), None);
    let good = query_bytes("web", RecordType::A, None);

    // A response (QR set) is never answered.
    let mut qr = good.clone();
    qr[2] |= 0x80;
    assert_eq!(rcode_of(&qr), None);

    // Header only, question missing.
    assert_eq!(rcode_of(&good[..12]), Some(ResponseCode::FormErr));
    // Question cut in the middle.
    assert_eq!(rcode_of(&good[..16]), Some(ResponseCode::FormErr));

    // Two questions.
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(rcode_of(&two), Some(ResponseCode::FormErr));
    // Zero questions.
    let mut zero = good.clone();
    zero[5] = 0;
    assert_eq!(rcode_of(&zero), Some(ResponseCode::FormErr));
    // Huge answer / additional counts.
    let mut huge = good.clone();
    huge[6] = 0xff;
    huge[7] = 0xff;
    assert_eq!(rcode_of(&huge), Some(ResponseCode::FormErr));
    let mut huge_ar = good.clone();
    huge_ar[10] = 0xff;
    huge_ar[11] = 0xff;
    assert_eq!(rcode_of(&huge_ar), Some(ResponseCode::FormErr));

    // Opcode STATUS (2): not implemented.
    let mut status = good.clone();
    status[2] = (status[2] & 0x87) | (2 << 3);
    assert_eq!(rcode_of(&status), Some(ResponseCode::NotImp));

    // Compression loop: the question name points at itself.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&looped), Some(ResponseCode::FormErr));
    // Forward pointer past the end.
    let mut forward = good[..12].to_vec();
    forward.extend_from_slice(&[0xc0, 200, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&forward), Some(ResponseCode::FormErr));
}

#[test]
fn formerr_echoes_the_id() {
    let good = query_bytes("web", RecordType::A, None);
    match handle(&resolver(), &good[..12], &ctx(Transport::Udp)) {
        Outcome::Reply(reply) => assert_eq!(reply[..2], good[..2]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_garbage_never_panics() {
    let r = resolver();
    let good = query_bytes("tasks.web", RecordType::A, Some(1232));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        let flips = next() % 6 + 1;
        for _ in 0..flips {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1));
        let _ = handle(&r, &bytes, &ctx(Transport::Udp));
        let _ = handle(&r, &bytes, &ctx(Transport::Tcp));
    }
}

#[test]
fn forwarded_reply_passes_rcode_and_records() {
    let r = resolver();
    let request = query_message("example.com.", RecordType::A, None);
    let Outcome::Forward(pending) = handle(&r, &request.to_vec().unwrap(), &ctx(Transport::Udp))
    else {
        panic!("not forwarded");
    };
    let mut upstream = Message::response(999, OpCode::Query);
    upstream.metadata.response_code = ResponseCode::NXDomain;
    let m = Message::from_vec(&pending.reply(Some(&upstream))).unwrap();
    assert_eq!(m.metadata.id, request.metadata.id);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(!m.metadata.authoritative);
    assert_eq!(m.queries, request.queries);
    let m = Message::from_vec(&pending.reply(None)).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}
