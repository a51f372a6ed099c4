//! Benchmark of the nftables backend, in namespaces it creates (root only). Run through
//! `bench/lb/run.sh`. Measures three frontend layouts side by side: port VIPs (`Frontend::Vip`,
//! the baseline), address-only VIPs (`Frontend::VipAnyPort`, what the daemon deploys for a
//! service's VIP) and published ports (`Frontend::Published`, the daemon's `ingress_sbox`).
//! Prints two markdown tables: new connections/s direct (no table, and each layout's 10,000
//! services loaded) and through each layout with 1 and 10,000 services, as ratios to direct and
//! to the port VIP; and, per layout, full-sync time at 1,000 and 10,000 services x 3 backends
//! and the time of a single backend change at both sizes, with ratios to the port VIP. Ratios,
//! not absolute numbers, are the point. `elements` (also run last): one element change with
//! 10,000 services loaded over netlink, `nft -f` and JSON, and the full resync of that table
//! replaced through `nft -f` beside the netlink resync.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use routemesh_lb::{
    Backend, Frontend, LbSpec, NftBackend, Proto, Snat, ValidLbSpec, VirtualService,
};
use routemesh_nft::{diff, Executor, NftCmd, NftNetlink, Op, Transaction, Value};
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
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("elements") {
        if let Err(e) = element_bench() {
            eprintln!("nft_bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let seconds = arg.and_then(|s| s.parse().ok()).unwrap_or(3.0);
    if let Err(e) = bench(Duration::from_secs_f64(seconds)).and_then(|()| element_bench()) {
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
                    nft.invalidate();
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
                // Without the cache a full sync replaces the table (with it, it resyncs:
                // measured by `elements`).
                nft.invalidate();
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

/// Samples per way of applying one element change (each alternates change and revert).
const NETLINK_SAMPLES: usize = 1_000;
const PROCESS_SAMPLES: usize = 100;
const RESYNC_SAMPLES: usize = 20;

/// `q` quantile (0..=1) of `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// A model value as the `nftables` crate's JSON expression.
fn json_value(v: &Value) -> Res<nftables::expr::Expression<'static>> {
    use nftables::expr::Expression;
    Ok(match v {
        Value::Addr(a) => Expression::String(a.to_string().into()),
        Value::Proto(p) => Expression::String(p.as_str().into()),
        Value::Port(p) => Expression::Number(u32::from(*p)),
        Value::Int(n) | Value::Mark(n) => Expression::Number(*n),
        other => return Err(format!("no JSON form for {other:?} in this bench").into()),
    })
}

fn json_concat(values: &[Value]) -> Res<nftables::expr::Expression<'static>> {
    use nftables::expr::{Expression, NamedExpression};
    let parts = values.iter().map(json_value).collect::<Res<Vec<_>>>()?;
    Ok(if parts.len() == 1 {
        parts.into_iter().next().ok_or("empty key")?
    } else {
        Expression::Named(NamedExpression::Concat(parts))
    })
}

/// The element transaction as an `nftables` crate batch (`add element` / `delete element`).
fn json_batch(txn: &Transaction) -> Res<nftables::schema::Nftables<'static>> {
    use nftables::expr::Expression;
    use nftables::schema::{Element, NfListObject};
    use nftables::types::NfFamily;
    let mut batch = nftables::batch::Batch::new();
    for op in &txn.ops {
        match op {
            Op::AddElements {
                table,
                collection,
                elements,
            } => {
                let elem = elements
                    .iter()
                    .map(|e| {
                        let key = json_concat(&e.key)?;
                        Ok(if e.data.is_empty() {
                            key
                        } else {
                            Expression::List(vec![key, json_concat(&e.data)?])
                        })
                    })
                    .collect::<Res<Vec<_>>>()?;
                batch.add(NfListObject::Element(Element {
                    family: NfFamily::IP,
                    table: table.clone().into(),
                    name: collection.clone().into(),
                    elem: elem.into(),
                }));
            }
            Op::DeleteElements {
                table,
                collection,
                keys,
            } => {
                let elem = keys
                    .iter()
                    .map(|k| json_concat(k))
                    .collect::<Res<Vec<_>>>()?;
                batch.delete(NfListObject::Element(Element {
                    family: NfFamily::IP,
                    table: table.clone().into(),
                    name: collection.clone().into(),
                    elem: elem.into(),
                }));
            }
            other => return Err(format!("not an element change: {other:?}").into()),
        }
    }
    Ok(batch.to_nftables())
}

/// Times `apply` over `samples` runs, alternating the change and its revert.
fn time_changes(
    samples: usize,
    mut apply: impl FnMut(&Transaction) -> Res<()>,
    there: &Transaction,
    back: &Transaction,
) -> Res<Vec<f64>> {
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let txn = if i % 2 == 0 { there } else { back };
        let start = Instant::now();
        apply(txn)?;
        out.push(ms(start.elapsed()));
    }
    // Leave the table as it was loaded.
    if samples % 2 == 1 {
        apply(back)?;
    }
    Ok(out)
}

/// One element change with 10,000 services loaded, three ways; and the full resync of that
/// table both ways: replaced through `nft -f`, and resynced (`SyncMode::Resync`, structure
/// through `nft -f`, elements compared and sent over netlink).
fn element_bench() -> Res<()> {
    let ns = Netns::new(&format!("rmbench-el-{}", std::process::id()))?;
    let services = 10_000u32;
    let base = spec(Layout::Vip, services - 1, false)?;
    // One backend of one service swapped for another at the same slot (the last, so the
    // slots before it keep theirs): one map element out, one in.
    let mut swapped: Vec<VirtualService> = base.services().to_vec();
    let service = swapped.get_mut(1).ok_or("no service 1")?;
    let last = service.backends.last_mut().ok_or("no backend")?;
    last.addr = Ipv4Addr::new(10, 220, 0, 1);
    let changed = LbSpec {
        snat: Snat::Masquerade,
        services: swapped,
        ..LbSpec::default()
    }
    .validate()?;
    let (base_table, changed_table) = (routemesh_lb::plan(&base), routemesh_lb::plan(&changed));
    let there =
        diff::incremental(&base_table, &changed_table).ok_or("change is not incremental")?;
    let back = diff::incremental(&changed_table, &base_table).ok_or("revert is not incremental")?;
    if there.elements_added() != 1 || there.elements_removed() != 1 {
        return Err(format!("expected one element out and one in:\n{there}").into());
    }
    let mut loader = NftBackend::new(NftCmd::in_netns(ns.path()));
    let mut resync = Vec::new();
    for _ in 0..RESYNC_SAMPLES {
        // Forgetting the cache makes every full sync replace the table (`nft -f`).
        loader.invalidate();
        resync.push(ms(loader.full_sync(&base)?.elapsed));
    }
    eprintln!("full resync of {services} services (replace) measured");
    // The resync the agent's periodic full sync runs: structure through `nft -f`, every set
    // flushed and refilled in one netlink batch.
    let mut hybrid = NftBackend::new(NftNetlink::in_netns(ns.path()));
    hybrid.full_sync(&base)?;
    let mut resync_netlink = Vec::new();
    let mut structure_bytes = 0;
    for _ in 0..RESYNC_SAMPLES {
        let report = hybrid.full_sync(&base)?;
        if report.mode != routemesh_lb::SyncMode::Resync {
            return Err(format!("expected a resync, got {report:?}").into());
        }
        structure_bytes = report.script_bytes;
        resync_netlink.push(ms(report.elapsed));
    }
    eprintln!("full resync of {services} services (structure + netlink elements) measured");

    let netlink = NftNetlink::in_netns(ns.path());
    let text = NftCmd::in_netns(ns.path());
    let via_netlink = time_changes(
        NETLINK_SAMPLES,
        |t| netlink.apply_elements(t).map_err(Into::into),
        &there,
        &back,
    )?;
    eprintln!("netlink measured");
    let via_text = time_changes(
        PROCESS_SAMPLES,
        |t| text.apply(t).map_err(Into::into),
        &there,
        &back,
    )?;
    eprintln!("nft -f measured");
    let (json_there, json_back) = (json_batch(&there)?, json_batch(&back)?);
    // The crate runs `nft` in the calling thread's namespace: run it from one inside.
    let via_json = in_netns(&ns.path(), || {
        time_changes(
            PROCESS_SAMPLES,
            |t| {
                let batch = if t == &there { &json_there } else { &json_back };
                nftables::helper::apply_ruleset(batch).map_err(Into::into)
            },
            &there,
            &back,
        )
    })??;
    eprintln!("nftables crate measured");
    // The table must be what it was loaded as.
    let listed = ns.exec("nft", &["list", "table", "ip", &base_table.name])?;
    if !listed.contains("10.200.0.1 . tcp . 80 . 0 : 10.210.0.1 . 80") {
        return Err("the element changes did not leave the loaded table".into());
    }

    let p50 = quantile(&via_netlink, 0.5);
    println!();
    println!(
        "One element change (a backend map: 1 element deleted + 1 added, one transaction) with 10,000 port VIPs x 3 backends loaded (numbers in ms); the full replacement rewrites that table."
    );
    println!();
    println!("| way | samples | p50 | p99 | p50 ratio to netlink |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [
        ("in process, netlink batch (`NftNetlink`)", &via_netlink),
        ("`nft -f -` text (`NftCmd`)", &via_text),
        ("`nftables` crate (JSON, `nft -j -f -`)", &via_json),
        ("full replacement, 10,000 services (`nft -f -`)", &resync),
    ] {
        let (a, b) = (quantile(v, 0.5), quantile(v, 0.99));
        let ratio = a / p50;
        println!(
            "| {name} | {} | {a:.3} ms | {b:.3} ms | {ratio:.0}x |",
            v.len()
        );
    }
    println!();
    println!(
        "Full resync of the loaded table (10,000 port VIPs x 3 backends, {} elements), both ways:",
        base_table.element_count()
    );
    println!();
    println!("| full resync | samples | p50 | p99 | p50 ratio to resync |");
    println!("|---|---:|---:|---:|---:|");
    let resync_p50 = quantile(&resync_netlink, 0.5);
    for (name, v) in [
        (
            format!("resync (`NftNetlink`): structure `nft -f` ({structure_bytes} B) while the sets are listed over netlink, then one batch with the difference"),
            &resync_netlink,
        ),
        ("replace: whole table through `nft -f -`".to_string(), &resync),
    ] {
        let (a, b) = (quantile(v, 0.5), quantile(v, 0.99));
        println!(
            "| {name} | {} | {a:.1} ms | {b:.1} ms | {:.1}x |",
            v.len(),
            a / resync_p50
        );
    }
    Ok(())
}
