//! Benchmark of the nftables backend, in namespaces it creates (root only). Run through
//! `bench/lb/run.sh`. Prints a markdown table: new connections/s direct vs through a VIP with 1
//! and 10,000 services, full-sync time at 1,000 and 10,000 services x 3 backends, and the time
//! of a single backend change at both sizes. Ratios, not absolute numbers, are the point.

#[path = "../tests/support/netns.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routemesh_lb::{
    Backend, Frontend, LbSpec, NftBackend, Proto, Snat, ValidLbSpec, VirtualService,
};
use support::{in_netns, is_root, veth, Netns, NsRunner};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 11);
const PORTS: [u16; 3] = [8080, 8081, 8082];
const ROUNDS: usize = 5;

fn main() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    if let Err(e) = bench(Duration::from_secs_f64(seconds)) {
        eprintln!("nft_bench: {e}");
        std::process::exit(1);
    }
}

fn spec(extra_services: u32, change: bool) -> Result<ValidLbSpec, String> {
    let mut services = vec![VirtualService {
        frontend: Frontend::Vip {
            addr: VIP,
            port: 80,
            proto: Proto::Tcp,
        },
        backends: PORTS.iter().map(|&p| Backend::new(BACKEND, p)).collect(),
        scheduler: Default::default(),
    }];
    for i in 0..extra_services {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i + 1);
        let base = u32::from(Ipv4Addr::new(10, 210, 0, 0)) + 4 * i;
        let backends = (1..=3)
            .map(|b| Backend::new(Ipv4Addr::from(base + b), 80))
            .collect();
        services.push(VirtualService {
            frontend: Frontend::Vip {
                addr: vip,
                port: 80,
                proto: Proto::Tcp,
            },
            backends,
            scheduler: Default::default(),
        });
    }
    if change {
        // One backend of one service replaced: the single change an agent makes most.
        if let Some(service) = services.get_mut(1) {
            service.backends[0].addr = Ipv4Addr::new(10, 220, 0, 1);
        }
    }
    LbSpec {
        snat: Snat::Masquerade,
        services,
        ..LbSpec::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

struct Lab {
    client: Netns,
    lb: Netns,
    backend: Netns,
}

fn lab() -> Result<Lab, String> {
    let pid = std::process::id();
    let lab = Lab {
        client: Netns::new(format!("rmbench-client-{pid}"))?,
        lb: Netns::new(format!("rmbench-lb-{pid}"))?,
        backend: Netns::new(format!("rmbench-be-{pid}"))?,
    };
    veth(&lab.client, "c0", &lab.lb, "l0")?;
    veth(&lab.lb, "l1", &lab.backend, "e0")?;
    lab.client
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "c0"])?;
    lab.client
        .ip(&["route", "add", "default", "via", "10.99.0.1"])?;
    lab.lb.ip(&["addr", "add", "10.99.0.1/24", "dev", "l0"])?;
    lab.lb
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "l0"])?;
    lab.lb.ip(&["addr", "add", "10.98.0.1/24", "dev", "l1"])?;
    lab.lb.sysctl("net.ipv4.ip_forward=1")?;
    lab.backend
        .ip(&["addr", "add", &format!("{BACKEND}/24"), "dev", "e0"])?;
    lab.backend
        .ip(&["route", "add", "default", "via", "10.98.0.1"])?;
    lab.client
        .sysctl("net.ipv4.ip_local_port_range=1024 65000")?;
    lab.backend.sysctl("net.ipv4.tcp_tw_reuse=1")?;
    Ok(lab)
}

/// Accept loops in the backend namespace, one thread per port, living until the process ends.
fn start_servers(backend: &Netns) -> Result<(), String> {
    for port in PORTS {
        let listener = in_netns(&backend.path(), || {
            TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind {port}: {e}"))
        })??;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 256];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
    }
    Ok(())
}

/// New connections per second from the client namespace over `duration`, spread round-robin
/// over `targets` (the backend's three ports when direct, so the server side is the same).
fn conn_rate(client: &Netns, targets: &[SocketAddr], duration: Duration) -> Result<f64, String> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = 2;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            let path = client.path();
            scope.spawn(move || {
                in_netns(&path, || {
                    let mut buf = [0u8; 256];
                    let mut next = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let target = targets[next % targets.len()];
                        next += 1;
                        let ok = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                            .and_then(|mut c| {
                                c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                                while c.read(&mut buf)? > 0 {}
                                Ok(())
                            });
                        match ok {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} connections to {targets:?} failed"));
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(duration: Duration) -> Result<(), String> {
    let lab = lab()?;
    start_servers(&lab.backend)?;
    let mut nft = NftBackend::new(NsRunner::new(&lab.lb));
    let table = routemesh_lb::names::DEFAULT_TABLE;
    let small = spec(0, false)?;
    let big = spec(9_999, false)?;
    let direct: Vec<SocketAddr> = PORTS.iter().map(|&p| (BACKEND, p).into()).collect();
    let via_vip: Vec<SocketAddr> = vec![(VIP, 80).into()];

    // Connection rates, modes interleaved per round so drift hits all alike.
    let modes = [
        "direct",
        "direct, 10,000 services loaded",
        "VIP, 1 service",
        "VIP, 10,000 services",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..ROUNDS {
        for (i, samples) in rates.iter_mut().enumerate() {
            let target = match i {
                0 => {
                    nft.delete_table(table).map_err(|e| e.to_string())?;
                    &direct
                }
                1 => {
                    nft.full_sync(&big).map_err(|e| e.to_string())?;
                    &direct
                }
                2 => {
                    nft.full_sync(&small).map_err(|e| e.to_string())?;
                    &via_vip
                }
                _ => {
                    nft.full_sync(&big).map_err(|e| e.to_string())?;
                    &via_vip
                }
            };
            let rate = conn_rate(&lab.client, target, duration)?;
            eprintln!("{}: {rate:.0} conn/s", modes[i]);
            samples.push(rate);
        }
    }
    let rates: Vec<f64> = rates.into_iter().map(median).collect();

    // Sync times.
    let mut sync_rows = Vec::new();
    for n in [1_000u32, 10_000] {
        let base = spec(n - 1, false)?;
        let changed = spec(n - 1, true)?;
        let (mut empty, mut replace, mut change) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            nft.delete_table(table).map_err(|e| e.to_string())?;
            empty.push(ms(nft.full_sync(&base).map_err(|e| e.to_string())?.elapsed));
            replace.push(ms(nft.full_sync(&base).map_err(|e| e.to_string())?.elapsed));
        }
        let mut bytes = 0;
        for i in 0..10 {
            let next = if i % 2 == 0 { &changed } else { &base };
            let report = nft.sync(next).map_err(|e| e.to_string())?;
            if report.mode != routemesh_lb::SyncMode::Incremental {
                return Err(format!("expected an incremental sync, got {report:?}"));
            }
            bytes = report.script_bytes;
            change.push(ms(report.elapsed));
        }
        sync_rows.push((n, median(empty), median(replace), median(change), bytes));
    }

    println!(
        "| new connections/s ({ROUNDS} x {:.0} s, median) | conn/s | ratio to direct |",
        duration.as_secs_f64()
    );
    println!("|---|---:|---:|");
    for (mode, rate) in modes.iter().zip(&rates) {
        println!("| {mode} | {rate:.0} | {:.2} |", rate / rates[0]);
    }
    println!();
    println!("| services x 3 backends | full sync into empty ns | full sync replacing loaded table | single backend change (incremental) | change script |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, empty, replace, change, bytes) in sync_rows {
        println!("| {n} | {empty:.0} ms | {replace:.0} ms | {change:.1} ms | {bytes} B |");
    }
    Ok(())
}
