//! Kernel test (root): a client, an lb namespace and three backends, real traffic through the
//! VIP the nftables backend programs. Skipped loudly without root.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use routemesh_lb::{Backend, NftBackend, Proto, Snat, SyncMode, ValidLbSpec, VirtualService};
use routemesh_testsupport::{root_or_skip, veth, ChildGuard, Netns, RecordingNft};

const VIP: &str = "10.97.0.10";
const OTHER_VIP: &str = "10.97.0.11";
const THIRD_VIP: &str = "10.97.0.12";
/// Address-only VIP (any protocol, any port).
const ANY_VIP: &str = "10.97.0.20";
const PORT: u16 = 8080;
const UDP_PORT: u16 = 5300;

const SERVER: &str = r#"
import socket, sys
name = sys.argv[1].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(1024)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(name), name))
    except OSError:
        pass
    finally:
        c.close()
"#;

/// Field order is drop order: servers stop before their namespaces go.
struct Topology {
    _servers: Vec<ChildGuard>,
    client: Netns,
    lb: Netns,
    _backends: Vec<Netns>,
}

fn backend_addr(i: usize) -> String {
    format!("10.98.0.{}", 11 + i)
}

/// UDP echo: answers `NAME@PORT:` + the datagram, so the client sees which backend and port.
const UDP_ECHO: &str = r#"
import socket, sys
port = int(sys.argv[2])
prefix = ("%s@%d:" % (sys.argv[1], port)).encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(prefix + data, peer)
"#;

/// Waits for a server's "ready" line.
fn started(mut server: ChildGuard) -> ChildGuard {
    let mut line = String::new();
    let stdout = server.0.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    server
}

/// The client, lb and three backend namespaces (names carry `tag`, so tests can run in
/// parallel). Each backend `i` serves HTTP on every port of `http_ports` (answering `be{i}` on
/// the first, `be{i}@PORT` on the others) and, with `udp_echo`, UDP echo on that port.
fn topology(tag: &str, http_ports: &[u16], udp_echo: Option<u16>) -> Topology {
    let pid = std::process::id();
    let client = Netns::new(&format!("rmlb-{tag}client-{pid}")).unwrap();
    let lb = Netns::new(&format!("rmlb-{tag}lb-{pid}")).unwrap();
    let mut backends = Vec::new();
    let mut servers = Vec::new();

    veth(&client, "c0", &lb, "l0").unwrap();
    client
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "c0"])
        .unwrap();
    client
        .ip(&["route", "add", "default", "via", "10.99.0.1"])
        .unwrap();
    lb.ip(&["addr", "add", "10.99.0.1/24", "dev", "l0"])
        .unwrap();
    // VIPs live on the lb namespace's own interface, as in an lb sandbox.
    lb.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "l0"])
        .unwrap();
    lb.ip(&["addr", "add", &format!("{OTHER_VIP}/32"), "dev", "l0"])
        .unwrap();
    lb.ip(&["addr", "add", &format!("{THIRD_VIP}/32"), "dev", "l0"])
        .unwrap();
    lb.ip(&["addr", "add", &format!("{ANY_VIP}/32"), "dev", "l0"])
        .unwrap();
    lb.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    lb.ip(&["addr", "add", "10.98.0.1/24", "dev", "br0"])
        .unwrap();
    lb.ip(&["link", "set", "br0", "up"]).unwrap();
    lb.sysctl("net.ipv4.ip_forward=1").unwrap();

    for i in 0..3 {
        let ns = Netns::new(&format!("rmlb-{tag}be{i}-{pid}")).unwrap();
        let port_name = format!("b{i}");
        veth(&lb, &port_name, &ns, "e0").unwrap();
        lb.ip(&["link", "set", &port_name, "master", "br0"])
            .unwrap();
        // No route back to the client: replies only work because the lb SNATs.
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", backend_addr(i)),
            "dev",
            "e0",
        ])
        .unwrap();
        for (k, port) in http_ports.iter().enumerate() {
            let name = if k == 0 {
                format!("be{i}")
            } else {
                format!("be{i}@{port}")
            };
            let server = ns
                .spawn("python3", &["-u", "-c", SERVER, &name, &port.to_string()])
                .unwrap();
            servers.push(started(server));
        }
        if let Some(port) = udp_echo {
            let server = ns
                .spawn(
                    "python3",
                    &["-u", "-c", UDP_ECHO, &format!("be{i}"), &port.to_string()],
                )
                .unwrap();
            servers.push(started(server));
        }
        backends.push(ns);
    }
    Topology {
        _servers: servers,
        client,
        lb,
        _backends: backends,
    }
}

fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| be(&backend_addr(i), PORT, w))
        .collect()
}

fn spec(main: Vec<Backend>, with_main: bool) -> routemesh_lb::ValidLbSpec {
    // Two more services keep the 3-slot and 2-slot groups alive through the test.
    let mut services: Vec<VirtualService> = vec![
        vip(OTHER_VIP, 80, Proto::Tcp, backends(&[1, 1, 1])),
        vip(THIRD_VIP, 80, Proto::Tcp, backends(&[1, 1])),
    ];
    if with_main {
        services.push(vip(VIP, 80, Proto::Tcp, main));
    }
    valid(Snat::Masquerade, services)
}

/// `n` new connections from the client to VIP:80; answers counted by backend name.
fn spread(client: &Netns, n: usize) -> BTreeMap<String, usize> {
    spread_to(client, VIP, 80, n)
}

/// `n` new connections from the client to `addr:port`; answers counted by body.
fn spread_to(client: &Netns, addr: &str, port: u16, n: usize) -> BTreeMap<String, usize> {
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    client
        .run_in(|| {
            let mut counts = BTreeMap::new();
            for _ in 0..n {
                let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                    .expect("connect to the VIP");
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut reply = String::new();
                conn.read_to_string(&mut reply).unwrap();
                let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                *counts.entry(body).or_insert(0) += 1;
            }
            counts
        })
        .unwrap()
}

#[test]
fn vip_spreads_drains_rejects_and_cleans_up() {
    if !root_or_skip("vip_spreads_drains_rejects_and_cleans_up") {
        return;
    }
    let topo = topology("", &[PORT], None);
    let mut nft = NftBackend::new(RecordingNft::new(&topo.lb));

    // All three backends get a share.
    let report = nft.sync(&spec(backends(&[1, 1, 1]), true)).unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    let counts = spread(&topo.client, 300);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, &n) in &counts {
        assert!((60..=141).contains(&n), "{name} got {n} of 300: {counts:?}");
    }

    // Dispatch by map lookup and numgen, one rule per slot count, nothing per service.
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    for needle in [
        "@vip_fe_3 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @vip_be_3",
        "@vip_fe_2 dnat ip to",
        "ct status dnat masquerade",
    ] {
        assert!(listing.contains(needle), "missing {needle:?} in\n{listing}");
    }
    assert_eq!(listing.matches("dnat ip to").count(), 2, "{listing}");

    // Draining backend 2 moves the service from the 3-slot into the 2-slot group, both of
    // which stay: elements only.
    let report = nft.sync(&spec(backends(&[1, 1, 0]), true)).unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    let script = nft.nft().last_script().unwrap();
    for line in script.lines() {
        assert!(
            line.starts_with("add element ") || line.starts_with("delete element "),
            "not an element line: {line:?}\n{script}"
        );
    }
    let counts = spread(&topo.client, 100);
    assert_eq!(counts.get("be2"), None, "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");

    // No usable backend: refused at once.
    nft.sync(&spec(vec![], true)).unwrap();
    let start = Instant::now();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.client.name,
            "curl",
            "-sS",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{VIP}/"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // curl 7.88 words ECONNREFUSED as "Couldn't connect to server"; exit 7 within a second
    // (not the 5 s timeout) is the refusal, and the socket error below names it.
    assert_eq!(out.status.code(), Some(7), "curl: {stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let target: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let refused = topo
        .client
        .run_in(|| {
            TcpStream::connect_timeout(&target, Duration::from_secs(2)).map_err(|e| e.kind())
        })
        .unwrap();
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));

    // Removing the service leaves nothing of it.
    nft.sync(&spec(vec![], false)).unwrap();
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(!listing.contains(VIP), "{listing}");
    assert!(listing.contains(OTHER_VIP), "{listing}");

    // A full resync of the same spec is accepted by the kernel too (structure and elements
    // through `nft -f` with this executor), as is a replacement, and deleting works.
    let before = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    assert_eq!(
        nft.full_sync(&spec(vec![], false)).unwrap().mode,
        SyncMode::Resync
    );
    assert_eq!(topo.lb.exec("nft", &["list", "ruleset"]).unwrap(), before);
    nft.invalidate();
    assert_eq!(
        nft.full_sync(&spec(vec![], false)).unwrap().mode,
        SyncMode::Full
    );
    nft.delete_table(routemesh_lb::names::DEFAULT_TABLE)
        .unwrap();
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(!listing.contains("routemesh_lb"), "{listing}");
}

#[test]
fn published_udp_port_through_the_kernel() {
    if !root_or_skip("published_udp_port_through_the_kernel") {
        return;
    }
    let pid = std::process::id();
    let client = Netns::new(&format!("rmlb-uc-{pid}")).unwrap();
    let lb = Netns::new(&format!("rmlb-ul-{pid}")).unwrap();
    let backend = Netns::new(&format!("rmlb-ub-{pid}")).unwrap();
    veth(&client, "c0", &lb, "l0").unwrap();
    veth(&lb, "l1", &backend, "e0").unwrap();
    client
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "c0"])
        .unwrap();
    lb.ip(&["addr", "add", "10.99.0.1/24", "dev", "l0"])
        .unwrap();
    lb.ip(&["addr", "add", "10.98.0.1/24", "dev", "l1"])
        .unwrap();
    backend
        .ip(&["addr", "add", "10.98.0.11/24", "dev", "e0"])
        .unwrap();
    lb.sysctl("net.ipv4.ip_forward=1").unwrap();
    let echo = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"udp-be:" + data, peer)
"#;
    let mut server = backend.spawn("python3", &["-u", "-c", echo]).unwrap();
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut nft = NftBackend::new(RecordingNft::new(&lb));
    nft.sync(&valid(
        Snat::Masquerade,
        vec![
            published(9053, Proto::Udp, vec![be("10.98.0.11", 53, 1)]),
            published(9054, Proto::Udp, vec![]),
        ],
    ))
    .unwrap();
    let answer = client
        .run_in(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.send_to(b"hello", "10.99.0.1:9053").unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let refused = {
                sock.connect("10.99.0.1:9054").unwrap();
                sock.send(b"x").unwrap();
                // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
                sock.recv(&mut buf).map_err(|e| e.kind())
            };
            (text, refused)
        })
        .unwrap();
    assert_eq!(answer.0, "udp-be:hello");
    assert_eq!(answer.1, Err(std::io::ErrorKind::ConnectionRefused));
    drop(server);
}

/// Address-only backends: the port is ignored (0), the packet keeps its own.
fn any_port_spec(weights: &[u32]) -> ValidLbSpec {
    let backends = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| be(&backend_addr(i), 0, w))
        .collect();
    valid(Snat::Masquerade, vec![any_port(ANY_VIP, backends)])
}

/// One UDP datagram from a fresh socket (so a new conntrack entry) to `ANY_VIP:port`: the
/// answer and the address it came from, or the error kind.
fn udp_exchange(client: &Netns, port: u16) -> Result<(String, SocketAddr), std::io::ErrorKind> {
    client
        .run_in(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.connect(format!("{ANY_VIP}:{port}")).unwrap();
            sock.send(b"hello").unwrap();
            let mut buf = [0u8; 128];
            // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
            let n = sock.recv(&mut buf).map_err(|e| e.kind())?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            Ok((text, sock.peer_addr().unwrap()))
        })
        .unwrap()
}

fn tcp_connect(client: &Netns, port: u16) -> Result<(), std::io::ErrorKind> {
    let target: SocketAddr = format!("{ANY_VIP}:{port}").parse().unwrap();
    client
        .run_in(|| {
            TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| e.kind())
        })
        .unwrap()
}

#[test]
fn address_only_vip_through_the_kernel() {
    if !root_or_skip("address_only_vip_through_the_kernel") {
        return;
    }
    let topo = topology("a", &[80, PORT], Some(UDP_PORT));
    let mut nft = NftBackend::new(RecordingNft::new(&topo.lb));

    // TCP to port 80 spreads over the three backends, each reached on port 80.
    assert_eq!(
        nft.sync(&any_port_spec(&[1, 1, 1])).unwrap().mode,
        SyncMode::Full
    );
    let counts = spread_to(&topo.client, ANY_VIP, 80, 300);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["be0", "be1", "be2"],
        "{counts:?}"
    );
    for (name, &n) in &counts {
        assert!((60..=141).contains(&n), "{name} got {n} of 300: {counts:?}");
    }

    // One set, one map and one rule; the map yields an address only.
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    for needle in [
        "typeof ip daddr . numgen random mod 3 : ip daddr",
        "ip daddr @vipa_fe_3 dnat to ip daddr . numgen random mod 3 map @vipa_be_3",
        "ct state new ip daddr @no_backend_vipa goto reject_no_backend",
    ] {
        assert!(listing.contains(needle), "missing {needle:?} in\n{listing}");
    }
    assert_eq!(listing.matches("dnat to").count(), 1, "{listing}");

    // Another TCP port reaches a backend on that same port.
    let counts = spread_to(&topo.client, ANY_VIP, PORT, 30);
    assert!(
        counts
            .keys()
            .all(|k| ["be0@8080", "be1@8080", "be2@8080"].contains(&k.as_str())),
        "{counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 30);

    // UDP too, port kept, answered from the VIP.
    let mut udp_backends = BTreeMap::new();
    for _ in 0..30 {
        let (text, from) = udp_exchange(&topo.client, UDP_PORT).unwrap();
        assert_eq!(from, format!("{ANY_VIP}:{UDP_PORT}").parse().unwrap());
        let backend = text
            .strip_suffix(&format!("@{UDP_PORT}:hello"))
            .unwrap_or_else(|| panic!("unexpected answer {text:?}"))
            .to_string();
        *udp_backends.entry(backend).or_insert(0) += 1;
    }
    assert!(udp_backends.len() >= 2, "{udp_backends:?}");

    // Draining backend 2: incremental (3-slot group out, 2-slot group in), be2 gets none.
    let report = nft.sync(&any_port_spec(&[1, 1, 0])).unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    let counts = spread_to(&topo.client, ANY_VIP, 80, 100);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["be0", "be1"],
        "{counts:?}"
    );

    // No usable backend: TCP on any port reset, UDP answered by ICMP port unreachable.
    let report = nft.sync(&any_port_spec(&[])).unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    let start = Instant::now();
    for port in [80, PORT, 12345] {
        assert_eq!(
            tcp_connect(&topo.client, port),
            Err(std::io::ErrorKind::ConnectionRefused),
            "port {port}"
        );
    }
    assert_eq!(
        udp_exchange(&topo.client, UDP_PORT).map(|_| ()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Removing it leaves nothing of it: its address at once; its emptied groups, kept for
    // a service that comes into them next, once two full syncs found them empty.
    let empty = valid(Snat::Masquerade, vec![]);
    nft.sync(&empty).unwrap();
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(!listing.contains(ANY_VIP), "{listing}");
    assert!(listing.contains("chain vipa_3"), "{listing}");
    nft.full_sync(&empty).unwrap();
    nft.full_sync(&empty).unwrap();
    let listing = topo.lb.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(!listing.contains("vipa_"), "{listing}");
}
