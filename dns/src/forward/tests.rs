//! Forwarding against fake upstream servers on 127.0.0.1 (in-process tasks).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::*;
use crate::testutil::a_records;

#[derive(Clone, Copy)]
pub enum Behaviour {
    Answer(Ipv4Addr),
    Rcode(ResponseCode),
    Silent,
    /// TC over UDP; the full answer (with this address) over TCP.
    TruncateUdp(Ipv4Addr),
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn answer(request: &Message, behaviour: Behaviour, tcp: bool) -> Option<Vec<u8>> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries.clone_from(&request.queries);
    let name = request.queries[0].name().clone();
    match behaviour {
        Behaviour::Silent => return None,
        Behaviour::Rcode(rcode) => response.metadata.response_code = rcode,
        Behaviour::Answer(ip) => {
            response.add_answer(Record::from_rdata(name, 60, RData::A(A(ip))));
        }
        Behaviour::TruncateUdp(ip) if tcp => {
            response.add_answer(Record::from_rdata(name, 60, RData::A(A(ip))));
        }
        Behaviour::TruncateUdp(_) => response.metadata.truncation = true,
    }
    Some(response.to_vec().unwrap())
}

/// A UDP and a TCP socket on one port of 127.0.0.1. The port the kernel gives UDP may be
/// taken for TCP (another test's connection, say): then try another.
async fn same_port_pair() -> (UdpSocket, TcpListener) {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        match TcpListener::bind(udp.local_addr().unwrap()).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) => last = Some(e),
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1: {last:?}");
}

/// A DNS server on 127.0.0.1 (UDP and TCP, same port) behaving as told.
pub async fn fake_upstream(behaviour: Behaviour) -> FakeUpstream {
    let (udp, tcp) = same_port_pair().await;
    let addr = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&queries);
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let request = Message::from_vec(&buf[..len]).unwrap();
            if let Some(bytes) = answer(&request, behaviour, false) {
                udp.send_to(&bytes, peer).await.unwrap();
            }
        }
    });
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.unwrap();
            let request = Message::from_vec(&buf).unwrap();
            if let Some(bytes) = answer(&request, behaviour, true) {
                stream.write_u16(bytes.len() as u16).await.unwrap();
                stream.write_all(&bytes).await.unwrap();
            }
        }
    });
    FakeUpstream {
        addr,
        queries,
        tasks: vec![udp_task, tcp_task],
    }
}

fn forwarder(upstreams: &[&FakeUpstream]) -> Forwarder {
    Forwarder::new(ForwarderConfig {
        upstreams: upstreams.iter().map(|u| u.addr).collect(),
        timeout: Duration::from_millis(300),
        ..ForwarderConfig::default()
    })
}

fn q(name: &str) -> Query {
    Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test]
async fn answers_from_the_first_upstream() {
    let first = fake_upstream(Behaviour::Answer(ip("192.0.2.1"))).await;
    let second = fake_upstream(Behaviour::Answer(ip("192.0.2.2"))).await;
    let f = forwarder(&[&first, &second]);
    let m = f.forward(&q("example.com.")).await.unwrap();
    assert_eq!(a_records(&m), vec![ip("192.0.2.1")]);
    assert_eq!(second.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn fails_over_on_servfail_refused_and_silence() {
    for behaviour in [
        Behaviour::Rcode(ResponseCode::ServFail),
        Behaviour::Rcode(ResponseCode::Refused),
        Behaviour::Silent,
    ] {
        let first = fake_upstream(behaviour).await;
        let second = fake_upstream(Behaviour::Answer(ip("192.0.2.2"))).await;
        let f = forwarder(&[&first, &second]);
        let m = f.forward(&q("example.com.")).await.unwrap();
        assert_eq!(a_records(&m), vec![ip("192.0.2.2")]);
        assert_eq!(first.queries.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn stopped_upstream_fails_over() {
    let first = fake_upstream(Behaviour::Answer(ip("192.0.2.1"))).await;
    let gone = first.addr;
    drop(first);
    let second = fake_upstream(Behaviour::Answer(ip("192.0.2.2"))).await;
    let f = Forwarder::new(ForwarderConfig {
        upstreams: vec![gone, second.addr],
        timeout: Duration::from_millis(300),
        ..ForwarderConfig::default()
    });
    let m = f.forward(&q("example.com.")).await.unwrap();
    assert_eq!(a_records(&m), vec![ip("192.0.2.2")]);
}

#[tokio::test]
async fn all_failing_passes_the_last_rcode_back() {
    let first = fake_upstream(Behaviour::Silent).await;
    let second = fake_upstream(Behaviour::Rcode(ResponseCode::Refused)).await;
    let f = forwarder(&[&first, &second]);
    let m = f.forward(&q("example.com.")).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    let only_silent = forwarder(&[&first]);
    assert!(matches!(
        only_silent.forward(&q("example.com.")).await,
        Err(ForwardError::Timeout(_))
    ));
}

#[tokio::test]
async fn nxdomain_is_passed_back_without_failover() {
    let first = fake_upstream(Behaviour::Rcode(ResponseCode::NXDomain)).await;
    let second = fake_upstream(Behaviour::Answer(ip("192.0.2.2"))).await;
    let f = forwarder(&[&first, &second]);
    let m = f.forward(&q("nope.example.")).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(second.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn cache_hits_skip_upstream_and_count_ttl_down() {
    let up = fake_upstream(Behaviour::Answer(ip("192.0.2.1"))).await;
    let f = forwarder(&[&up]);
    f.forward(&q("example.com.")).await.unwrap();
    let m = f.forward(&q("EXAMPLE.com.")).await.unwrap();
    assert_eq!(a_records(&m), vec![ip("192.0.2.1")]);
    assert!(m.answers[0].ttl <= 60);
    assert_eq!(up.queries.load(Ordering::SeqCst), 1);
    assert_eq!(f.cache_len(), 1);
    // A different type is a different entry.
    let aaaa = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::AAAA);
    f.forward(&aaaa).await.unwrap();
    assert_eq!(up.queries.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cache_is_bounded_and_failures_are_not_cached() {
    let up = fake_upstream(Behaviour::Answer(ip("192.0.2.1"))).await;
    let f = Forwarder::new(ForwarderConfig {
        upstreams: vec![up.addr],
        cache_entries: 3,
        ..ForwarderConfig::default()
    });
    for i in 0..10 {
        f.forward(&q(&format!("n{i}.example."))).await.unwrap();
    }
    assert_eq!(f.cache_len(), 3);
    let bad = fake_upstream(Behaviour::Rcode(ResponseCode::ServFail)).await;
    let f = forwarder(&[&bad]);
    f.forward(&q("example.com.")).await.unwrap();
    assert_eq!(f.cache_len(), 0);
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() {
    let up = fake_upstream(Behaviour::TruncateUdp(ip("192.0.2.9"))).await;
    let f = forwarder(&[&up]);
    let m = f.forward(&q("big.example.")).await.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(a_records(&m), vec![ip("192.0.2.9")]);
}

#[tokio::test]
async fn in_flight_limit_refuses_beyond_it() {
    let up = fake_upstream(Behaviour::Silent).await;
    let f = Forwarder::new(ForwarderConfig {
        upstreams: vec![up.addr],
        max_in_flight: 1,
        timeout: Duration::from_millis(300),
        ..ForwarderConfig::default()
    });
    let held = f.try_reserve().unwrap();
    assert!(f.try_reserve().is_none());
    assert!(matches!(
        f.forward(&q("example.com.")).await,
        Err(ForwardError::Busy)
    ));
    drop(held);
    assert!(f.try_reserve().is_some());
}

#[tokio::test]
async fn no_upstreams_is_an_error() {
    let f = Forwarder::new(ForwarderConfig::default());
    assert!(matches!(
        f.forward(&q("example.com.")).await,
        Err(ForwardError::NoUpstreams)
    ));
}

/// The factory is what the daemon replaces to open sockets inside a sandbox.
#[tokio::test]
async fn upstream_sockets_come_from_the_factory() {
    struct Counting(AtomicUsize);
    impl UpstreamSockets for Counting {
        fn udp(&self, upstream: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
            self.0.fetch_add(1, Ordering::SeqCst);
            CurrentNamespace.udp(upstream)
        }
        fn tcp(&self, upstream: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
            self.0.fetch_add(1, Ordering::SeqCst);
            CurrentNamespace.tcp(upstream)
        }
    }
    let up = fake_upstream(Behaviour::TruncateUdp(ip("192.0.2.9"))).await;
    let factory = Arc::new(Counting(AtomicUsize::new(0)));
    let f = Forwarder::with_sockets(
        ForwarderConfig {
            upstreams: vec![up.addr],
            ..ForwarderConfig::default()
        },
        factory.clone(),
    );
    f.forward(&q("example.com.")).await.unwrap();
    assert_eq!(factory.0.load(Ordering::SeqCst), 2);
}

#[test]
fn config_from_resolv_conf() {
    let c = ForwarderConfig::from_resolv_conf("nameserver 192.0.2.53\noptions timeout:1\n");
    assert_eq!(
        c.upstreams,
        vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.timeout, Duration::from_secs(1));
}
