//! The IPVS backend against a real kernel, run inside the VM by `vm/tests/lb-ipvs.sh` (needs
//! root and a kernel with ip_vs). Builds namespaces client -> lb -> 3 backends (tiny TCP
//! servers answering their name, then echoing lines), programs an address-only VIP, a VIP with
//! a port and a published port through `IpvsBackend`, and checks the result with `ipvsadm` and
//! real connections. Prints `ok: ...` / `FAIL: ...` per check and a summary line; exits 1 on
//! any failure.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use routemesh_lb::ipvs::{IpvsBackend, Timeouts};
use routemesh_lb::{
    ipvs_available, prepare_namespace, Backend, Frontend, LbSpec, Proto, Scheduler, Snat, SyncMode,
    ValidLbSpec, VirtualService,
};
use routemesh_testsupport::{veth, Netns, RecordingNft};

/// What a step of the run can fail with.
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const VIP_ANY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
const VIP_PORT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 11);
const LB_FRONT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 1, 0, 11),
    Ipv4Addr::new(10, 1, 0, 12),
    Ipv4Addr::new(10, 1, 0, 13),
];
const NAMES: [&str; 3] = ["b1", "b2", "b3"];

struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, detail: impl Display) {
        if ok {
            self.passed += 1;
            println!("ok: {what}");
        } else {
            self.failed += 1;
            println!("FAIL: {what}: {detail}");
        }
    }
}

fn main() {
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    if let Err(e) = run(&mut checks) {
        checks.check("scenario ran to the end", false, e);
    }
    println!(
        "ipvs_lb_smoke: {} passed, {} failed",
        checks.passed, checks.failed
    );
    if checks.failed > 0 {
        std::process::exit(1);
    }
}

fn enter(path: &str) -> Res<()> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a valid fd; it only affects the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// A server in namespace `path` on `port`: answers `NAME:PORT\n`, then echoes lines.
fn serve(path: String, name: &'static str, port: u16) -> Res<()> {
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let listener = enter(&path).and_then(|()| {
            TcpListener::bind(("0.0.0.0", port))
                .map_err(|e| format!("{name} bind {port}: {e}").into())
        });
        let listener = match listener {
            Ok(l) => {
                let _ = ready.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = match stream.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                if writeln!(writer, "{name}:{port}").is_err() {
                    return;
                }
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(writer, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    wait.recv()
        .map_err(|_| format!("{name}: server thread died"))?
}

/// How a connection through the VIP that idled ended.
#[derive(Debug)]
enum Idle {
    Answered(String),
    ConnectFailed(std::io::ErrorKind),
    Broken(&'static str, std::io::ErrorKind),
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Idle::Answered(line) => write!(f, "answered {line:?}"),
            Idle::ConnectFailed(kind) => write!(f, "connect: {kind}"),
            Idle::Broken(step, kind) => write!(f, "{step}: {kind}"),
        }
    }
}

fn connect(addr: SocketAddr) -> Result<(TcpStream, String), std::io::Error> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    Ok((stream, line.trim().to_string()))
}

/// `count` connections to `addr` from the client namespace: answers by name (errors too).
fn spread(client: &Netns, addr: SocketAddr, count: usize) -> Res<BTreeMap<String, usize>> {
    let seen = client.run_in(|| {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..count {
            let key = match connect(addr) {
                Ok((_, name)) => name.split(':').next().unwrap_or("").to_string(),
                Err(e) => format!("error {}", e.kind()),
            };
            *seen.entry(key).or_insert(0) += 1;
        }
        seen
    })?;
    Ok(seen)
}

fn check_spread(
    checks: &mut Checks,
    what: &str,
    seen: &BTreeMap<String, usize>,
    names: &[&str],
    total: usize,
) {
    let ok = names.iter().all(|n| {
        let share = seen.get(*n).copied().unwrap_or(0) * 100 / total;
        (20..=47).contains(&share)
    }) && seen.keys().all(|k| names.contains(&k.as_str()));
    checks.check(
        &format!("{what}: {seen:?}, each 20-47%"),
        ok,
        format!("{seen:?}"),
    );
}

fn ipvsadm(lb: &Netns, args: &[&str]) -> Res<String> {
    Ok(lb.exec("/usr/sbin/ipvsadm", args)?)
}

/// Lines of `ipvsadm -Ln` as whitespace-separated words.
fn words(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn has_line(text: &str, want: &[&str]) -> bool {
    words(text)
        .iter()
        .any(|w| w.len() >= want.len() && w.iter().zip(want).all(|(a, b)| a == b))
}

fn spec(
    weights: [u32; 3],
    present: usize,
    published_weights: Option<[u32; 3]>,
) -> Res<ValidLbSpec> {
    let backends = |port: u16, weights: [u32; 3]| -> Vec<Backend> {
        BACKENDS
            .iter()
            .zip(weights)
            .take(present)
            .map(|(&addr, weight)| Backend { addr, port, weight })
            .collect()
    };
    LbSpec {
        snat: Snat::Masquerade,
        services: vec![
            VirtualService {
                frontend: Frontend::VipAnyPort { addr: VIP_ANY },
                backends: backends(0, weights),
                scheduler: Scheduler::Rr,
            },
            VirtualService {
                frontend: Frontend::Vip {
                    addr: VIP_PORT,
                    port: 8081,
                    proto: Proto::Tcp,
                },
                backends: backends(80, weights),
                scheduler: Scheduler::Wrr,
            },
            VirtualService {
                frontend: Frontend::Published {
                    port: 8080,
                    proto: Proto::Tcp,
                },
                backends: backends(80, published_weights.unwrap_or(weights)),
                scheduler: Scheduler::Rr,
            },
        ],
        ..LbSpec::default()
    }
    .validate()
    .map_err(Into::into)
}

fn run(checks: &mut Checks) -> Res<()> {
    checks.check(
        "IPVS available in this kernel",
        ipvs_available().is_ok(),
        ipvs_available()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    );

    // --- namespaces: client -> lb (bridge br0) -> b1, b2, b3 ---------------------------------
    let client = Netns::new("client")?;
    let lb = Netns::new("lb")?;
    veth(&client, "c0", &lb, "l0")?;
    client.ip(&["addr", "add", "10.0.0.2/24", "dev", "c0"])?;
    client.ip(&["route", "add", "default", "via", "10.0.0.1"])?;
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "l0"])?;
    // IPVS sees packets in LOCAL_IN: VIPs must be local addresses of the lb namespace.
    lb.ip(&["addr", "add", &format!("{VIP_ANY}/32"), "dev", "lo"])?;
    lb.ip(&["addr", "add", &format!("{VIP_PORT}/32"), "dev", "lo"])?;
    lb.ip(&["link", "add", "br0", "type", "bridge"])?;
    lb.ip(&["addr", "add", "10.1.0.1/24", "dev", "br0"])?;
    lb.ip(&["link", "set", "br0", "up"])?;
    // Replies are de-SNATed in prerouting and then forwarded back to the client.
    lb.sysctl("net.ipv4.ip_forward=1")?;
    let mut backends = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let ns = Netns::new(name)?;
        let lb_if = format!("v{name}");
        veth(&lb, &lb_if, &ns, "eth0")?;
        lb.ip(&["link", "set", &lb_if, "master", "br0"])?;
        // No default route: replies reach the lb only because of the SNAT.
        ns.ip(&["addr", "add", &format!("{}/24", BACKENDS[i]), "dev", "eth0"])?;
        serve(ns.path().display().to_string(), name, 80)?;
        serve(ns.path().display().to_string(), name, 5000)?;
        backends.push(ns);
    }

    // --- prepare + first sync -------------------------------------------------------------
    let lb_path = lb.path();
    prepare_namespace(Path::new(&lb_path), Timeouts::default())?;
    for (key, value) in routemesh_lb::ipvs::SYSCTLS {
        let got = lb.exec("cat", &[&format!("/proc/sys/{key}")])?;
        checks.check(
            &format!("sysctl {key} = {value}"),
            got.trim() == value,
            got.trim(),
        );
    }
    let out = ipvsadm(&lb, &["-L", "--timeout"])?;
    checks.check(
        "default timeouts 86400 120 300",
        out.contains("Timeout (tcp tcpfin udp): 86400 120 300"),
        &out,
    );

    let mut backend = IpvsBackend::open(Path::new(&lb_path), RecordingNft::new(&lb))?;
    let report = backend.sync(&spec([1, 1, 1], 3, None)?)?;
    checks.check(
        "first sync is full",
        report.mode == SyncMode::Full,
        format!("{report:?}"),
    );
    let marks = backend.marks().clone();
    for (frontend, mark) in &marks {
        println!("mark {mark:#x}: {frontend}");
    }
    let out = ipvsadm(&lb, &["-Ln"])?;
    println!("{out}");
    for (frontend, mark) in &marks {
        let scheduler = if matches!(frontend, Frontend::Vip { .. }) {
            "wrr"
        } else {
            "rr"
        };
        checks.check(
            &format!("FWM {mark} {scheduler} for {frontend}"),
            has_line(&out, &["FWM", &mark.to_string(), scheduler]),
            &out,
        );
    }
    for (i, addr) in BACKENDS.iter().enumerate() {
        checks.check(
            &format!(
                "{} Masq weight 1 with port 0 (address-only VIP) and 80",
                NAMES[i]
            ),
            has_line(&out, &["->", &format!("{addr}:0"), "Masq", "1"])
                && has_line(&out, &["->", &format!("{addr}:80"), "Masq", "1"]),
            &out,
        );
    }
    let listed = lb.exec("nft", &["list", "table", "ip", backend.table()])?;
    checks.check(
        "nft marking table present",
        listed.contains("map vip_addr_marks") && listed.contains("meta mark set"),
        &listed,
    );
    let report = backend.sync(&spec([1, 1, 1], 3, None)?)?;
    checks.check(
        "same spec: unchanged",
        report.mode == SyncMode::Unchanged,
        format!("{report:?}"),
    );

    // --- load balancing -------------------------------------------------------------------
    let all = ["b1", "b2", "b3"];
    let seen = spread(&client, SocketAddr::from((VIP_ANY, 80)), 300)?;
    check_spread(
        checks,
        "300 connections to the address-only VIP :80",
        &seen,
        &all,
        300,
    );
    let seen = spread(&client, SocketAddr::from((LB_FRONT, 8080)), 300)?;
    check_spread(
        checks,
        "300 connections to the published port 8080",
        &seen,
        &all,
        300,
    );
    let seen = spread(&client, SocketAddr::from((VIP_PORT, 8081)), 150)?;
    check_spread(
        checks,
        "150 connections to the VIP :8081 (wrr)",
        &seen,
        &all,
        150,
    );
    let kept = client.run_in(|| connect(SocketAddr::from((VIP_ANY, 5000))).map(|(_, n)| n))?;
    checks.check(
        "address-only VIP keeps the client's port (:5000 reaches a backend's :5000)",
        matches!(&kept, Ok(n) if n.ends_with(":5000")),
        format!("{kept:?}"),
    );

    // --- draining and removal -------------------------------------------------------------
    let report = backend.sync(&spec([1, 1, 0], 3, None)?)?;
    checks.check(
        "draining b3: incremental, 3 destination updates, marking untouched",
        report.mode == SyncMode::Incremental
            && report.changes.destinations_updated == 3
            && !report.marking_replaced,
        format!("{report:?}"),
    );
    let out = ipvsadm(&lb, &["-Ln"])?;
    checks.check(
        "draining sets weight 0, destination kept",
        has_line(&out, &["->", "10.1.0.13:0", "Masq", "0"])
            && has_line(&out, &["->", "10.1.0.13:80", "Masq", "0"]),
        &out,
    );
    let seen = spread(&client, SocketAddr::from((VIP_ANY, 80)), 60)?;
    checks.check(
        &format!("60 connections after draining avoid b3: {seen:?}"),
        !seen.contains_key("b3") && seen.values().sum::<usize>() == 60 && seen.len() == 2,
        format!("{seen:?}"),
    );
    let report = backend.sync(&spec([1, 1, 0], 2, None)?)?;
    checks.check(
        "removing b3 deletes 3 destinations",
        report.changes.destinations_removed == 3 && report.changes.services_removed == 0,
        format!("{report:?}"),
    );
    let out = ipvsadm(&lb, &["-Ln"])?;
    checks.check("b3 gone from ipvsadm", !out.contains("10.1.0.13"), &out);

    // --- a frontend without an active backend refuses at once -------------------------------
    backend.sync(&spec([1, 1, 0], 2, Some([0, 0, 0]))?)?;
    let refused = client.run_in(|| {
        let started = Instant::now();
        let result = connect(SocketAddr::from((LB_FRONT, 8080)));
        (
            result.map(|(_, n)| n).map_err(|e| e.kind()),
            started.elapsed(),
        )
    })?;
    checks.check(
        "published port with only draining backends: connection refused at once",
        refused.0 == Err(std::io::ErrorKind::ConnectionRefused)
            && refused.1 < Duration::from_secs(1),
        format!("{refused:?}"),
    );
    let seen = spread(&client, SocketAddr::from((VIP_ANY, 80)), 20)?;
    checks.check(
        "the other frontends still answer",
        seen.keys().all(|k| k == "b1" || k == "b2") && seen.values().sum::<usize>() == 20,
        format!("{seen:?}"),
    );
    backend.sync(&spec([1, 1, 0], 2, None)?)?;

    // --- idle timeout reaches the kernel ------------------------------------------------------
    let idle = |client: &Netns| -> Res<Idle> {
        let outcome = client.run_in(|| {
            let (mut stream, _) = match connect(SocketAddr::from((VIP_ANY, 80))) {
                Ok(c) => c,
                Err(e) => return Idle::ConnectFailed(e.kind()),
            };
            std::thread::sleep(Duration::from_secs(8));
            if let Err(e) = writeln!(stream, "ping") {
                return Idle::Broken("write", e.kind());
            }
            let mut line = String::new();
            match BufReader::new(stream).read_line(&mut line) {
                Ok(_) => Idle::Answered(line.trim().to_string()),
                Err(e) => Idle::Broken("read", e.kind()),
            }
        })?;
        Ok(outcome)
    };
    let answer = idle(&client)?;
    checks.check(
        "TCP idle 8 s with the default timeout: connection alive",
        matches!(&answer, Idle::Answered(a) if a == "ping"),
        answer.to_string(),
    );
    prepare_namespace(
        Path::new(&lb_path),
        Timeouts {
            tcp: 5,
            ..Timeouts::default()
        },
    )?;
    let out = ipvsadm(&lb, &["-L", "--timeout"])?;
    checks.check(
        "tcp timeout 5 set",
        out.contains("Timeout (tcp tcpfin udp): 5 120 300"),
        &out,
    );
    let answer = idle(&client)?;
    checks.check(
        &format!("TCP idle 8 s with a 5 s timeout: connection dropped ({answer})"),
        !matches!(&answer, Idle::Answered(a) if a == "ping")
            && !matches!(&answer, Idle::ConnectFailed(_)),
        answer.to_string(),
    );

    // --- teardown ---------------------------------------------------------------------------
    backend.teardown()?;
    let out = ipvsadm(&lb, &["-Ln"])?;
    checks.check("teardown leaves no FWM service", !out.contains("FWM"), &out);
    drop(backends);
    Ok(())
}
