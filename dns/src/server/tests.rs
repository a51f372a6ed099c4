//! Loopback tests: real sockets on 127.0.0.1, hand-built packets as the client.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::*;
use crate::forward::tests::{fake_upstream, Behaviour};
use crate::forward::ForwarderConfig;
use crate::table::{Table, TableOptions};
use crate::testutil::{a_records, cluster, ip, query_bytes};

struct Running {
    udp: SocketAddr,
    tcp: SocketAddr,
    handle: ServerHandle,
}

fn start(forwarder: Option<Arc<Forwarder>>, limits: Limits) -> Running {
    let udp = StdUdp::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let resolver = Arc::new(Resolver::new(Table::build(
        &cluster(),
        TableOptions::default(),
    )));
    let ctx = ServeContext {
        querier: Arc::new(Querier::new(vec!["app".into()])),
        limits,
    };
    let sockets = Sockets {
        udp: vec![udp],
        tcp: vec![tcp],
    };
    let handle = serve(resolver, forwarder, sockets, ctx).unwrap();
    Running {
        udp: udp_addr,
        tcp: tcp_addr,
        handle,
    }
}

async fn udp_query(server: SocketAddr, bytes: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let len = timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("udp answer in time")
        .unwrap();
    Message::from_vec(&buf[..len]).unwrap()
}

async fn tcp_query(server: SocketAddr, bytes: &[u8]) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let len = timeout(Duration::from_secs(3), stream.read_u16())
        .await
        .expect("tcp answer in time")
        .unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let s = start(None, Limits::default());
    let m = udp_query(s.udp, &query_bytes("web", RecordType::A, None)).await;
    assert_eq!(a_records(&m), vec![ip("10.0.1.2")]);
    let m = udp_query(s.udp, &query_bytes("tasks.big", RecordType::A, None)).await;
    assert!(m.metadata.truncation);
    let m = tcp_query(s.tcp, &query_bytes("tasks.big", RecordType::A, None)).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    let m = udp_query(s.udp, &query_bytes("other", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // No forwarder: unknown names are SERVFAIL.
    let m = udp_query(s.udp, &query_bytes("example.com", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn querier_networks_can_change_while_serving() {
    let udp = StdUdp::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let querier = Arc::new(Querier::new(vec!["app".into()]));
    let ctx = ServeContext {
        querier: Arc::clone(&querier),
        limits: Limits::default(),
    };
    let resolver = Arc::new(Resolver::new(Table::build(
        &cluster(),
        TableOptions::default(),
    )));
    let sockets = Sockets {
        udp: vec![udp],
        tcp: vec![],
    };
    let handle = serve(resolver, None, sockets, ctx).unwrap();
    let q = query_bytes("other", RecordType::A, None);
    assert_eq!(
        udp_query(addr, &q).await.metadata.response_code,
        ResponseCode::NXDomain
    );
    querier.set_networks(vec!["app".into(), "private".into()]);
    assert_eq!(a_records(&udp_query(addr, &q).await), vec![ip("10.0.2.2")]);
    handle.shutdown().await;
}

#[tokio::test]
async fn forwards_unknown_names_with_failover() {
    let first = fake_upstream(Behaviour::Answer(ip("192.0.2.1"))).await;
    let second = fake_upstream(Behaviour::Answer(ip("192.0.2.2"))).await;
    let forwarder = Arc::new(Forwarder::new(ForwarderConfig {
        upstreams: vec![first.addr, second.addr],
        timeout: Duration::from_millis(300),
        cache_entries: 0,
        ..ForwarderConfig::default()
    }));
    let s = start(Some(forwarder), Limits::default());
    let m = udp_query(s.udp, &query_bytes("example.com", RecordType::A, None)).await;
    assert_eq!(a_records(&m), vec![ip("192.0.2.1")]);
    assert!(!m.metadata.authoritative);
    drop(first);
    let m = udp_query(s.udp, &query_bytes("example.com", RecordType::A, None)).await;
    assert_eq!(a_records(&m), vec![ip("192.0.2.2")]);
    let m = tcp_query(s.tcp, &query_bytes("example.org", RecordType::A, None)).await;
    assert_eq!(a_records(&m), vec![ip("192.0.2.2")]);
    // Names routemesh owns on other networks never reach upstream.
    let before = second.queries.load(std::sync::atomic::Ordering::SeqCst);
    let m = udp_query(s.udp, &query_bytes("tasks.other", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        second.queries.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn stalled_clients_and_malformed_burst_do_not_block_others() {
    let limits = Limits {
        tcp_idle_timeout: Duration::from_millis(500),
        tcp_io_timeout: Duration::from_millis(300),
        tcp_max_connections: 4,
        ..Limits::default()
    };
    let s = start(None, limits);
    // Stalled: connects and sends nothing. Slow: sends half a length prefix.
    let _stalled = TcpStream::connect(s.tcp).await.unwrap();
    let mut slow = TcpStream::connect(s.tcp).await.unwrap();
    slow.write_u8(0).await.unwrap();
    // Announces a query and never sends its body.
    let mut partial = TcpStream::connect(s.tcp).await.unwrap();
    partial.write_u16(40).await.unwrap();
    partial.write_all(&[0; 10]).await.unwrap();

    // A burst of malformed datagrams.
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = query_bytes("web", RecordType::A, None);
    for i in 0..500usize {
        let junk: Vec<u8> = match i % 4 {
            0 => vec![],
            1 => good[..(i % 12)].to_vec(),
            2 => {
                let mut loop_pkt = good[..12].to_vec();
                loop_pkt.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                loop_pkt
            }
            _ => vec![0xff; 600],
        };
        sender.send_to(&junk, s.udp).await.unwrap();
    }
    // An oversized TCP length prefix is closed, not buffered.
    let mut huge = TcpStream::connect(s.tcp).await.unwrap();
    huge.write_u16(65535).await.unwrap();

    let m = udp_query(s.udp, &good).await;
    assert_eq!(a_records(&m), vec![ip("10.0.1.2")]);
    // With the stalled connections still open, TCP still answers (slots free up by timeout).
    let m = tcp_query(s.tcp, &good).await;
    assert_eq!(a_records(&m), vec![ip("10.0.1.2")]);

    // The stalled connection is closed by the server after its idle timeout.
    let mut stalled = TcpStream::connect(s.tcp).await.unwrap();
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(3), stalled.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn connection_limit_closes_extra_connections() {
    let limits = Limits {
        tcp_idle_timeout: Duration::from_secs(5),
        tcp_max_connections: 2,
        ..Limits::default()
    };
    let s = start(None, limits);
    let _a = TcpStream::connect(s.tcp).await.unwrap();
    let _b = TcpStream::connect(s.tcp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(2), c.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // UDP is unaffected.
    let m = udp_query(s.udp, &query_bytes("web", RecordType::A, None)).await;
    assert_eq!(a_records(&m), vec![ip("10.0.1.2")]);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn stop_closes_the_sockets() {
    let s = start(None, Limits::default());
    let tcp = s.tcp;
    s.handle.shutdown().await;
    assert!(TcpStream::connect(tcp).await.is_err());
}
