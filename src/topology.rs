//! Several routemesh nodes on one machine, for the demo and the cluster tests: a fabric
//! namespace with an underlay bridge (192.168.100.0/24) and etcd on it, N node namespaces
//! plugged into the bridge, each running a daemon with `--store etcd://...`, and a client
//! namespace on the same underlay standing for a machine outside the cluster.
//!
//! Everything lives in namespaces made here, under one directory; `down` removes it all,
//! processes included. Built on the same drivers as the daemon (a node's underlay leg is a
//! "sandbox" of the fabric bridge).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ipnet::Ipv4Net;
use routemesh_netdev::netlink::Netlink;
use routemesh_netdev::spec::{Attachment, BridgeSpec, InterfaceSpec, Mac, SandboxSpec};
use routemesh_netdev::{bridge, netns, sandbox};

pub const FABRIC_BRIDGE: &str = "fab0";
pub const ETCD_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 254);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
const UNDERLAY_PREFIX: u8 = 24;

pub fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, 10 + i as u8)
}

pub struct TopoNode {
    pub name: String,
    pub netns: PathBuf,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
    pub daemon: Option<Child>,
}

impl TopoNode {
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        crate::layout::RunDir::new(self.run_dir()).socket()
    }
}

pub struct Topology {
    pub dir: PathBuf,
    pub fabric: PathBuf,
    pub client: PathBuf,
    pub nodes: Vec<TopoNode>,
    pub etcd: Option<Child>,
    /// The routemesh binary the daemons run.
    pub bin: PathBuf,
    pub lease_ttl: u64,
}

/// Makes `cmd` start inside the network namespace at `ns` (our mount namespace is kept, so
/// the daemons' namespace files stay visible to everyone).
pub fn spawn_in_netns(cmd: &mut Command, ns: &Path) -> anyhow::Result<Child> {
    let f = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
    let fd = f.as_raw_fd();
    // SAFETY: only setns(2) runs between fork and exec, on a descriptor opened before.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    drop(f);
    Ok(child)
}

fn underlay_leg(ns: &Path, outer: &str, addr: Ipv4Addr) -> anyhow::Result<SandboxSpec> {
    Ok(SandboxSpec {
        netns: ns.to_path_buf(),
        interfaces: vec![InterfaceSpec {
            ifname: "eth0".into(),
            outer_ifname: outer.into(),
            attach: Attachment::NodeBridge {
                bridge: FABRIC_BRIDGE.into(),
                isolated: false,
            },
            address: Ipv4Net::new(addr, UNDERLAY_PREFIX)?,
            mac: Mac::from_ipv4(addr),
            mtu: 1500,
        }],
        default_gateway: None,
    })
}

impl Topology {
    /// Builds the fabric, etcd, the client and `n` nodes with their daemons, and waits until
    /// every daemon answers.
    pub async fn up(dir: &Path, n: usize, bin: &Path, lease_ttl: u64) -> anyhow::Result<Topology> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the topology needs root (it creates namespaces)");
        }
        if which("etcd").is_none() {
            bail!("etcd not found: install Debian's etcd-server (scripts/install-deps.sh does)");
        }
        let nsdir = dir.join("netns");
        netns::prepare_dir(&nsdir)?;
        let fabric = nsdir.join("fabric");
        netns::create(&fabric)?;
        let fab = Netlink::open(&fabric).await?;
        if let Some(lo) = fab.link("lo").await? {
            fab.set_up(&lo).await?;
        }
        bridge::ensure_bridge(
            &fab,
            &BridgeSpec {
                ifname: FABRIC_BRIDGE.into(),
                gateway: Ipv4Net::new(ETCD_ADDR, UNDERLAY_PREFIX)?,
                mtu: 1500,
            },
        )
        .await?;
        let mut topo = Topology {
            dir: dir.to_path_buf(),
            fabric: fabric.clone(),
            client: nsdir.join("client"),
            nodes: Vec::new(),
            etcd: None,
            bin: bin.to_path_buf(),
            lease_ttl,
        };
        sandbox::ensure_sandbox(&fab, &underlay_leg(&topo.client, "fabcli", CLIENT_ADDR)?).await?;
        make_certs(&topo.tls_dir())?;
        topo.start_etcd()?;
        for i in 1..=n {
            let name = format!("node{i}");
            let ns = nsdir.join(&name);
            let addr = node_addr(i);
            sandbox::ensure_sandbox(&fab, &underlay_leg(&ns, &format!("fab{name}"), addr)?).await?;
            topo.nodes.push(TopoNode {
                name: name.clone(),
                netns: ns,
                addr,
                dir: dir.join(&name),
                daemon: None,
            });
        }
        for i in 0..n {
            topo.start_daemon(i)?;
        }
        for i in 0..n {
            topo.wait_daemon(i, Duration::from_secs(30))?;
        }
        Ok(topo)
    }

    pub fn etcd_url(&self) -> String {
        format!("etcd://{ETCD_ADDR}:2379")
    }

    /// The certificates `up` made: `ca.pem`, etcd's `server.pem`/`server.key`, the daemons'
    /// `client.pem`/`client.key`.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// The daemon flags that reach this etcd over TLS with a client certificate.
    pub fn etcd_tls_args(&self) -> Vec<std::ffi::OsString> {
        let tls = self.tls_dir();
        vec![
            "--etcd-cacert".into(),
            tls.join("ca.pem").into(),
            "--etcd-cert".into(),
            tls.join("client.pem").into(),
            "--etcd-key".into(),
            tls.join("client.key").into(),
        ]
    }

    pub fn start_etcd(&mut self) -> anyhow::Result<()> {
        let data = etcd_data_dir(&self.dir);
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(self.dir.join("etcd.log"))?;
        let tls = self.tls_dir();
        let mut cmd = Command::new("etcd");
        // Clients only over TLS, and only with a certificate of the topology's own CA.
        cmd.arg("--name")
            .arg("routemesh-demo")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(format!("https://{ETCD_ADDR}:2379"))
            .arg("--advertise-client-urls")
            .arg(format!("https://{ETCD_ADDR}:2379"))
            .arg("--cert-file")
            .arg(tls.join("server.pem"))
            .arg("--key-file")
            .arg(tls.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(tls.join("ca.pem"))
            .arg("--client-cert-auth")
            .arg("--listen-peer-urls")
            .arg("http://127.0.0.1:2380")
            .arg("--initial-advertise-peer-urls")
            .arg("http://127.0.0.1:2380")
            .arg("--initial-cluster")
            .arg("routemesh-demo=http://127.0.0.1:2380")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.etcd = Some(spawn_in_netns(&mut cmd, &self.fabric)?);
        let fabric = self.fabric.clone();
        wait_until(Duration::from_secs(20), "etcd to listen", || {
            let ok = netns::run_in(&fabric, || {
                TcpStream::connect_timeout(
                    &SocketAddr::from((ETCD_ADDR, 2379)),
                    Duration::from_millis(300),
                )
                .is_ok()
            });
            matches!(ok, Ok(true))
        })
    }

    pub fn stop_etcd(&mut self) {
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
    }

    pub fn start_daemon(&mut self, i: usize) -> anyhow::Result<()> {
        let url = self.etcd_url();
        let tls_args = self.etcd_tls_args();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("daemon.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("daemon")
            .arg("--node-name")
            .arg(&node.name)
            .arg("--advertise-addr")
            .arg(node.addr.to_string())
            .arg("--store")
            .arg(&url)
            .args(&tls_args)
            .arg("--lease-ttl")
            .arg(self.lease_ttl.to_string())
            .arg("--state-dir")
            .arg(node.dir.join("state"))
            .arg("--run-dir")
            .arg(node.run_dir())
            // The embedded DNS forwards nowhere in the demo: the fabric has no resolver.
            .arg("--dns")
            .arg(format!("{ETCD_ADDR}:53"))
            .env("PATH", path_with(&self.bin))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.daemon = Some(spawn_in_netns(&mut cmd, &node.netns)?);
        Ok(())
    }

    pub fn wait_daemon(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let sock = self.nodes[i].socket();
        let sbox = crate::layout::RunDir::new(self.nodes[i].run_dir()).ingress_sbox_netns();
        wait_until(timeout, &format!("{} to serve", self.nodes[i].name), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok() && sbox.exists()
        })
    }

    /// Stops a daemon (SIGTERM): its tasks and namespaces stay, as on a real restart.
    pub fn stop_daemon(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
    }

    /// Kills a node outright: its daemon, its tasks and its namespaces, as if the machine died.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let node = &self.nodes[i];
        remove_containers(&node.run_dir());
        let mut nss: Vec<PathBuf> = list_ns(&node.run_dir().join("netns"));
        nss.push(node.netns.clone());
        for ns in &nss {
            netns::kill_processes_in(ns);
        }
        remove_containers(&node.run_dir());
        for ns in nss {
            let _ = netns::remove(&ns);
        }
        let _ = netns::remove(&node.run_dir().join("netns"));
    }

    /// An HTTP GET from the client namespace; returns the body.
    pub fn client_get(&self, addr: Ipv4Addr, port: u16) -> anyhow::Result<String> {
        http_get_in(&self.client, addr, port)
    }

    /// `curl` run in the client namespace, as a user at that machine would; returns the body.
    pub fn client_curl(&self, addr: Ipv4Addr, port: u16) -> anyhow::Result<String> {
        let url = format!("http://{addr}:{port}/");
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.client.display()))
            .args(["curl", "-sS", "--max-time", "3", &url])
            .output()
            .with_context(|| format!("running curl {url} in the client namespace"))?;
        if !out.status.success() {
            anyhow::bail!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Removes everything: processes, namespaces, files.
    pub fn down(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_daemon(i);
        }
        self.stop_etcd();
        teardown_dir(&self.dir);
    }
}

/// Makes a CA, a server certificate for etcd (its underlay address and loopback) and one
/// client certificate the daemons share, with the `openssl` CLI, into `dir` (0700, keys 0600).
fn make_certs(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if which("openssl").is_none() {
        bail!("openssl not found: the demo's etcd runs with TLS (apt-get install openssl)");
    }
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running openssl {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))
    };
    write(
        "server.ext",
        format!(
            "subjectAltName=IP:{ETCD_ADDR},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )?;
    write("client.ext", "extendedKeyUsage=clientAuth\n".into())?;
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=routemesh-demo-ca",
    ];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca)?;
    for (who, cn) in [("server", "etcd"), ("client", "routemesh-daemon")] {
        let subj = format!("/CN={cn}");
        let (k, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        let mut req = vec!["req", "-subj", &subj];
        req.extend(key);
        req.extend(["-keyout", &k, "-out", &csr]);
        openssl(&req)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ])?;
    }
    for key in ["ca.key", "server.key", "client.key"] {
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {key} private"))?;
    }
    Ok(())
}

/// etcd's data: in memory (/dev/shm) when the machine has it, since every write is fsynced
/// and several test clusters on one disk would otherwise stall each other; this etcd only
/// lives as long as the topology.
fn etcd_data_dir(dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    match dir.file_name() {
        Some(name) if shm.is_dir() => shm.join(format!("{}-etcd", name.to_string_lossy())),
        _ => dir.join("etcd"),
    }
}

/// Removes a topology left running (`routemesh demo --keep`) knowing only its directory:
/// every process in its namespaces, the namespaces, the files.
pub fn teardown_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(etcd_data_dir(dir));
    let mut nsdirs = vec![dir.join("netns")];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let nested = e.path().join("run/netns");
            if nested.is_dir() {
                nsdirs.insert(0, nested);
            }
        }
    }
    // Task containers first, then what else runs in the sandboxes, then the nodes (daemons),
    // the client and the fabric (etcd).
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            remove_containers(&e.path().join("run"));
        }
    }
    for d in &nsdirs {
        for ns in list_ns(d) {
            netns::kill_processes_in(&ns);
        }
    }
    // A container a dying daemon's runtime call created after the first pass is stopped now:
    // delete it and its cgroup too.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            remove_containers(&e.path().join("run"));
        }
    }
    for d in &nsdirs {
        for ns in list_ns(d) {
            let _ = netns::remove(&ns);
        }
        let _ = netns::remove(d);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Ends every task container of the node whose run dir is `run_dir` (killed, deleted from the
/// runtime with its cgroup, its root unmounted): a stopped daemon leaves them running.
pub fn remove_containers(run_dir: &Path) {
    let run = crate::layout::RunDir::new(run_dir);
    let parent = std::fs::read_to_string(run.cgroup_parent_file()).ok();
    routemesh_runtime::container::teardown_blocking(
        &run.runtime_root(),
        &run.tasks_dir(),
        parent.as_deref().map(str::trim),
    );
}

fn path_with(bin: &Path) -> String {
    let dir = bin
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// One HTTP/1.0 GET from inside `ns`, with a short timeout.
pub fn http_get_in(ns: &Path, addr: Ipv4Addr, port: u16) -> anyhow::Result<String> {
    let r = netns::run_in(ns, move || -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let text = r.with_context(|| format!("GET http://{addr}:{port}/"))?;
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

fn list_ns(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

fn wait_until(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
