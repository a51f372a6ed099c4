//! Control-plane benchmark (issue 12, item 5): not a test. Run by `bench/control/run.sh`, which
//! builds the release binary and documents the environment it reads.
//!
//! For each topology (A: one node on the local store; B: three nodes on etcd, built by
//! `routemesh::topology`), it creates one overlay, a service `web` (3 whoami tasks publishing
//! 8080:80) and a `client` task, then services with 0 replicas up to each size, one API call at
//! a time over the daemon's unix socket (no CLI process per create). At each size it reports
//! the latency of the last WINDOW creates (p50/p99), the daemons' CPU (utime+stime of every
//! daemon) spent over those creates per create, and each daemon's RSS. At the largest size it
//! scales `web` to 4 and back SCALE_RUNS times, timing the scale request until the new task
//! (`web.4`) answers through the VIP (from the client task's sandbox) and through the
//! published port of every node (from the topology's client namespace; on one node, from the
//! node's namespace to 127.0.0.1).
//!
//! Everything lives in namespaces under the work directory and is removed at the end, also on
//! error (`Topology::down`); `run.sh` removes it again with `routemesh demo --down` if this
//! program is killed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use routemesh::api::client::Client;
use routemesh::layout::RunDir;
use routemesh::topology::{spawn_in_netns, teardown_dir, TopoNode, Topology};
use routemesh::wire::{NetworkCreate, ServiceCreate, ServiceScale, ServiceView, TaskView};
use routemesh_netdev::netlink::Netlink;
use routemesh_netdev::netns;

const NETWORK: &str = "app";
const PUBLISHED: u16 = 8080;
/// The task the scale runs wait for.
const NEW_TASK: &str = "web.4";
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two probe requests on one path: the resolution of the scale latency (plus
/// the requests the load balancer sends to the other three tasks first).
const PROBE_INTERVAL: Duration = Duration::from_millis(2);
/// Answers without the old task, on every path, before the next scale run starts.
const GONE_STREAK: usize = 40;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    bin: PathBuf,
    work: PathBuf,
    out: Option<PathBuf>,
    sizes: Vec<usize>,
    topologies: Vec<Kind>,
    window: usize,
    scale_runs: usize,
    /// How long the background CPU is measured at the largest size.
    idle: Duration,
    subnet: String,
    command_line: String,
    /// The commit measured and the load average, read before the run starts.
    revision: String,
    load_before: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One node, local store.
    Single,
    /// Three nodes on etcd.
    Etcd3,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Single => "A: 1 node, local store",
            Kind::Etcd3 => "B: 3 nodes, etcd",
        }
    }
    fn dir_name(self) -> &'static str {
        match self {
            Kind::Single => "topo-a",
            Kind::Etcd3 => "topo-b",
        }
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn parse_options() -> anyhow::Result<Options> {
    let mut bin = None;
    let mut work = None;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--bin" => bin = Some(value("--bin")?),
            "--work" => work = Some(value("--work")?),
            "--out" => out = Some(value("--out")?),
            other => bail!("unknown argument {other:?} (expected --bin, --work, --out)"),
        }
    }
    let sizes_text = env_or("SIZES", "100 1000 10000");
    let mut sizes = Vec::new();
    for s in sizes_text.split_whitespace() {
        let n: usize = s
            .replace([',', '_'], "")
            .parse()
            .with_context(|| format!("SIZES: {s:?} is not a number"))?;
        sizes.push(n);
    }
    if sizes.is_empty() || sizes.windows(2).any(|w| w[0] >= w[1]) || sizes[0] == 0 {
        bail!("SIZES must be increasing positive numbers, got {sizes_text:?}");
    }
    let mut topologies = Vec::new();
    for t in env_or("TOPOLOGIES", "A B").split_whitespace() {
        topologies.push(match t {
            "A" | "a" => Kind::Single,
            "B" | "b" => Kind::Etcd3,
            other => bail!("TOPOLOGIES: {other:?} is neither A nor B"),
        });
    }
    let window: usize = env_or("WINDOW", "100")
        .parse()
        .context("WINDOW is not a number")?;
    let scale_runs: usize = env_or("SCALE_RUNS", "20")
        .parse()
        .context("SCALE_RUNS is not a number")?;
    if window == 0 {
        bail!("WINDOW must be at least 1");
    }
    let idle: u64 = env_or("IDLE_SECS", "60")
        .parse()
        .context("IDLE_SECS is not a number")?;
    Ok(Options {
        bin: bin.context("--bin PATH (the routemesh binary) is required")?,
        work: work.context("--work DIR is required")?,
        out,
        sizes,
        topologies,
        window,
        scale_runs,
        idle: Duration::from_secs(idle),
        subnet: env_or("SUBNET", "10.96.0.0/16"),
        command_line: env_or("BENCH_COMMAND", "bench/control/run.sh"),
        revision: git_rev(Path::new(env!("CARGO_MANIFEST_DIR"))),
        load_before: load_average(),
    })
}

/// Removes the topology when dropped, whatever happened.
struct Guard(Topology);

impl Drop for Guard {
    fn drop(&mut self) {
        eprintln!("tearing down {}", self.0.dir.display());
        self.0.down();
    }
}

async fn up_single(dir: &Path, bin: &Path) -> anyhow::Result<Guard> {
    let nsdir = dir.join("netns");
    let node = TopoNode {
        name: "node1".into(),
        netns: nsdir.join("node1"),
        addr: Ipv4Addr::LOCALHOST,
        dir: dir.join("node1"),
        daemon: None,
    };
    let mut guard = Guard(Topology {
        dir: dir.to_path_buf(),
        fabric: nsdir.join("fabric"),
        client: nsdir.join("client"),
        nodes: vec![node],
        etcd: None,
        bin: bin.to_path_buf(),
        lease_ttl: 10,
    });
    netns::prepare_dir(&nsdir)?;
    let topo = &mut guard.0;
    let node = &mut topo.nodes[0];
    netns::create(&node.netns)?;
    let nl = Netlink::open(&node.netns).await?;
    if let Some(lo) = nl.link("lo").await? {
        nl.set_up(&lo).await?;
    }
    std::fs::create_dir_all(&node.dir)?;
    let log = std::fs::File::create(node.dir.join("daemon.log"))?;
    let bin_dir = bin.parent().context("the binary has no directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(bin);
    cmd.arg("daemon")
        .arg("--node-name")
        .arg(&node.name)
        .arg("--state-dir")
        .arg(node.dir.join("state"))
        .arg("--run-dir")
        .arg(node.run_dir())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    node.daemon = Some(spawn_in_netns(&mut cmd, &node.netns)?);
    topo.wait_daemon(0, Duration::from_secs(30))?;
    Ok(guard)
}

async fn up(kind: Kind, opts: &Options) -> anyhow::Result<Guard> {
    let dir = opts.work.join(kind.dir_name());
    match kind {
        Kind::Single => up_single(&dir, &opts.bin).await,
        Kind::Etcd3 => match Topology::up(&dir, 3, &opts.bin, 10).await {
            Ok(t) => Ok(Guard(t)),
            Err(e) => {
                teardown_dir(&dir);
                Err(e)
            }
        },
    }
}

/// utime + stime of a process, in ms.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (did the daemon die?)"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("parsing /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .context("short /proc/PID/stat")?
            .parse::<u64>()
            .context("parsing /proc/PID/stat")
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(14)? + ticks(15)?) as f64 * 1000.0 / hz)
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

fn total_cpu_ms(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| cpu_ms(p)).sum()
}

/// Waits until the daemons are quiet (less than 20 ms of CPU, all together, over 300 ms), so
/// the work one batch of creates caused is counted with that batch and not the next. Returns
/// false when they were still busy after SETTLE_TIMEOUT (the numbers are kept, and marked).
async fn settle(pids: &[u32]) -> anyhow::Result<bool> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = total_cpu_ms(pids)?;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = total_cpu_ms(pids)?;
        if now - last < 20.0 {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("warning: the daemons were still busy {SETTLE_TIMEOUT:?} after the creates");
            return Ok(false);
        }
        last = now;
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct SizeRow {
    size: usize,
    p50: f64,
    p99: f64,
    mean_band: f64,
    window: usize,
    cpu_per_create: f64,
    rss: Vec<f64>,
    /// The daemons went idle before and after the window (else the CPU is approximate).
    settled: bool,
}

struct PathResult {
    path: String,
    samples: Vec<f64>,
}

struct TopoResult {
    kind: Kind,
    rows: Vec<SizeRow>,
    scale: Vec<PathResult>,
    /// The unmeasured first scale run, per path (ms).
    warmup: Vec<f64>,
    /// CPU of every daemon together while nothing changes at the largest size, ms per second.
    background: f64,
}

fn service(name: &str, replicas: i64, command: &[&str], publish: &[String]) -> ServiceCreate {
    ServiceCreate {
        name: name.into(),
        replicas: Some(replicas),
        networks: vec![NETWORK.into()],
        command: command.iter().map(|s| s.to_string()).collect(),
        publish: publish.to_vec(),
        ..Default::default()
    }
}

const WHOAMI: &[&str] = &["routemesh", "whoami", "--port", "80"];

/// One way to reach `web`: a namespace to send from and an address.
#[derive(Clone)]
struct Route {
    label: String,
    netns: PathBuf,
    addr: SocketAddr,
}

/// One HTTP/1.0 GET on a fresh connection; the body's `Task:` line.
fn get_task(addr: SocketAddr) -> std::io::Result<Option<String>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", addr.ip()).as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Task: "))
        .map(str::to_string))
}

/// Polls `path` from its namespace until `done(task that answered)` holds `streak` times in a
/// row; returns the time since `t0` when it first completed.
fn probe(
    path: &Route,
    t0: Instant,
    streak: usize,
    done: fn(&str) -> bool,
) -> anyhow::Result<Duration> {
    let addr = path.addr;
    let label = path.label.clone();
    netns::run_in(&path.netns, move || -> anyhow::Result<Duration> {
        let mut run = 0;
        let mut last_err = String::from("no answer yet");
        loop {
            match get_task(addr) {
                Ok(Some(task)) if done(&task) => {
                    run += 1;
                    if run >= streak {
                        return Ok(t0.elapsed());
                    }
                }
                Ok(Some(task)) => {
                    run = 0;
                    last_err = format!("last answer from {task}");
                }
                Ok(None) => last_err = "an answer without a Task: line".into(),
                Err(e) => last_err = e.to_string(),
            }
            if t0.elapsed() > PROBE_TIMEOUT {
                bail!("{label} ({addr}): timed out after {PROBE_TIMEOUT:?} ({last_err})");
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    })
    .with_context(|| format!("entering {}", path.netns.display()))?
}

/// Runs `probe` on every path at once.
async fn probe_all(
    paths: &[Route],
    t0: Instant,
    streak: usize,
    done: fn(&str) -> bool,
) -> anyhow::Result<Vec<Duration>> {
    let handles: Vec<_> = paths
        .iter()
        .cloned()
        .map(|p| tokio::task::spawn_blocking(move || probe(&p, t0, streak, done)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.context("a probe thread panicked")??);
    }
    Ok(out)
}

/// Polls until `service` has `replicas` running tasks (quietly: `wait_converged` prints).
async fn wait_running(c: &Client, service: &str, replicas: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view: ServiceView = c.get(&format!("/v1/services/{service}")).await?;
        if view.running >= replicas {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{service}: {} of {replicas} tasks running after 90 s",
                view.running
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tasks_of(c: &Client, service: &str) -> anyhow::Result<Vec<TaskView>> {
    Ok(c.get(&format!("/v1/tasks?service={service}")).await?)
}

async fn run_topology(kind: Kind, guard: &Guard, opts: &Options) -> anyhow::Result<TopoResult> {
    let topo = &guard.0;
    let c = Client::new(&topo.nodes[0].socket());
    let pids: Vec<u32> = topo
        .nodes
        .iter()
        .map(|n| {
            n.daemon
                .as_ref()
                .map(|d| d.id())
                .context("a daemon is not running")
        })
        .collect::<anyhow::Result<_>>()?;
    let _: routemesh::model::Network = c
        .post(
            "/v1/networks",
            &NetworkCreate {
                name: NETWORK.into(),
                driver: Some("overlay".into()),
                subnet: Some(opts.subnet.clone()),
                ..Default::default()
            },
        )
        .await
        .context("creating the overlay")?;
    let _: routemesh::model::Service = c
        .post(
            "/v1/services",
            &service("web", 3, WHOAMI, &[format!("{PUBLISHED}:80")]),
        )
        .await
        .context("creating web")?;
    let _: routemesh::model::Service = c
        .post(
            "/v1/services",
            &service("client", 1, &["sleep", "infinity"], &[]),
        )
        .await
        .context("creating client")?;
    wait_running(&c, "web", 3).await?;
    wait_running(&c, "client", 1).await?;

    // The paths to web: the VIP from the client task's sandbox, the published port of each node.
    let web: ServiceView = c.get("/v1/services/web").await?;
    let vip = web
        .service
        .vips
        .iter()
        .find(|v| v.network == NETWORK)
        .context("web has no VIP on the overlay")?
        .address
        .addr();
    let client_task = tasks_of(&c, "client")
        .await?
        .into_iter()
        .next()
        .context("the client service has no task")?;
    let client_node = topo
        .nodes
        .iter()
        .find(|n| n.name == client_task.node)
        .with_context(|| format!("client.1 runs on unknown node {:?}", client_task.node))?;
    let mut paths = vec![Route {
        label: format!("VIP (from client.1 on {})", client_node.name),
        netns: RunDir::new(client_node.run_dir()).task_netns(&client_task.name),
        addr: SocketAddr::from((vip, 80)),
    }];
    for n in &topo.nodes {
        let (netns, addr, from) = match kind {
            Kind::Single => (n.netns.clone(), Ipv4Addr::LOCALHOST, "the node itself"),
            Kind::Etcd3 => (topo.client.clone(), n.addr, "the client namespace"),
        };
        paths.push(Route {
            label: format!("published :{PUBLISHED} of {} (from {from})", n.name),
            netns,
            addr: SocketAddr::from((addr, PUBLISHED)),
        });
    }
    probe_all(&paths, Instant::now(), 1, |t| t.starts_with("web.")).await?;
    eprintln!("{}: web answers on every path", kind.label());

    let mut rows = Vec::new();
    let mut created = 0usize;
    for &size in &opts.sizes {
        let band = size - created;
        let window = opts.window.min(band);
        let mut band_ms = Vec::with_capacity(band);
        let mut window_ms = Vec::with_capacity(window);
        let mut cpu_start = 0.0;
        let mut settled = true;
        let band_start = Instant::now();
        while created < size {
            if size - created == window {
                settled &= settle(&pids).await?;
                cpu_start = total_cpu_ms(&pids)?;
            }
            created += 1;
            let name = format!("svc-{created}");
            let t = Instant::now();
            let _: routemesh::model::Service = c
                .post("/v1/services", &service(&name, 0, WHOAMI, &[]))
                .await
                .with_context(|| format!("creating {name}"))?;
            let d = ms(t.elapsed());
            band_ms.push(d);
            if size - created < window {
                window_ms.push(d);
            }
            if created.is_multiple_of(500) {
                eprintln!(
                    "{}: {created} services, last create {d:.1} ms",
                    kind.label()
                );
            }
        }
        settled &= settle(&pids).await?;
        let cpu = total_cpu_ms(&pids)? - cpu_start;
        let rss = pids
            .iter()
            .map(|&p| rss_mb(p))
            .collect::<anyhow::Result<_>>()?;
        let w = sorted(window_ms);
        let row = SizeRow {
            size,
            p50: pct(&w, 0.5),
            p99: pct(&w, 0.99),
            mean_band: band_ms.iter().sum::<f64>() / band_ms.len() as f64,
            window: w.len(),
            cpu_per_create: cpu / w.len() as f64,
            rss,
            settled,
        };
        eprintln!(
            "{}: {size} services (band took {:.1} s): create p50 {:.1} ms p99 {:.1} ms, CPU {:.1} ms/create",
            kind.label(),
            band_start.elapsed().as_secs_f64(),
            row.p50,
            row.p99,
            row.cpu_per_create
        );
        rows.push(row);
    }

    // What the cluster costs while nothing changes: full passes against the kernel (every
    // 30 s per node), the orchestrator's full reconcile (every 5 s), leases. It lands in a
    // window above when a periodic pass falls into it.
    let cpu_idle = total_cpu_ms(&pids)?;
    let idle_start = Instant::now();
    tokio::time::sleep(opts.idle).await;
    let background = (total_cpu_ms(&pids)? - cpu_idle) / idle_start.elapsed().as_secs_f64();
    eprintln!(
        "{}: background CPU {background:.1} ms/s over {:?}",
        kind.label(),
        opts.idle
    );

    // Run 0 is a warm-up, reported apart: the first time any service has 4 backends, each
    // load balancer gets its 4-slot group (a set, map and chain: an `nft -f`), which the later
    // runs find in place (a group that empties is kept; see lb/README.md).
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut warmup = Vec::new();
    for run in 0..=opts.scale_runs {
        let t0 = Instant::now();
        let waiting = {
            let paths = paths.clone();
            tokio::spawn(async move { probe_all(&paths, t0, 1, |t| t == NEW_TASK).await })
        };
        let _: routemesh::model::Service = c
            .post("/v1/services/web/scale", &ServiceScale { replicas: 4 })
            .await
            .context("scaling web to 4")?;
        let took = waiting.await.context("the probes panicked")??;
        if run == 0 {
            warmup = took.iter().map(|d| ms(*d)).collect();
        } else {
            for (s, d) in samples.iter_mut().zip(&took) {
                s.push(ms(*d));
            }
        }
        eprintln!(
            "{}: scale run {run}: {}",
            kind.label(),
            took.iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        let _: routemesh::model::Service = c
            .post("/v1/services/web/scale", &ServiceScale { replicas: 3 })
            .await
            .context("scaling web back to 3")?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while tasks_of(&c, "web")
            .await?
            .iter()
            .any(|t| t.name == NEW_TASK)
        {
            if Instant::now() > deadline {
                bail!("{NEW_TASK} still listed {PROBE_TIMEOUT:?} after scaling back to 3");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        probe_all(&paths, Instant::now(), GONE_STREAK, |t| {
            t.starts_with("web.") && t != NEW_TASK
        })
        .await
        .context("waiting for web.4 to leave every path")?;
    }
    let scale = paths
        .iter()
        .zip(samples)
        .map(|(p, s)| PathResult {
            path: p.label.clone(),
            samples: sorted(s),
        })
        .collect();
    Ok(TopoResult {
        kind,
        rows,
        scale,
        warmup,
        background,
    })
}

fn git_rev(root: &Path) -> String {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn report(opts: &Options, results: &[TopoResult], failures: &[String]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let now = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(s, "# routemesh control-plane benchmark\n");
    let _ = writeln!(
        s,
        "{now}, commit {}, {cores} cores, kernel {}, release build; load average {} before, {} after.  ",
        opts.revision,
        kernel.trim(),
        opts.load_before,
        load_average()
    );
    let _ = writeln!(s, "Command: `{}`  ", opts.command_line);
    let _ = writeln!(
        s,
        "Services with 0 replicas on one overlay ({}), created one at a time over the API's unix \
         socket (no CLI process), after `web` (3 whoami tasks, -p {PUBLISHED}:80) and `client` \
         (1 task). Latency and CPU over the last {} creates before each size (fewer when the \
         step is smaller); CPU is utime+stime of every daemon together, counted until the \
         daemons are idle again, divided by the creates; RSS is VmRSS of each daemon at that size.\n",
        opts.subnet, opts.window
    );
    let _ = writeln!(
        s,
        "| topology | services | create p50 ms | create p99 ms | creates measured | create mean ms (whole step) | CPU ms/create | RSS MB (each daemon) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        for row in &r.rows {
            let rss: Vec<String> = row.rss.iter().map(|m| format!("{m:.0}")).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1}{} | {} |",
                r.kind.label(),
                row.size,
                row.p50,
                row.p99,
                row.window,
                row.mean_band,
                row.cpu_per_create,
                if row.settled { "" } else { " (never idle)" },
                rss.join(" / ")
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| topology | create p50 @max ÷ @min | create p99 @max ÷ @min |"
    );
    let _ = writeln!(s, "|---|---:|---:|");
    for r in results {
        if let (Some(first), Some(last)) = (r.rows.first(), r.rows.last()) {
            let _ = writeln!(
                s,
                "| {} | {:.2} ({} ÷ {}) | {:.2} |",
                r.kind.label(),
                last.p50 / first.p50,
                last.size,
                first.size,
                last.p99 / first.p99
            );
        }
    }
    let _ = writeln!(s);
    let max = opts.sizes.last().copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "Background CPU with {max} services and nothing changing, over {} s (every daemon \
         together: full passes, the orchestrator's full reconcile, leases):\n",
        opts.idle.as_secs()
    );
    let _ = writeln!(s, "| topology | CPU ms per second |");
    let _ = writeln!(s, "|---|---:|");
    for r in results {
        let _ = writeln!(s, "| {} | {:.1} |", r.kind.label(), r.background);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Scale `web` 3 → 4 with {max} services loaded, {} runs: from the scale request until \
         {NEW_TASK} answers on the path (new connection per request, one every {} ms). One \
         warm-up run first, not in p50/p99/max (the first 4-backend service makes each load \
         balancer's 4-slot group).\n",
        opts.scale_runs,
        PROBE_INTERVAL.as_millis()
    );
    let _ = writeln!(
        s,
        "| topology | path | p50 ms | p99 ms | max ms | warm-up ms |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for r in results {
        for (i, p) in r.scale.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.kind.label(),
                p.path,
                pct(&p.samples, 0.5),
                pct(&p.samples, 0.99),
                p.samples.last().copied().unwrap_or(f64::NAN),
                r.warmup.get(i).copied().unwrap_or(f64::NAN)
            );
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed:\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = parse_options()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark needs root (it creates namespaces)");
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for &kind in &opts.topologies {
        eprintln!("{}: starting", kind.label());
        let outcome = match up(kind, &opts).await {
            Ok(guard) => {
                let r = run_topology(kind, &guard, &opts).await;
                drop(guard);
                r
            }
            Err(e) => Err(e.context("bringing the topology up")),
        };
        match outcome {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{}: failed: {e:#}", kind.label());
                failures.push(format!("{}: {e:#}", kind.label()));
            }
        }
    }
    let text = report(&opts, &results, &failures);
    println!("{text}");
    if let Some(out) = &opts.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("results written to {}", out.display());
    }
    if !failures.is_empty() {
        bail!("{} topology run(s) failed", failures.len());
    }
    Ok(())
}
