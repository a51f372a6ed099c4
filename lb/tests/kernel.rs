//! Kernel test (root): a client, an lb namespace and three backends, real traffic through the
//! VIP the nftables backend programs. Skipped loudly without root.

mod common;
#[path = "support/netns.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use routemesh_lb::{Backend, NftBackend, Proto, Snat, SyncMode, VirtualService};
use support::{is_root, veth, ChildGuard, Netns, NsRunner};

const VIP: &str = "10.97.0.10";
const OTHER_VIP: &str = "10.97.0.11";
const THIRD_VIP: &str = "10.97.0.12";
const PORT: u16 = 8080;

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

fn topology() -> Topology {
    let pid = std::process::id();
    let client = Netns::new(format!("rmlb-client-{pid}")).unwrap();
    let lb = Netns::new(format!("rmlb-lb-{pid}")).unwrap();
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
    lb.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    lb.ip(&["addr", "add", "10.98.0.1/24", "dev", "br0"])
        .unwrap();
    lb.ip(&["link", "set", "br0", "up"]).unwrap();
    lb.sysctl("net.ipv4.ip_forward=1").unwrap();

    for i in 0..3 {
        let ns = Netns::new(format!("rmlb-be{i}-{pid}")).unwrap();
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
        let mut server = ns
            .spawn(
                "python3",
                &["-u", "-c", SERVER, &format!("be{i}"), &PORT.to_string()],
            )
            .unwrap();
        let mut line = String::new();
        let stdout = server.0.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        servers.push(server);
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
    let target: SocketAddr = format!("{VIP}:80").parse().unwrap();
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
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let topo = topology();
    let mut nft = NftBackend::new(NsRunner::new(&topo.lb));

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
    let script = nft.runner().last_script().unwrap();
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

    // A full resync of the same spec is accepted by the kernel too, and deleting works.
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
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let pid = std::process::id();
    let client = Netns::new(format!("rmlb-uc-{pid}")).unwrap();
    let lb = Netns::new(format!("rmlb-ul-{pid}")).unwrap();
    let backend = Netns::new(format!("rmlb-ub-{pid}")).unwrap();
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
    let mut nft = NftBackend::new(NsRunner::new(&lb));
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
