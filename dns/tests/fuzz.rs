//! Bounded fuzzing of the query path (`handle`, and `Pending::reply` for forwarded names): raw
//! bytes, and DNS messages written byte by byte from random pieces (valid header, random names,
//! types, classes, EDNS), then mutated. See `fuzz/driver.rs` for the driver and its settings.
//!
//! Properties: nothing panics; every reply decodes as DNS, is a response (QR) with the query's
//! ID, fits the transport's limit; packets that are not one plain query get no reply or a
//! header-only error (FORMERR for bad counts, NOTIMP for other opcodes); a forwarded query is
//! a well-formed single question, and its reply echoes it.

#[path = "../../fuzz/driver.rs"]
mod driver;

use arbitrary::Unstructured;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use routemesh_dns::handler::DEFAULT_MAX_UDP_PAYLOAD;
use routemesh_dns::{
    handle, EndpointMode, Input, NetInput, Outcome, Proto, QueryContext, Resolver, ServiceInput,
    Table, TableOptions, TaskInput, Transport,
};
use routemesh_dns::{Forwarder, ForwarderConfig};

fn resolver() -> Resolver {
    let task = |name: &str, service: &str, net: &str, addr: [u8; 4], running: bool| TaskInput {
        name: name.into(),
        service: service.into(),
        addrs: vec![(net.into(), addr.into())],
        running,
    };
    let mut tasks = vec![
        task("web.1", "web", "app", [10, 0, 1, 5], true),
        task("web.2", "web", "app", [10, 0, 1, 6], true),
        task("web.3", "web", "app", [10, 0, 1, 7], false),
        task("db.1", "db", "app", [10, 0, 1, 20], true),
        task("other.1", "other", "private", [10, 0, 2, 5], true),
    ];
    // Enough addresses that a `big` answer does not fit 512 bytes (truncation path).
    for i in 0..60u8 {
        tasks.push(task(
            &format!("big.{}", u32::from(i) + 1),
            "big",
            "app",
            [10, 0, 3, i + 1],
            true,
        ));
    }
    let service = |name: &str, mode, vips: Vec<(&str, [u8; 4])>, ports| ServiceInput {
        name: name.into(),
        mode,
        vips: vips
            .into_iter()
            .map(|(n, a)| (n.to_string(), a.into()))
            .collect(),
        ports,
    };
    let input = Input {
        networks: vec![
            NetInput { id: "app".into() },
            NetInput {
                id: "private".into(),
            },
        ],
        services: vec![
            service(
                "web",
                EndpointMode::Vip,
                vec![("app", [10, 0, 1, 2])],
                vec![(80, Proto::Tcp), (53, Proto::Udp)],
            ),
            service("db", EndpointMode::Dnsrr, vec![], vec![(5432, Proto::Tcp)]),
            service(
                "other",
                EndpointMode::Vip,
                vec![("private", [10, 0, 2, 2])],
                vec![],
            ),
            service("big", EndpointMode::Dnsrr, vec![], vec![(80, Proto::Tcp)]),
        ],
        tasks,
    };
    Resolver::new(Table::build(&input, TableOptions::default()))
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The response limit `handle` must respect: TCP has none below 64 KiB; UDP uses the client's
/// EDNS size, at least 512, at most the server's.
fn udp_limit(request: Option<&Message>) -> usize {
    let client = request
        .and_then(|m| m.edns.as_ref())
        .map_or(512, |e| e.max_payload().max(512));
    usize::from(client.min(DEFAULT_MAX_UDP_PAYLOAD))
}

fn check_response(request: &[u8], response: &[u8], what: &str) -> Message {
    let message = match Message::from_vec(response) {
        Ok(m) => m,
        Err(e) => panic!("{what}: reply does not decode ({e}): {response:02x?}"),
    };
    assert_eq!(
        message.metadata.message_type,
        MessageType::Response,
        "{what}: QR not set"
    );
    assert_eq!(message.metadata.id, be16(request, 0), "{what}: wrong ID");
    message
}

fn check_query(resolver: &Resolver, bytes: &[u8]) {
    let decoded = Message::from_vec(bytes).ok();
    for transport in [Transport::Udp, Transport::Tcp] {
        let ctx = QueryContext {
            networks: &["app"],
            transport,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        };
        match handle(resolver, bytes, &ctx) {
            Outcome::Drop => {
                // Only what has no header, or is itself a response, goes unanswered.
                assert!(
                    bytes.len() < 12 || bytes[2] & 0x80 != 0,
                    "a query was dropped: {bytes:02x?}"
                );
            }
            Outcome::Reply(out) => {
                assert!(bytes.len() >= 12, "a reply to a packet with no header");
                assert_eq!(bytes[2] & 0x80, 0, "a reply to a response");
                let message = check_response(bytes, &out, "reply");
                if transport == Transport::Udp {
                    assert!(
                        out.len() <= udp_limit(decoded.as_ref()),
                        "UDP reply of {} bytes over the limit",
                        out.len()
                    );
                }
                let opcode = (bytes[2] >> 3) & 0xf;
                let counts = [be16(bytes, 4), be16(bytes, 6), be16(bytes, 8)];
                let rcode = message.metadata.response_code;
                if opcode != 0 {
                    assert_eq!(rcode, ResponseCode::NotImp, "opcode {opcode}");
                } else if counts != [1, 0, 0] || be16(bytes, 10) > 2 {
                    assert_eq!(rcode, ResponseCode::FormErr, "counts {counts:?}");
                }
                match rcode {
                    ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused => {
                        assert!(message.answers.is_empty(), "{rcode} with answers");
                    }
                    _ => {
                        // An answer from the table: the request was one good question, echoed.
                        let request = decoded
                            .as_ref()
                            .unwrap_or_else(|| panic!("{rcode} to an undecodable request"));
                        assert_eq!(message.queries, request.queries, "question not echoed");
                        if transport == Transport::Tcp {
                            assert!(!message.metadata.truncation, "TC over TCP");
                        }
                    }
                }
            }
            Outcome::Forward(pending) => {
                let request = decoded
                    .as_ref()
                    .unwrap_or_else(|| panic!("forwarded an undecodable request"));
                assert_eq!(request.queries.len(), 1, "forwarded {:?}", request.queries);
                assert_eq!(pending.query(), &request.queries[0]);
                let failed = check_response(bytes, &pending.reply(None), "SERVFAIL reply");
                assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
                assert_eq!(failed.queries, request.queries);
            }
        }
    }
}

// ---- structured inputs ------------------------------------------------------------------

/// `min..=max` bytes from `u`.
fn take(u: &mut Unstructured, min: usize, max: usize) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(min..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

const LABELS: &[&str] = &[
    "web", "tasks", "db", "big", "other", "1", "2", "_80", "_tcp", "_udp", "_53", "in-addr",
    "arpa", "10", "0", "5", "2", "example", "com", "WEB", "Tasks", "*", "",
];

fn name(u: &mut Unstructured, out: &mut Vec<u8>) -> arbitrary::Result<()> {
    for _ in 0..u.int_in_range(0..=7)? {
        match u.int_in_range(0..=9)? {
            0 => {
                // A random label, sometimes over 63 bytes or with odd bytes.
                let len = u.int_in_range(0..=70)?;
                out.push(len);
                for _ in 0..len {
                    out.push(u.arbitrary()?);
                }
            }
            1 => {
                // A compression pointer, anywhere.
                out.push(0xc0 | u.int_in_range(0..=0x3f)?);
                out.push(u.arbitrary()?);
                return Ok(());
            }
            _ => {
                let label = u.choose(LABELS)?;
                out.push(label.len() as u8);
                out.extend_from_slice(label.as_bytes());
            }
        }
    }
    out.push(0);
    Ok(())
}

fn query_bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&u.arbitrary::<u16>()?.to_be_bytes());
    let mut flags: u16 = u16::from(u.arbitrary::<bool>()?) << 8; // RD
    if u.ratio(1, 8)? {
        flags |= u.arbitrary::<u16>()?; // QR, opcode, AA, TC, Z, rcode at random
    }
    out.extend_from_slice(&flags.to_be_bytes());
    let edns = u.ratio(1, 2)?;
    let mut counts = [1u16, 0, 0, u16::from(edns)];
    if u.ratio(1, 8)? {
        counts[u.choose_index(4)?] = u.choose(&[0u16, 1, 2, 3, 0xffff])?.to_owned();
    }
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    for _ in 0..if u.ratio(1, 10)? { 2 } else { 1 } {
        name(u, &mut out)?;
        let qtype: u16 = match u.int_in_range(0..=9)? {
            0 => u.arbitrary()?,
            1 => 28, // AAAA
            2 => 33, // SRV
            3 => 12, // PTR
            4 => 255,
            5 => 16,
            _ => 1,
        };
        let qclass: u16 = match u.int_in_range(0..=9)? {
            0 => u.arbitrary()?,
            1 => 255,
            2 => 3,
            _ => 1,
        };
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&qclass.to_be_bytes());
    }
    if edns {
        out.push(0); // root name
        out.extend_from_slice(&41u16.to_be_bytes());
        let payload: u16 = match u.int_in_range(0..=5)? {
            0 => u.arbitrary()?,
            1 => 0,
            2 => 512,
            3 => 4096,
            4 => u16::MAX,
            _ => 1232,
        };
        out.extend_from_slice(&payload.to_be_bytes());
        // Extended rcode, version, DO and Z.
        let ttl: u32 = if u.ratio(1, 4)? { u.arbitrary()? } else { 0 };
        out.extend_from_slice(&ttl.to_be_bytes());
        let mut options = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let code: u16 = *u.choose(&[10u16, 8, 12, 15, 3, 0xffff])?;
            let data: Vec<u8> = (0..u.int_in_range(0..=40)?)
                .map(|_| u.arbitrary())
                .collect::<arbitrary::Result<_>>()?;
            options.extend_from_slice(&code.to_be_bytes());
            let len = if u.ratio(1, 10)? {
                u.arbitrary()?
            } else {
                data.len() as u16
            };
            options.extend_from_slice(&len.to_be_bytes());
            options.extend_from_slice(&data);
        }
        out.extend_from_slice(&(options.len() as u16).to_be_bytes());
        out.extend_from_slice(&options);
    }
    if u.ratio(1, 10)? {
        out.extend_from_slice(&take(u, 1, 16)?);
    }
    Ok(out)
}

#[test]
fn fuzz_dns_query() {
    let resolver = resolver();
    let report = driver::run(&driver::Target {
        name: "dns-query",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &query_bytes,
        check: &|bytes| check_query(&resolver, bytes),
    });
    assert!(report.replayed > 0, "the dns-query corpus is missing");
}

/// The input is an upstream's answer to a forwarded `example.com A` (UDP, no EDNS): whatever
/// it holds, the client's reply decodes, carries the client's ID and question, fits 512 bytes.
fn check_upstream(resolver: &Resolver, client_query: &[u8], bytes: &[u8]) {
    let Ok(upstream) = Message::from_vec(bytes) else {
        return;
    };
    let ctx = QueryContext {
        networks: &["app"],
        transport: Transport::Udp,
        max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
    };
    let Outcome::Forward(pending) = handle(resolver, client_query, &ctx) else {
        panic!("example.com was not forwarded");
    };
    let out = pending.reply(Some(&upstream));
    assert!(out.len() <= 512, "reply of {} bytes over UDP", out.len());
    let reply = check_response(client_query, &out, "forwarded reply");
    let expected = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A);
    assert_eq!(reply.queries, vec![expected], "question not echoed");
    if reply.metadata.response_code != ResponseCode::ServFail {
        assert_eq!(
            reply.metadata.response_code, upstream.metadata.response_code,
            "the upstream's rcode is passed on"
        );
    }
}

/// Upstream answers: a response header, the question, then records of random types.
fn upstream_bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&u.arbitrary::<u16>()?.to_be_bytes());
    out.extend_from_slice(&(0x8180u16 | u16::from(u.int_in_range(0u8..=5)?)).to_be_bytes());
    let answers = u.int_in_range(0u16..=40)?;
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    for _ in 0..answers {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        let (rtype, data): (u16, Vec<u8>) = match u.int_in_range(0..=4)? {
            0 => (1, u.bytes(4)?.to_vec()),
            1 => (28, u.bytes(16)?.to_vec()),
            2 => (16, {
                let text = &take(u, 0, 200)?;
                let mut d = vec![text.len() as u8];
                d.extend_from_slice(text);
                d
            }),
            3 => (5, b"\x03www\xc0\x0c".to_vec()),
            _ => (u.arbitrary()?, take(u, 0, 30)?),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&u.arbitrary::<u32>()?.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Ok(out)
}

#[test]
fn fuzz_dns_upstream_answer() {
    let resolver = resolver();
    let mut client = Message::query();
    client.metadata.id = 0x4242;
    client.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::A,
    ));
    let client_query = client.to_vec().unwrap();
    let report = driver::run(&driver::Target {
        name: "dns-upstream",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &upstream_bytes,
        check: &|bytes| check_upstream(&resolver, &client_query, bytes),
    });
    assert!(report.replayed > 0, "the dns-upstream corpus is missing");
}

/// The generators make what they claim: a plain generated query with one good question is
/// answered or forwarded, never refused as malformed (else the fuzzing would only ever test
/// the FORMERR path).
#[test]
fn generated_queries_reach_the_table() {
    let resolver = resolver();
    let mut rng = driver::Rng::new(7);
    let mut answered = 0;
    for _ in 0..500 {
        let raw = rng.bytes(1024);
        let Ok(bytes) = query_bytes(&mut Unstructured::new(&raw)) else {
            continue;
        };
        let ctx = QueryContext {
            networks: &["app"],
            transport: Transport::Udp,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        };
        match handle(&resolver, &bytes, &ctx) {
            Outcome::Forward(_) => answered += 1,
            Outcome::Reply(out) => {
                let m = Message::from_vec(&out).unwrap();
                if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
                    answered += 1;
                }
            }
            Outcome::Drop => {}
        }
    }
    assert!(
        answered > 100,
        "only {answered} of 500 generated queries got past validation"
    );
}

// ---- the forwarder against a fake upstream ------------------------------------------------

/// A UDP upstream on loopback that answers each query with the current fuzz input (its ID set
/// to the query's), then with a plain matching answer, so that an input the forwarder ignores
/// costs no timeout.
struct FakeUpstream {
    addr: std::net::SocketAddr,
    answer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl FakeUpstream {
    fn start() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let current = std::sync::Arc::clone(&answer);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                if len < 12 {
                    continue;
                }
                let mut fuzzed = current.lock().unwrap().clone();
                if fuzzed.len() >= 2 {
                    fuzzed[..2].copy_from_slice(&buf[..2]);
                }
                let _ = socket.send_to(&fuzzed, from);
                let mut plain = buf[..len].to_vec();
                plain[2] |= 0x80; // the query itself, as a response with no answers
                let _ = socket.send_to(&plain, from);
            }
        });
        FakeUpstream { addr, answer }
    }
}

fn check_forward(
    runtime: &tokio::runtime::Runtime,
    upstream: &FakeUpstream,
    query: &Query,
    bytes: &[u8],
) {
    *upstream.answer.lock().unwrap() = bytes.to_vec();
    let forwarder = Forwarder::new(ForwarderConfig {
        upstreams: vec![upstream.addr],
        timeout: std::time::Duration::from_secs(2),
        ..ForwarderConfig::default()
    });
    let answer = match runtime.block_on(forwarder.forward(query)) {
        Ok(answer) => answer,
        // A truncated answer is retried over TCP, where nothing listens.
        Err(_) => return,
    };
    assert_eq!(
        answer.queries.first(),
        Some(query),
        "an answer to another question"
    );
    if let Some(cached) = forwarder.cached(query) {
        assert_eq!(
            cached.answers.len(),
            answer.answers.len(),
            "cache changed the answer"
        );
        for (c, a) in cached.answers.iter().zip(&answer.answers) {
            assert!(
                c.ttl <= a.ttl,
                "cached TTL {} above the upstream's {}",
                c.ttl,
                a.ttl
            );
        }
    }
}

#[test]
fn fuzz_dns_forwarder() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = FakeUpstream::start();
    let query = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A);
    let report = driver::run(&driver::Target {
        name: "dns-forward",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &upstream_bytes,
        check: &|bytes| check_forward(&runtime, &upstream, &query, bytes),
    });
    assert!(report.replayed > 0, "the dns-forward corpus is missing");
}

/// The fake upstream works: a good answer is returned and cached.
#[test]
fn fake_upstream_answers_and_the_answer_is_cached() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = FakeUpstream::start();
    let query = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A);
    let mut raw = b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00".to_vec();
    raw.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    raw.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x5d\xb8\xd8\x22");
    *upstream.answer.lock().unwrap() = raw;
    let forwarder = Forwarder::new(ForwarderConfig {
        upstreams: vec![upstream.addr],
        // Generous: a loaded CI machine must not turn this into a timeout.
        timeout: std::time::Duration::from_secs(10),
        ..ForwarderConfig::default()
    });
    let answer = runtime.block_on(forwarder.forward(&query)).unwrap();
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(forwarder.cached(&query).unwrap().answers.len(), 1);
}

/// resolv.conf text: nothing panics; upstreams are port 53 and never the embedded server;
/// the timeout stays within 1-30 s.
fn check_resolv_conf(bytes: &[u8]) {
    let config = ForwarderConfig::from_resolv_conf(&String::from_utf8_lossy(bytes));
    for upstream in &config.upstreams {
        assert_eq!(upstream.port(), 53, "{upstream}");
        assert_ne!(
            upstream.ip(),
            std::net::Ipv4Addr::new(127, 0, 0, 11),
            "a loop"
        );
    }
    let secs = config.timeout.as_secs();
    assert!((1..=30).contains(&secs), "timeout {secs} s");
}

fn resolv_conf(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    const PIECES: &[&str] = &[
        "nameserver ",
        "options ",
        "timeout:",
        "ndots:",
        "search ",
        "#",
        ";",
        "\n",
        " ",
        "\t",
        "10.0.0.2",
        "127.0.0.11",
        "::1",
        "fe80::1%eth0",
        "2001:db8::1",
        "0",
        "30",
        "31",
        "99999999999999999999",
        "-1",
        "bogus",
    ];
    let mut text = String::new();
    for _ in 0..u.int_in_range(0..=20)? {
        if u.ratio(1, 10)? {
            text.push(u.arbitrary()?);
        } else {
            text.push_str(u.choose(PIECES)?);
        }
    }
    Ok(text.into_bytes())
}

#[test]
fn fuzz_resolv_conf() {
    let report = driver::run(&driver::Target {
        name: "dns-resolv-conf",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &resolv_conf,
        check: &check_resolv_conf,
    });
    assert!(report.replayed > 0, "the dns-resolv-conf corpus is missing");
}
