//! Benchmark of the nftables backend, in namespaces it creates (root only). Run through
//! `bench/lb/run.sh`. Measures three frontend layouts side by side: port VIPs (`Frontend::Vip`,
//! the baseline), address-only VIPs (`Frontend::VipAnyPort`, what the daemon deploys for a
//! service's VIP) and published ports (`Frontend::Published`, the daemon's `ingress_sbox`).
//! Prints two markdown tables: new connections/s direct (no table, and each layout's 10,000
//! services loaded) and through each layout with 1 and 10,000 services, as ratios to direct and
//! to the port VIP; and, per layout, full-sync time at 1,000 and 10,000 services x 3 backends
//! and the time of a single backend change at both sizes, with ratios to the port VIP. Ratios,
//! not absolute numbers, are the point.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use routemesh_lb::{
    Backend, Frontend, LbSpec, NftBackend, Proto, Snat, ValidLbSpec, VirtualService,
};
use routemesh_testsupport::{in_netns, is_root, veth, Netns, RecordingNft};

/// What a step of the run can fail with.
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 10);
/// The lb namespace's address on the client side: where published ports are reached.
const LB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 11);
/// The backend namespace's addresses: address-only VIP backends are addresses, so the 1-service
/// address-only VIP gets three of them (same 3 slots as the others); the servers listen on all.
const BACKEND_ADDRS: [Ipv4Addr; 3] = [
    BACKEND,
    Ipv4Addr::new(10, 98, 0, 12),
    Ipv4Addr::new(10, 98, 0, 13),
];
const PORTS: [u16; 3] = [8080, 8081, 8082];
/// Published port of the 1 service; the others take `PUBLISHED_BASE + i`.
const PUBLISHED: u16 = 80;
const PUBLISHED_BASE: u16 = 20_000;
const ROUNDS: usize = 5;

/// The frontend layouts measured; the first is the baseline of every "ratio to port VIP".
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `ip daddr . meta l4proto . th dport`, DNAT to `addr:port`.
    Vip,
    /// `ip daddr`, DNAT to `addr` keeping the port (the daemon's VIPs).
    AnyPort,
    /// `fib daddr type local` + `meta l4proto . th dport`, DNAT to `addr:port` (published).
    Published,
}

const LAYOUTS: [Layout; 3] = [Layout::Vip, Layout::AnyPort, Layout::Published];

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Vip => "port VIP",
            Layout::AnyPort => "address-only VIP",
            Layout::Published => "published port",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Layout::Vip => "port VIPs",
            Layout::AnyPort => "address-only VIPs",
            Layout::Published => "published ports",
        }
    }

    /// Frontend of service `i` (0: the one the client connects to).
    fn frontend(self, i: u32) -> Frontend {
        let addr = if i == 0 {
            VIP
        } else {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i)
        };
        match self {
            Layout::Vip => Frontend::Vip {
                addr,
                port: 80,
                proto: Proto::Tcp,
            },
            Layout::AnyPort => Frontend::VipAnyPort { addr },
            Layout::Published => Frontend::Published {
                port: if i == 0 {
                    PUBLISHED
                } else {
                    PUBLISHED_BASE + i as u16
                },
                proto: Proto::Tcp,
            },
        }
    }

    /// Backends of the service the client connects to: the backend's three ports (three
    /// addresses for an address-only VIP, which keeps the client's port).
    fn backends(self) -> Vec<Backend> {
        match self {
            Layout::AnyPort => BACKEND_ADDRS.iter().map(|&a| Backend::new(a, 0)).collect(),
            _ => PORTS.iter().map(|&p| Backend::new(BACKEND, p)).collect(),
        }
    }

    /// Where the client connects, round-robin, to go through this layout's service.
    fn targets(self) -> Vec<SocketAddr> {
        match self {
            Layout::Vip => vec![(VIP, 80).into()],
            Layout::AnyPort => PORTS.iter().map(|&p| (VIP, p).into()).collect(),
            Layout::Published => vec![(LB_ADDR, PUBLISHED).into()],
        }
    }
}

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

fn spec(layout: Layout, extra_services: u32, change: bool) -> Res<ValidLbSpec> {
    let backend_port = if layout == Layout::AnyPort { 0 } else { 80 };
    let mut services = vec![VirtualService {
        frontend: layout.frontend(0),
        backends: layout.backends(),
        scheduler: Default::default(),
    }];
    for i in 0..extra_services {
        let base = u32::from(Ipv4Addr::new(10, 210, 0, 0)) + 4 * i;
        let backends = (1..=3)
            .map(|b| Backend::new(Ipv4Addr::from(base + b), backend_port))
            .collect();
        services.push(VirtualService {
            frontend: layout.frontend(i + 1),
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
    .map_err(Into::into)
}

struct Lab {
    client: Netns,
    lb: Netns,
    backend: Netns,
}

fn lab() -> Res<Lab> {
    let pid = std::process::id();
    let lab = Lab {
        client: Netns::new(&format!("rmbench-client-{pid}"))?,
        lb: Netns::new(&format!("rmbench-lb-{pid}"))?,
        backend: Netns::new(&format!("rmbench-be-{pid}"))?,
    };
    veth(&lab.client, "c0", &lab.lb, "l0")?;
    veth(&lab.lb, "l1", &lab.backend, "e0")?;
    lab.client
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "c0"])?;
    lab.client
        .ip(&["route", "add", "default", "via", &LB_ADDR.to_string()])?;
    lab.lb
        .ip(&["addr", "add", &format!("{LB_ADDR}/24"), "dev", "l0"])?;
    lab.lb
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "l0"])?;
    lab.lb.ip(&["addr", "add", "10.98.0.1/24", "dev", "l1"])?;
    lab.lb.sysctl("net.ipv4.ip_forward=1")?;
    for addr in BACKEND_ADDRS {
        lab.backend
            .ip(&["addr", "add", &format!("{addr}/24"), "dev", "e0"])?;
    }
    lab.backend
        .ip(&["route", "add", "default", "via", "10.98.0.1"])?;
    lab.client
        .sysctl("net.ipv4.ip_local_port_range=1024 65000")?;
    lab.backend.sysctl("net.ipv4.tcp_tw_reuse=1")?;
    // Timestamps without the per-destination random offset: every layout's connections reach
    // the backend masqueraded as 10.98.0.1:PORT, so a SYN through the published port (client
    // to LB_ADDR) can hit a TIME_WAIT left by one through a VIP (client to VIP); with offsets
    // PAWS can refuse it (then the client retries a second later: a failed connection).
    lab.client.sysctl("net.ipv4.tcp_timestamps=2")?;
    Ok(lab)
}

/// Accept loops in the backend namespace, one thread per port, living until the process ends.
fn start_servers(backend: &Netns) -> Res<()> {
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
fn conn_rate(client: &Netns, targets: &[SocketAddr], duration: Duration) -> Res<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Mutex::new(None::<String>);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = 2;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            let path = client.path();
            let first_error = &first_error;
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
                            Err(e) => {
                                if let Ok(mut first) = first_error.lock() {
                                    first.get_or_insert_with(|| format!("{target}: {e}"));
                                }
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
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
        let first = first_error.lock().ok().and_then(|f| f.clone());
        return Err(format!(
            "{failed} connections to {targets:?} failed (first: {})",
            first.unwrap_or_default()
        )
        .into());
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

/// One connection-rate case: the table loaded (none, or a layout with 1 or 10,000 services)
/// and where the client connects (through that layout's service, or straight to the backend).
struct Mode<'a> {
    name: String,
    spec: Option<&'a ValidLbSpec>,
    targets: Vec<SocketAddr>,
    /// Layout, 10,000 services loaded, through the service: finds the port VIP's same case.
    case: Option<(Layout, bool, bool)>,
}

/// Sync times of one layout at one size (medians) and the change script's size.
struct SyncRow {
    layout: Layout,
    services: u32,
    empty: f64,
    replace: f64,
    change: f64,
    bytes: usize,
}

fn bench(duration: Duration) -> Res<()> {
    let lab = lab()?;
    start_servers(&lab.backend)?;
    let mut nft = NftBackend::new(RecordingNft::new(&lab.lb));
    let table = routemesh_lb::names::DEFAULT_TABLE;
    // Per layout: 1 service, 10,000 services.
    let mut specs = Vec::new();
    for layout in LAYOUTS {
        specs.push((layout, spec(layout, 0, false)?, spec(layout, 9_999, false)?));
    }
    let direct: Vec<SocketAddr> = PORTS.iter().map(|&p| (BACKEND, p).into()).collect();

    // Connection rates, modes interleaved per round so drift hits all alike.
    let mut modes = vec![Mode {
        name: "direct".into(),
        spec: None,
        targets: direct.clone(),
        case: None,
    }];
    for (layout, _, big) in &specs {
        modes.push(Mode {
            name: format!("direct, 10,000 {} loaded", layout.plural()),
            spec: Some(big),
            targets: direct.clone(),
            case: Some((*layout, true, false)),
        });
    }
    for (layout, small, big) in &specs {
        for (spec, loaded, size) in [(small, false, "1 service"), (big, true, "10,000 services")] {
            modes.push(Mode {
                name: format!("{}, {size}", layout.name()),
                spec: Some(spec),
                targets: layout.targets(),
                case: Some((*layout, loaded, true)),
            });
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..ROUNDS {
        for (mode, samples) in modes.iter().zip(rates.iter_mut()) {
            match mode.spec {
                None => nft.delete_table(table)?,
                Some(spec) => {
                    nft.full_sync(spec)?;
                }
            }
            let rate = conn_rate(&lab.client, &mode.targets, duration)?;
            eprintln!("{}: {rate:.0} conn/s", mode.name);
            samples.push(rate);
        }
    }
    let rates: Vec<f64> = rates.into_iter().map(median).collect();

    // Sync times.
    let mut sync_rows: Vec<SyncRow> = Vec::new();
    for n in [1_000u32, 10_000] {
        for layout in LAYOUTS {
            let base = spec(layout, n - 1, false)?;
            let changed = spec(layout, n - 1, true)?;
            let (mut empty, mut replace, mut change) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                nft.delete_table(table)?;
                empty.push(ms(nft.full_sync(&base)?.elapsed));
                replace.push(ms(nft.full_sync(&base)?.elapsed));
            }
            let mut bytes = 0;
            for i in 0..10 {
                let next = if i % 2 == 0 { &changed } else { &base };
                let report = nft.sync(next)?;
                if report.mode != routemesh_lb::SyncMode::Incremental {
                    return Err(format!("expected an incremental sync, got {report:?}").into());
                }
                bytes = report.script_bytes;
                change.push(ms(report.elapsed));
            }
            eprintln!("{n} {}: sync times measured", layout.plural());
            sync_rows.push(SyncRow {
                layout,
                services: n,
                empty: median(empty),
                replace: median(replace),
                change: median(change),
                bytes,
            });
        }
    }
    nft.delete_table(table)?;

    // The same case with port VIPs: what the "ratio to port VIP" columns divide by.
    let port_vip_rate = |mode: &Mode| -> Option<f64> {
        let (_, loaded, through) = mode.case?;
        let i = modes
            .iter()
            .position(|m| m.case == Some((Layout::Vip, loaded, through)))?;
        Some(rates[i])
    };
    println!(
        "| new connections/s ({ROUNDS} x {:.0} s, median) | conn/s | ratio to direct | ratio to port VIP, same case |",
        duration.as_secs_f64()
    );
    println!("|---|---:|---:|---:|");
    for (mode, rate) in modes.iter().zip(&rates) {
        let to_vip = port_vip_rate(mode).map_or("".to_string(), |r| format!("{:.2}", rate / r));
        println!(
            "| {} | {rate:.0} | {:.2} | {to_vip} |",
            mode.name,
            rate / rates[0]
        );
    }
    println!();
    println!("| services x 3 backends | layout | full sync into empty ns | full sync replacing loaded table | single backend change (incremental) | change script |");
    println!("|---:|---|---:|---:|---:|---:|");
    for row in &sync_rows {
        let Some(vip) = sync_rows
            .iter()
            .find(|r| r.layout == Layout::Vip && r.services == row.services)
        else {
            continue;
        };
        let cell = |value: f64, baseline: f64, digits: usize| {
            if row.layout == Layout::Vip {
                format!("{value:.digits$} ms")
            } else {
                format!("{value:.digits$} ms ({:.2})", value / baseline)
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} B |",
            row.services,
            row.layout.name(),
            cell(row.empty, vip.empty, 0),
            cell(row.replace, vip.replace, 0),
            cell(row.change, vip.change, 1),
            row.bytes
        );
    }
    println!();
    println!("(in parentheses: ratio to the port VIP at the same size)");
    Ok(())
}
