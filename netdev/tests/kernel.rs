//! Kernel tests: need root. Each test makes its own namespaces (names include the pid) and a
//! fixture removes them on drop, also when the test panics. Results are checked with `ip`,
//! `bridge`, `nft` and `ping` run inside the namespaces, never with this crate's own readers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use routemesh_netdev::firewall::{self, Masquerade, NodeFirewallSpec};
use routemesh_netdev::spec::{
    Attachment, BridgeSpec, InterfaceSpec, Mac, OverlaySpec, SandboxSpec,
};
use routemesh_netdev::{bridge, netns, overlay, sandbox, Netlink};
use routemesh_testsupport::{
    errtext, nsenter, output, root_or_skip, text, unique, wait_for_or_timeout, Netns,
};

/// Test-owned namespaces: node namespaces plus a prepared dir for the namespaces the code
/// under test creates. Everything is removed on drop.
struct World {
    id: String,
    nodes: Vec<Netns>,
    dir: PathBuf,
}

impl World {
    fn new() -> World {
        let id = unique("i");
        let dir = std::env::temp_dir().join(&id);
        netns::prepare_dir(&dir).unwrap_or_else(|e| panic!("prepare_dir: {e}"));
        World {
            id,
            nodes: Vec::new(),
            dir,
        }
    }

    /// A new node namespace; returns its path under /run/netns.
    fn node(&mut self, suffix: &str) -> PathBuf {
        let ns = Netns::new(&format!("{}-{suffix}", self.id)).unwrap_or_else(|e| panic!("{e}"));
        let path = ns.path();
        self.nodes.push(ns);
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for name in netns::list(&self.dir).unwrap_or_default() {
            let _ = netns::remove(&self.dir.join(name));
        }
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
        // The node namespaces go when `nodes` drops.
    }
}

/// Whether the command succeeded, and what it printed (stdout, then stderr).
fn both(o: &std::process::Output) -> (bool, String) {
    (o.status.success(), format!("{}{}", text(o), errtext(o)))
}

fn try_run(cmd: &str, args: &[&str]) -> (bool, String) {
    both(&output(Command::new(cmd).args(args)))
}

fn run(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = try_run(cmd, args);
    assert!(ok, "{cmd} {args:?} failed: {text}");
    text
}

/// Runs a command inside the namespace file `ns`.
fn ns_run(ns: &Path, args: &[&str]) -> String {
    let (ok, text) = ns_try(ns, args);
    assert!(ok, "in {}: {args:?} failed: {text}", ns.display());
    text
}

fn ns_try(ns: &Path, args: &[&str]) -> (bool, String) {
    both(&nsenter(ns, args))
}

fn ifindex(ns: &Path, ifname: &str) -> u32 {
    let out = ns_run(ns, &["ip", "-o", "link", "show", "dev", ifname]);
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out}"))
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn mac(s: &str) -> Mac {
    Mac::from_ipv4(ip(s))
}

fn overlay_spec(netns: PathBuf, gateway: &str, local: Option<Ipv4Addr>) -> OverlaySpec {
    OverlaySpec {
        netns,
        vxlan_ifname: "vxlan4096".into(),
        vni: 4096,
        local_vtep: local,
        gateway: net(gateway),
        mtu: 1450,
        fdb: vec![],
        neighbours: vec![],
        addresses: vec![],
        vips: vec![],
    }
}

fn task(
    netns: PathBuf,
    outer: &str,
    attach: Attachment,
    addr: &str,
    gw: Option<&str>,
) -> SandboxSpec {
    let address = net(addr);
    SandboxSpec {
        netns,
        interfaces: vec![InterfaceSpec {
            ifname: "eth0".into(),
            outer_ifname: outer.into(),
            attach,
            address,
            mac: Mac::from_ipv4(address.addr()),
            mtu: 1450,
        }],
        default_gateway: gw.map(ip),
    }
}

/// The overlay's VXLAN fdb holds exactly `fdb` (sorted `bridge fdb` lines with a destination)
/// and br0 and the VXLAN device each exactly `neighbours` (sorted permanent `ip neigh` lines).
fn assert_fdb_and_neighbours(ov_path: &Path, fdb: &[&str], neighbours: &[&str]) {
    let shown = ns_run(ov_path, &["bridge", "fdb", "show", "dev", "vxlan4096"]);
    let shown = shown.replace(" link-netnsid 0", "");
    assert_eq!(
        sorted_lines(&shown, |l| l.contains(" dst ")),
        fdb,
        "{shown}"
    );
    for dev in ["br0", "vxlan4096"] {
        let neigh = ns_run(ov_path, &["ip", "neigh", "show", "dev", dev]);
        assert_eq!(
            sorted_lines(&neigh, |l| l.contains("PERMANENT")),
            neighbours,
            "{dev}: {neigh}"
        );
    }
}

fn sorted_lines(text: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| keep(l))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn netns_create_adopt_list_sysctl_remove() {
    if !root_or_skip("netns_create_adopt_list_sysctl_remove") {
        return;
    }
    let world = World::new();
    let mountinfo = run("cat", &["/proc/self/mountinfo"]);
    let dir = world.dir.display().to_string();
    let entry = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(dir.as_str()));
    assert!(
        entry.is_some_and(|l| l.contains(" shared:")),
        "{dir} not a shared mount: {entry:?}"
    );
    netns::prepare_dir(&world.dir).unwrap_or_else(|e| panic!("second prepare_dir: {e}"));
    let mountinfo = run("cat", &["/proc/self/mountinfo"]);
    let mounts = mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(dir.as_str()));
    assert_eq!(mounts.count(), 1, "prepare_dir must not stack bind mounts");
    let path = world.path("sb-x");
    netns::create(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(netns::is_mounted(&path));
    let inode = ns_run(&path, &["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
    netns::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let again = ns_run(&path, &["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
    assert_eq!(inode, again, "second create must adopt the namespace");
    let own = run("stat", &["-L", "-c", "%i", "/proc/self/ns/net"]);
    assert_ne!(inode, own, "must be a new namespace");

    let stale = world.path("stale");
    std::fs::write(&stale, b"").unwrap_or_else(|e| panic!("{e}"));
    assert!(!netns::is_mounted(&stale));
    netns::create(&stale).unwrap_or_else(|e| panic!("{e}"));
    assert!(netns::is_mounted(&stale));
    assert_eq!(
        netns::list(&world.dir).ok(),
        Some(vec!["sb-x".into(), "stale".into()])
    );

    netns::set_sysctl(Some(&path), "net/ipv4/ip_forward", "1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ns_run(&path, &["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let ino = netns::run_in(&path, || std::fs::read_link("/proc/thread-self/ns/net"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ino.to_string_lossy().contains(inode.trim()),
        "{ino:?} vs {inode}"
    );

    netns::remove(&path).unwrap_or_else(|e| panic!("{e}"));
    netns::remove(&path).unwrap_or_else(|e| panic!("second remove: {e}"));
    assert!(!path.exists());
}

#[tokio::test]
async fn bridge_gets_exactly_its_address_and_refuses_overlap() {
    if !root_or_skip("bridge_gets_exactly_its_address_and_refuses_overlap") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("br");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = BridgeSpec {
        ifname: "rm_gwbridge".into(),
        gateway: net("172.18.0.1/16"),
        mtu: 1500,
    };
    bridge::ensure_bridge(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let index = ifindex(&node_path, "rm_gwbridge");
    ns_run(
        &node_path,
        &["ip", "addr", "add", "172.18.9.9/16", "dev", "rm_gwbridge"],
    );
    bridge::ensure_bridge(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ifindex(&node_path, "rm_gwbridge"), index);
    let shown = ns_run(
        &node_path,
        &["ip", "-d", "-4", "addr", "show", "dev", "rm_gwbridge"],
    );
    assert!(shown.contains("inet 172.18.0.1/16"), "{shown}");
    assert!(!shown.contains("172.18.9.9"), "stray address kept: {shown}");
    assert!(
        shown.contains(",UP") && shown.contains("mtu 1500"),
        "{shown}"
    );
    // The bridge keeps the gateway's MAC when a port with a lower one comes and goes (a bridge
    // with no MAC of its own would take that port's, then change it when the port left).
    let mac = || {
        ns_run(
            &node_path,
            &["ip", "-br", "link", "show", "dev", "rm_gwbridge"],
        )
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
    };
    assert_eq!(mac(), "02:42:ac:12:00:01");
    ns_run(
        &node_path,
        &[
            "ip",
            "link",
            "add",
            "lowport",
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "lowpeer",
        ],
    );
    ns_run(
        &node_path,
        &["ip", "link", "set", "lowport", "master", "rm_gwbridge"],
    );
    assert_eq!(mac(), "02:42:ac:12:00:01");
    ns_run(&node_path, &["ip", "link", "del", "lowport"]);
    assert_eq!(mac(), "02:42:ac:12:00:01");

    ns_run(
        &node_path,
        &["ip", "route", "add", "10.50.0.0/16", "dev", "lo"],
    );
    let overlap = BridgeSpec {
        ifname: "rm-br-x".into(),
        gateway: net("10.50.3.1/24"),
        mtu: 1500,
    };
    let err = bridge::ensure_bridge(&node, &overlap)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .unwrap_or("")
            .contains("overlaps route 10.50.0.0/16"),
        "{err:?}"
    );

    bridge::remove_bridge(&node, "rm_gwbridge")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    bridge::remove_bridge(&node, "rm_gwbridge")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!ns_try(&node_path, &["ip", "link", "show", "rm_gwbridge"]).0);
}

#[tokio::test]
async fn overlay_device_fdb_and_neighbours_are_exact() {
    if !root_or_skip("overlay_device_fdb_and_neighbours_are_exact") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("ov");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ov_path = world.path("ov-app");
    let mut spec = overlay_spec(ov_path.clone(), "10.0.1.1/24", None);
    spec.fdb = vec![
        (mac("10.0.1.20"), ip("192.168.99.2")),
        (mac("10.0.1.21"), ip("192.168.99.3")),
    ];
    spec.neighbours = vec![
        (ip("10.0.1.20"), mac("10.0.1.20")),
        (ip("10.0.1.21"), mac("10.0.1.21")),
    ];
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let vx = ns_run(&ov_path, &["ip", "-d", "link", "show", "dev", "vxlan4096"]);
    for want in [
        "vxlan id 4096",
        "dstport 4789",
        "nolearning",
        "mtu 1450",
        "master br0",
        ",UP",
    ] {
        assert!(vx.contains(want), "missing {want:?} in {vx}");
    }
    let br = ns_run(&ov_path, &["ip", "-4", "addr", "show", "dev", "br0"]);
    assert!(
        br.contains("inet 10.0.1.1/24") && br.contains("mtu 1450"),
        "{br}"
    );
    let in_node = ns_run(&node_path, &["ip", "-o", "link", "show"]);
    assert!(
        !in_node.contains("vxlan") && !in_node.contains("rmt"),
        "left in node ns: {in_node}"
    );
    // No address of its own yet: br0 answers with the gateway's MAC. Once the node has one,
    // br0 takes that address's MAC (what remote nodes' neighbour entries say), and the
    // static neighbours survive the change.
    let br_link = ns_run(&ov_path, &["ip", "link", "show", "dev", "br0"]);
    assert!(
        br_link.contains("link/ether 02:42:0a:00:01:01"),
        "{br_link}"
    );
    spec.addresses = vec![net("10.0.1.200/32")];
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let br_link = ns_run(&ov_path, &["ip", "link", "show", "dev", "br0"]);
    assert!(
        br_link.contains("link/ether 02:42:0a:00:01:c8"),
        "{br_link}"
    );
    let neigh = ns_run(&ov_path, &["ip", "neigh", "show", "dev", "br0"]);
    assert!(
        neigh.contains("10.0.1.21 lladdr 02:42:0a:00:01:15 PERMANENT"),
        "{neigh}"
    );
    spec.addresses = vec![];

    // An entry someone else added is removed, a changed list is applied exactly.
    ns_run(
        &ov_path,
        &[
            "bridge",
            "fdb",
            "add",
            "02:42:0a:00:01:63",
            "dev",
            "vxlan4096",
            "dst",
            "192.168.99.9",
        ],
    );
    spec.fdb = vec![
        (mac("10.0.1.21"), ip("192.168.99.4")),
        (mac("10.0.1.22"), ip("192.168.99.5")),
    ];
    spec.neighbours = vec![
        (ip("10.0.1.21"), mac("10.0.1.22")),
        (ip("10.0.1.22"), mac("10.0.1.22")),
    ];
    let vx_index = ifindex(&ov_path, "vxlan4096");
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ifindex(&ov_path, "vxlan4096"), vx_index, "vxlan recreated");

    assert_fdb_and_neighbours(
        &ov_path,
        &[
            "02:42:0a:00:01:15 dst 192.168.99.4 self permanent",
            "02:42:0a:00:01:16 dst 192.168.99.5 self permanent",
        ],
        &[
            "10.0.1.21 lladdr 02:42:0a:00:01:16 PERMANENT",
            "10.0.1.22 lladdr 02:42:0a:00:01:16 PERMANENT",
        ],
    );

    // A remote task left (.22), one came (.23), .21 has its own MAC again: entries changed
    // alone, with nothing read back, end exactly where a whole ensure would.
    let change = overlay::EntryChange {
        fdb_added: vec![
            (mac("10.0.1.21"), ip("192.168.99.4")),
            (mac("10.0.1.23"), ip("192.168.99.6")),
        ],
        fdb_removed: vec![(mac("10.0.1.22"), ip("192.168.99.5"))],
        neighbours_set: vec![
            (ip("10.0.1.21"), mac("10.0.1.21")),
            (ip("10.0.1.23"), mac("10.0.1.23")),
        ],
        neighbours_removed: vec![ip("10.0.1.22")],
        ..overlay::EntryChange::default()
    };
    spec.fdb = vec![
        (mac("10.0.1.21"), ip("192.168.99.4")),
        (mac("10.0.1.23"), ip("192.168.99.6")),
    ];
    spec.neighbours = vec![
        (ip("10.0.1.21"), mac("10.0.1.21")),
        (ip("10.0.1.23"), mac("10.0.1.23")),
    ];
    overlay::change_entries(&spec, &change)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_fdb_and_neighbours(
        &ov_path,
        &[
            "02:42:0a:00:01:15 dst 192.168.99.4 self permanent",
            "02:42:0a:00:01:17 dst 192.168.99.6 self permanent",
        ],
        &[
            "10.0.1.21 lladdr 02:42:0a:00:01:15 PERMANENT",
            "10.0.1.23 lladdr 02:42:0a:00:01:17 PERMANENT",
        ],
    );

    overlay::remove_overlay(&ov_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    overlay::remove_overlay(&ov_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!ov_path.exists());
    // The VXLAN socket is released: the same VNI can be created again.
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn sandboxes_on_one_overlay_ping_and_ensure_is_a_noop() {
    if !root_or_skip("sandboxes_on_one_overlay_ping_and_ensure_is_a_noop") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("sb");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ov_path = world.path("ov-app");
    let spec = overlay_spec(ov_path.clone(), "10.0.1.1/24", None);
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attach = Attachment::Overlay {
        netns: ov_path.clone(),
    };
    let a = task(
        world.path("sb-a"),
        "veth-a0",
        attach.clone(),
        "10.0.1.2/24",
        None,
    );
    let b = task(
        world.path("sb-b"),
        "veth-b0",
        attach.clone(),
        "10.0.1.3/24",
        None,
    );
    for t in [&a, &b] {
        sandbox::ensure_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    ns_run(&a.netns, &["ping", "-c1", "-W1", "10.0.1.3"]);
    ns_run(&b.netns, &["ping", "-c1", "-W1", "10.0.1.2"]);
    ns_run(&a.netns, &["ping", "-c1", "-W1", "10.0.1.1"]);

    let eth0 = ns_run(&a.netns, &["ip", "link", "show", "dev", "eth0"]);
    assert!(
        eth0.contains("link/ether 02:42:0a:00:01:02") && eth0.contains("mtu 1450"),
        "{eth0}"
    );
    let outer = ns_run(&ov_path, &["ip", "link", "show", "dev", "veth-a0"]);
    assert!(
        outer.contains("master br0") && outer.contains("mtu 1450"),
        "{outer}"
    );

    let before = (ifindex(&a.netns, "eth0"), ifindex(&ov_path, "veth-a0"));
    sandbox::ensure_sandbox(&node, &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (ifindex(&a.netns, "eth0"), ifindex(&ov_path, "veth-a0")),
        before
    );

    for t in [&a, &b] {
        sandbox::remove_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sandbox::remove_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.netns.exists());
    }
    let left = ns_run(&ov_path, &["ip", "-o", "link", "show", "type", "veth"]);
    assert!(left.trim().is_empty(), "veths left in overlay ns: {left}");
}

#[tokio::test]
async fn overlay_vips_are_local_routes_a_sandbox_reaches() {
    if !root_or_skip("overlay_vips_are_local_routes_a_sandbox_reaches") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("vip");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ov_path = world.path("ov-vip");
    let mut spec = overlay_spec(ov_path.clone(), "10.0.1.1/24", None);
    spec.vips = vec![ip("10.0.1.200"), ip("10.0.1.201")];
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a = task(
        world.path("vip-a"),
        "veth-va0",
        Attachment::Overlay {
            netns: ov_path.clone(),
        },
        "10.0.1.2/24",
        None,
    );
    sandbox::ensure_sandbox(&node, &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let routes = |p: &Path| {
        sorted_lines(
            &ns_run(
                p,
                &[
                    "ip", "-4", "route", "show", "table", "local", "type", "local", "dev", "br0",
                ],
            ),
            |_| true,
        )
    };
    assert_eq!(
        routes(&ov_path),
        [
            "local 10.0.1.1 proto kernel scope host src 10.0.1.1",
            "local 10.0.1.200 proto static scope host",
            "local 10.0.1.201 proto static scope host",
        ]
    );
    // Answered like an address (ARP, then local delivery), without being one. Pings are
    // polled: the sandbox's neighbour entry for an address that did not answer a moment ago
    // is retried on the kernel's schedule.
    let reaches = |to: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (ok, out) = ns_try(&a.netns, &["ping", "-c1", "-W1", to]);
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{to} never answered: {out}"
            );
            ns_try(&a.netns, &["ip", "neigh", "flush", "dev", "eth0"]);
        }
    };
    reaches("10.0.1.200");
    let addrs = ns_run(&ov_path, &["ip", "-o", "-4", "addr", "show", "dev", "br0"]);
    assert!(!addrs.contains("10.0.1.200"), "{addrs}");
    // A neighbour check: an address in the subnet that is no VIP is not answered.
    let (ok, _) = ns_try(&a.netns, &["ping", "-c1", "-W1", "10.0.1.202"]);
    assert!(!ok, "10.0.1.202 is no VIP and must not answer");

    // One VIP changed alone; a full ensure then finds nothing to do and keeps the kernel's.
    let change = overlay::EntryChange {
        vips_added: vec![ip("10.0.1.202")],
        vips_removed: vec![ip("10.0.1.200")],
        ..overlay::EntryChange::default()
    };
    overlay::change_entries(&spec, &change)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spec.vips = vec![ip("10.0.1.201"), ip("10.0.1.202")];
    reaches("10.0.1.202");
    let (ok, _) = ns_try(&a.netns, &["ping", "-c1", "-W1", "10.0.1.200"]);
    assert!(!ok, "10.0.1.200 was removed");
    // A stray local route is removed by the full ensure; an empty list removes them all.
    ns_run(
        &ov_path,
        &[
            "ip",
            "route",
            "add",
            "local",
            "10.0.1.250",
            "dev",
            "br0",
            "table",
            "local",
            "proto",
            "static",
        ],
    );
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let now = routes(&ov_path).join("\n");
    assert!(
        now.contains("local 10.0.1.202 ") && !now.contains("10.0.1.250"),
        "{now}"
    );
    spec.vips.clear();
    overlay::ensure_overlay(&node, &spec)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        routes(&ov_path),
        ["local 10.0.1.1 proto kernel scope host src 10.0.1.1"]
    );
    sandbox::remove_sandbox(&node, &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn sandbox_on_node_bridge_has_default_route_and_is_recreated_on_change() {
    if !root_or_skip("sandbox_on_node_bridge_has_default_route_and_is_recreated_on_change") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("gw");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = BridgeSpec {
        ifname: "rm_gwbridge".into(),
        gateway: net("172.18.0.1/16"),
        mtu: 1450,
    };
    bridge::ensure_bridge(&node, &gw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attach = Attachment::NodeBridge {
        bridge: "rm_gwbridge".into(),
        isolated: false,
    };
    let mut t = task(
        world.path("sb-web1"),
        "veth-w1",
        attach,
        "172.18.0.5/16",
        Some("172.18.0.1"),
    );
    sandbox::ensure_sandbox(&node, &t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let route = ns_run(&t.netns, &["ip", "route", "show", "default"]);
    assert!(route.contains("default via 172.18.0.1 dev eth0"), "{route}");
    ns_run(&t.netns, &["ping", "-c1", "-W1", "172.18.0.1"]);
    let outer = ns_run(&node_path, &["ip", "link", "show", "dev", "veth-w1"]);
    assert!(outer.contains("master rm_gwbridge"), "{outer}");
    let lo = ns_run(&t.netns, &["ip", "link", "show", "dev", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");

    let index = ifindex(&t.netns, "eth0");
    sandbox::ensure_sandbox(&node, &t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ifindex(&t.netns, "eth0"),
        index,
        "second ensure must be a no-op"
    );

    t.interfaces[0].address = net("172.18.0.6/16");
    t.interfaces[0].mac = mac("172.18.0.6");
    sandbox::ensure_sandbox(&node, &t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let eth0 = ns_run(&t.netns, &["ip", "addr", "show", "dev", "eth0"]);
    assert!(
        eth0.contains("inet 172.18.0.6/16") && !eth0.contains("172.18.0.5"),
        "{eth0}"
    );
    assert!(eth0.contains("02:42:ac:12:00:06"), "{eth0}");
    let route = ns_run(&t.netns, &["ip", "route", "show", "default"]);
    assert!(route.contains("default via 172.18.0.1 dev eth0"), "{route}");

    sandbox::remove_sandbox(&node, &t)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!t.netns.exists());
    let veths = ns_run(&node_path, &["ip", "-o", "link", "show", "type", "veth"]);
    assert!(veths.trim().is_empty(), "veths left in node ns: {veths}");
}

#[tokio::test]
async fn macvlan_legs_are_made_inside_the_sandbox_and_reach_each_other() {
    if !root_or_skip("macvlan_legs_are_made_inside_the_sandbox_and_reach_each_other") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("mv");
    // The parent: one end of a veth pair standing in for the node's NIC (no dummy driver here).
    ns_run(
        &node_path,
        &[
            "ip", "link", "add", "mvparent", "type", "veth", "peer", "name", "mvwire",
        ],
    );
    ns_run(&node_path, &["ip", "link", "set", "mvparent", "up"]);
    ns_run(&node_path, &["ip", "link", "set", "mvwire", "up"]);
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attach = Attachment::Macvlan {
        parent: "mvparent".into(),
    };
    let a = task(
        world.path("sb-mva"),
        "",
        attach.clone(),
        "192.168.77.5/24",
        None,
    );
    let b = task(world.path("sb-mvb"), "", attach, "192.168.77.6/24", None);
    for t in [&a, &b] {
        sandbox::ensure_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let leg = ns_run(&a.netns, &["ip", "-d", "addr", "show", "dev", "eth0"]);
    assert!(leg.contains("macvlan mode bridge"), "{leg}");
    assert!(leg.contains("02:42:c0:a8:4d:05"), "task MAC: {leg}");
    assert!(leg.contains("inet 192.168.77.5/24"), "{leg}");
    // Made in place: nothing of it, not even a temporary name, was left in the node namespace.
    let node_links = ns_run(&node_path, &["ip", "-o", "link", "show", "type", "macvlan"]);
    assert!(
        node_links.trim().is_empty(),
        "macvlan left in node ns: {node_links}"
    );
    // Two legs on one parent in bridge mode reach each other.
    ns_run(&a.netns, &["ping", "-c1", "-W2", "192.168.77.6"]);

    let index = ifindex(&a.netns, "eth0");
    sandbox::ensure_sandbox(&node, &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ifindex(&a.netns, "eth0"),
        index,
        "second ensure must be a no-op"
    );

    for t in [&a, &b] {
        sandbox::remove_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.netns.exists());
    }
}

#[tokio::test]
async fn isolated_ports_reach_the_bridge_but_not_each_other() {
    if !root_or_skip("isolated_ports_reach_the_bridge_but_not_each_other") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("iso");
    let node = Netlink::open(&node_path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = BridgeSpec {
        ifname: "rm_gwbridge".into(),
        gateway: net("172.18.0.1/16"),
        mtu: 1500,
    };
    bridge::ensure_bridge(&node, &gw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let on_bridge = |isolated| Attachment::NodeBridge {
        bridge: "rm_gwbridge".into(),
        isolated,
    };
    let a = task(
        world.path("sb-iso-a"),
        "veth-ia",
        on_bridge(true),
        "172.18.0.5/16",
        None,
    );
    let b = task(
        world.path("sb-iso-b"),
        "veth-ib",
        on_bridge(true),
        "172.18.0.6/16",
        None,
    );
    let c = task(
        world.path("sb-iso-c"),
        "veth-ic",
        on_bridge(false),
        "172.18.0.7/16",
        None,
    );
    for t in [&a, &b, &c] {
        sandbox::ensure_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let port = ns_run(&node_path, &["ip", "-d", "link", "show", "dev", "veth-ia"]);
    assert!(port.contains("isolated on"), "{port}");
    let open = ns_run(&node_path, &["ip", "-d", "link", "show", "dev", "veth-ic"]);
    assert!(open.contains("isolated off"), "{open}");
    // Closed: one isolated port to another.
    let (ok, out) = ns_try(&a.netns, &["ping", "-c1", "-W1", "172.18.0.6"]);
    assert!(!ok, "isolated ports reached each other: {out}");
    // Open: to the bridge itself (the node), and to a port that is not isolated.
    ns_run(&a.netns, &["ping", "-c1", "-W2", "172.18.0.1"]);
    ns_run(&a.netns, &["ping", "-c1", "-W2", "172.18.0.7"]);
    // A second ensure (an adopted sandbox) keeps it isolated.
    sandbox::ensure_sandbox(&node, &a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = ns_run(&node_path, &["ip", "-d", "link", "show", "dev", "veth-ia"]);
    assert!(port.contains("isolated on"), "{port}");
    for t in [&a, &b, &c] {
        sandbox::remove_sandbox(&node, t)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn tasks_on_two_nodes_ping_over_vxlan() {
    if !root_or_skip("tasks_on_two_nodes_ping_over_vxlan") {
        return;
    }
    let mut world = World::new();
    let (na, nb) = (world.node("a"), world.node("b"));
    let nb_name = nb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ns_run(
        &na,
        &[
            "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &nb_name,
        ],
    );
    for (n, addr) in [(&na, "192.168.77.1/24"), (&nb, "192.168.77.2/24")] {
        ns_run(n, &["ip", "addr", "add", addr, "dev", "u0"]);
        ns_run(n, &["ip", "link", "set", "u0", "up"]);
    }
    let node_a = Netlink::open(&na).await.unwrap_or_else(|e| panic!("{e}"));
    let node_b = Netlink::open(&nb).await.unwrap_or_else(|e| panic!("{e}"));
    let (ov_a, ov_b) = (world.path("ov-a"), world.path("ov-b"));
    let mut spec_a = overlay_spec(ov_a.clone(), "10.0.9.1/24", Some(ip("192.168.77.1")));
    spec_a.fdb = vec![(mac("10.0.9.3"), ip("192.168.77.2"))];
    spec_a.neighbours = vec![(ip("10.0.9.3"), mac("10.0.9.3"))];
    let mut spec_b = overlay_spec(ov_b.clone(), "10.0.9.1/24", Some(ip("192.168.77.2")));
    spec_b.fdb = vec![(mac("10.0.9.2"), ip("192.168.77.1"))];
    spec_b.neighbours = vec![(ip("10.0.9.2"), mac("10.0.9.2"))];
    overlay::ensure_overlay(&node_a, &spec_a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    overlay::ensure_overlay(&node_b, &spec_b)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let ta = task(
        world.path("t-a"),
        "veth-ta",
        Attachment::Overlay { netns: ov_a },
        "10.0.9.2/24",
        None,
    );
    let tb = task(
        world.path("t-b"),
        "veth-tb",
        Attachment::Overlay { netns: ov_b },
        "10.0.9.3/24",
        None,
    );
    sandbox::ensure_sandbox(&node_a, &ta)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sandbox::ensure_sandbox(&node_b, &tb)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // One lost echo on a loaded machine is not a failure: poll with a deadline.
    for (from, to) in [(&ta.netns, "10.0.9.3"), (&tb.netns, "10.0.9.2")] {
        let mut last = String::new();
        let reached = wait_for_or_timeout(Duration::from_secs(10), || {
            let (ok, text) = ns_try(from, &["ping", "-c1", "-W1", to]);
            last = text;
            ok.then_some(())
        });
        assert!(
            reached.is_some(),
            "in {}: no echo from {to}: {last}",
            from.display()
        );
    }
}

#[tokio::test]
async fn firewall_table_is_replaced_and_removed() {
    if !root_or_skip("firewall_table_is_replaced_and_removed") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("fw");
    let spec = NodeFirewallSpec {
        masquerade: vec![Masquerade {
            subnet: net("172.18.0.0/16"),
            bridge: "rm_gwbridge".into(),
        }],
        ..Default::default()
    };
    for _ in 0..2 {
        firewall::sync(Some(&node_path), &spec).unwrap_or_else(|e| panic!("{e}"));
    }
    let table = ns_run(&node_path, &["nft", "list", "table", "ip", firewall::TABLE]);
    let rule = "ip saddr 172.18.0.0/16 oifname != \"rm_gwbridge\" masquerade";
    assert_eq!(table.matches(rule).count(), 1, "{table}");
    assert!(
        table.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{table}"
    );
    let own = try_run("nft", &["list", "table", "ip", "rmi-never-here"]);
    assert!(!own.0);

    let bad = routemesh_nft::NftCmd::in_netns(&node_path).run_script(
        "table ip routemesh { chain x { nonsense } }\n",
        firewall::TABLE,
    );
    match bad {
        Err(routemesh_nft::NftError::Rejected {
            message: stderr, ..
        }) => {
            assert!(stderr.contains("nonsense") || !stderr.is_empty())
        }
        other => panic!("expected an nft error, got {other:?}"),
    }
    assert!(ns_run(&node_path, &["nft", "list", "table", "ip", firewall::TABLE]).contains(rule));

    firewall::remove(Some(&node_path)).unwrap_or_else(|e| panic!("{e}"));
    firewall::remove(Some(&node_path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!ns_try(&node_path, &["nft", "list", "table", "ip", firewall::TABLE]).0);
}

#[tokio::test]
async fn published_port_rules_are_accepted_by_the_kernel() {
    if !root_or_skip("published_port_rules_are_accepted_by_the_kernel") {
        return;
    }
    let mut world = World::new();
    let node_path = world.node("pub");
    let spec = NodeFirewallSpec {
        masquerade: vec![Masquerade {
            subnet: net("172.18.0.0/16"),
            bridge: "rm_gwbridge".into(),
        }],
        ingress: Some(firewall::IngressDnat {
            sbox: ip("172.18.0.2"),
            gw_bridge: "rm_gwbridge".into(),
            gw_subnet: net("172.18.0.0/16"),
            ports: vec![(firewall::Proto::Tcp, 8080), (firewall::Proto::Udp, 9053)],
        }),
        host_ports: vec![firewall::HostPort {
            proto: firewall::Proto::Tcp,
            port: 8081,
            targets: vec![(ip("172.18.0.3"), 80)],
        }],
        guard: Some(firewall::Guard {
            bridges: vec![
                firewall::GuardedBridge {
                    ifname: "rm_gwbridge".into(),
                    intra: false,
                },
                firewall::GuardedBridge {
                    ifname: "rmb-local".into(),
                    intra: true,
                },
            ],
            private_nets: vec![net("10.255.0.0/16"), net("10.0.1.0/24")],
            vxlan_port: 4789,
            vxlan_peers: vec![ip("192.168.100.12"), ip("192.168.100.11")],
            encrypted_vnis: vec![4097],
            encrypt_mark: 0x726d_0e5b,
        }),
    };
    firewall::sync(Some(&node_path), &spec).unwrap_or_else(|e| panic!("{e}"));
    let table = ns_run(&node_path, &["nft", "list", "table", "ip", firewall::TABLE]);
    for want in [
        "udp . 9053",
        "tcp . 8080",
        "fib daddr type local meta l4proto . th dport @ingress_ports dnat to 172.18.0.2",
        "type nat hook output priority -100",
        "tcp dport 8081 dnat ip to numgen random mod 1 map { 0 : 172.18.0.3 . 80 }",
        "ct status dnat fib saddr type local masquerade",
        "type filter hook input priority filter; policy accept;",
        "elements = { 192.168.100.11, 192.168.100.12 }",
        "udp dport 4789 ip saddr @vxlan_peers counter packets 0 bytes 0 accept",
        "udp dport 4789 counter packets 0 bytes 0 drop",
        "iifname != \"lo\" ip daddr 127.0.0.0/8 counter packets 0 bytes 0 drop",
        "ip daddr 10.255.0.0/16 counter packets 0 bytes 0 drop",
        "oifname \"rm_gwbridge\" ct status dnat accept",
        "oifname \"rm_gwbridge\" counter packets 0 bytes 0 drop",
        "iifname \"rmb-local\" oifname \"rmb-local\" accept",
        "type route hook output priority mangle; policy accept;",
        "udp dport 4789 @th,96,24 0x1001 meta mark set 0x726d0e5b",
        "udp dport 4789 @th,96,24 0x1001 meta ipsec missing counter packets 0 bytes 0 drop",
    ] {
        assert!(table.contains(want), "missing {want:?} in\n{table}");
    }
}
