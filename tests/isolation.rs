//! Kernel tests of what reaches a task (issue 11): two overlays `red` and `blue` on one node,
//! and an outside host on the underlay that routes every routemesh range through the node.
//! Every closed path has a neighbour showing the allowed path still open.

mod common;

use std::cell::RefCell;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

const NODE_ADDR: &str = "192.168.91.1";
const OUTSIDE_ADDR: &str = "192.168.91.2";

/// A node plus an outside host joined to it by a veth, with routes to the gateway bridge, the
/// overlays' pool and the ingress network through the node (what an attacker on the underlay
/// would add).
struct Site {
    node: Node,
    outside: Netns,
    servers: RefCell<Vec<Child>>,
}

impl Site {
    fn new(label: &str) -> Site {
        let node = Node::start(label);
        let outside = Netns::new(&unique("out")).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = ("rmtiso0", "rmtiso1");
        node.ns.sh_ok(&format!(
            "ip link add {a} type veth peer name {b} && ip link set {b} netns {} && \
             ip addr add {NODE_ADDR}/24 dev {a} && ip link set {a} up && \
             ip route add default via {OUTSIDE_ADDR}",
            outside.name
        ));
        outside.sh_ok(&format!(
            "ip addr add {OUTSIDE_ADDR}/24 dev {b} && ip link set {b} up && \
             ip route add 172.18.0.0/16 via {NODE_ADDR} && ip route add 10.0.0.0/8 via {NODE_ADDR}"
        ));
        Site {
            node,
            outside,
            servers: RefCell::new(Vec::new()),
        }
    }

    /// A `routemesh whoami` serving `port` in `ns` (the node's or the outside host's).
    fn serve(&self, in_outside: bool, port: u16) {
        let ns = if in_outside {
            &self.outside
        } else {
            &self.node.ns
        };
        let child = ns
            .cmd(bin().to_str().unwrap_or("routemesh"))
            .args(["whoami", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("whoami");
        self.servers.borrow_mut().push(child);
        let probe = format!("ss -ltn | grep -q ':{port} '");
        wait_for("the server", Duration::from_secs(10), || {
            ns.sh(&probe).status.success().then_some(())
        });
    }

    fn task_ns(&self, task: &str) -> std::path::PathBuf {
        self.node.netns_dir().join(format!("task-{task}"))
    }

    /// A counter of the node table's rule that `line` names (a substring of the listing).
    fn counter(&self, rule: &str) -> u64 {
        let table = self.node.ns.sh_ok("nft list table ip routemesh");
        let line = table
            .lines()
            .find(|l| l.contains(rule) && l.contains("counter packets"))
            .unwrap_or_else(|| panic!("no counted rule {rule:?} in\n{table}"));
        line.split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {line:?}"))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for s in self.servers.get_mut() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn whoami(node: &Node, name: &str, network: &str, extra: &[&str], udp: bool) {
    let mut args = vec!["service", "create", "--name", name, "--network", network];
    args.extend_from_slice(extra);
    args.extend(["--", "routemesh", "whoami", "--port"]);
    if udp {
        args.extend(["53", "--udp"]);
    } else {
        args.push("80");
    }
    node.ok(&args);
}

fn vip_of(node: &Node, service: &str) -> String {
    let v = node.json(&["service", "inspect", service]);
    let cidr = v["vips"][0]["address"].as_str().expect("a VIP");
    cidr.split('/').next().unwrap_or_default().to_string()
}

fn gateway_ip(node: &Node, task: &str) -> String {
    let tasks = node.json(&["task", "ls"]);
    let t = tasks
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == task)
        .unwrap_or_else(|| panic!("no task {task}"));
    let cidr = t["gateway_address"].as_str().unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// `curl` from a shell: the answering task's name, or "" when nothing answered in time.
fn http(sh: impl Fn(&str) -> String, url: &str) -> String {
    let out = sh(&format!("curl -s --max-time 2 {url} || true"));
    out.lines()
        .find_map(|l| l.strip_prefix("Task: ").or(l.strip_prefix("Hostname: ")))
        .unwrap_or_default()
        .to_string()
}

fn udp(sh: impl Fn(&str) -> String, addr: &str) -> String {
    sh(&format!("echo hello | nc -u -w 2 {addr} 53 || true"))
}

fn pings(sh: impl Fn(&str) -> String, addr: &str) -> bool {
    sh(&format!(
        "ping -c1 -W1 {addr} >/dev/null && echo up || true"
    ))
    .contains("up")
}

#[test]
fn networks_reach_only_their_own_tasks_published_ports_and_the_world() {
    if !root_or_skip("networks_reach_only_their_own_tasks_published_ports_and_the_world") {
        return;
    }
    let site = Site::new("iso");
    let node = &site.node;
    node.ok(&["network", "create", "red"]);
    node.ok(&["network", "create", "blue"]);
    whoami(
        node,
        "rweb",
        "red",
        &["--publish", "8080:80", "--publish", "mode=host,8081:80"],
        false,
    );
    whoami(node, "rudp", "red", &[], true);
    whoami(node, "bweb", "blue", &[], false);
    whoami(node, "budp", "blue", &[], true);
    node.client_on("red");

    let cli_ns = site.task_ns("client.1");
    let from_cli = |s: &str| sh_in(&cli_ns, s);
    let (rweb_ip, bweb_ip) = (
        node.task_ip("rweb.1", "red"),
        node.task_ip("bweb.1", "blue"),
    );
    let (rudp_ip, budp_ip) = (
        node.task_ip("rudp.1", "red"),
        node.task_ip("budp.1", "blue"),
    );
    let (bweb_gw, budp_gw, rweb_gw) = (
        gateway_ip(node, "bweb.1"),
        gateway_ip(node, "budp.1"),
        gateway_ip(node, "rweb.1"),
    );
    let (rweb_vip, bweb_vip) = (vip_of(node, "rweb"), vip_of(node, "bweb"));

    // Open: a task reaches its own network's tasks by address, VIP and name (TCP, UDP, ICMP).
    wait_for("rweb by its VIP from red", Duration::from_secs(10), || {
        (http(from_cli, &format!("http://{rweb_vip}/")) == "rweb.1").then_some(())
    });
    assert_eq!(http(from_cli, &format!("http://{rweb_ip}/")), "rweb.1");
    // By name, from inside the task (its resolv.conf points at the embedded DNS).
    let in_task = |s: &str| text(&node.exec("client.1", &["sh", "-c", s]));
    assert_eq!(http(in_task, "http://rweb/"), "rweb.1");
    assert!(udp(from_cli, &rudp_ip).contains("rudp.1"), "UDP on red");
    assert!(pings(from_cli, &rweb_ip), "ICMP on red");

    // Closed: blue's tasks by overlay address, gateway-bridge address or VIP, whatever the
    // protocol; and red's own task over the gateway bridge.
    let drops = site.counter("oifname \"rm_gwbridge\" counter");
    // Blue's subnet is private to the mesh: the node, whose default route leads to the
    // underlay, does not forward a packet there.
    let blue_net = format!(
        "ip daddr {}.0/24 counter",
        bweb_ip.rsplit_once('.').map(|(p, _)| p).unwrap_or_default()
    );
    let private_drops = site.counter(&blue_net);
    for url in [
        format!("http://{bweb_ip}/"),
        format!("http://{bweb_gw}/"),
        format!("http://{bweb_vip}/"),
        format!("http://{rweb_gw}/"),
    ] {
        assert_eq!(http(from_cli, &url), "", "red reached {url}");
    }
    for addr in [&budp_ip, &budp_gw] {
        assert_eq!(udp(from_cli, addr).trim(), "", "red reached UDP {addr}");
    }
    for addr in [&bweb_ip, &bweb_gw, &rweb_gw] {
        assert!(!pings(from_cli, addr), "red pinged {addr}");
    }
    assert!(
        site.counter(&blue_net) > private_drops,
        "the node dropped what red sent to blue's subnet"
    );
    // Blue cannot reach red either.
    let bweb_ns = site.task_ns("bweb.1");
    assert_eq!(
        http(|s| sh_in(&bweb_ns, s), &format!("http://{rweb_ip}/")),
        ""
    );

    // From the outside host: published ports (ingress and host mode) answer ...
    let outside = |s: &str| text(&site.outside.sh(s));
    assert_eq!(
        http(outside, &format!("http://{NODE_ADDR}:8080/")),
        "rweb.1"
    );
    assert_eq!(
        http(outside, &format!("http://{NODE_ADDR}:8081/")),
        "rweb.1"
    );
    // ... and nothing else does, by any of the mesh's addresses.
    for url in [
        format!("http://{rweb_gw}/"),
        format!("http://{rweb_ip}/"),
        format!("http://{rweb_vip}/"),
        "http://172.18.0.2:8080/".to_string(),
    ] {
        assert_eq!(http(outside, &url), "", "the outside host reached {url}");
    }
    assert!(!pings(outside, &rweb_gw));
    assert!(
        site.counter("oifname \"rm_gwbridge\" counter") > drops,
        "the node's forward guard dropped them"
    );

    // Tasks still reach the world, and the node's own services by the gateway address.
    site.serve(true, 9000);
    site.serve(false, 9200);
    let from_cli = |s: &str| sh_in(&cli_ns, s);
    let out = from_cli(&format!("curl -s --max-time 5 http://{OUTSIDE_ADDR}:9000/"));
    assert!(out.contains("Hostname:"), "egress to the world: {out:?}");
    let out = from_cli("curl -s --max-time 5 http://172.18.0.1:9200/");
    assert!(
        out.contains("Hostname:"),
        "the node by its gateway: {out:?}"
    );

    // VXLAN from something that is not a node is dropped (and counted).
    let vxlan_drops = site.counter("udp dport 4789 counter");
    site.outside.sh_ok(&format!(
        "for i in 1 2 3; do echo frame | nc -u -w 1 {NODE_ADDR} 4789; done; true"
    ));
    wait_for("the VXLAN drop counted", Duration::from_secs(5), || {
        (site.counter("udp dport 4789 counter") >= vxlan_drops + 3).then_some(())
    });

    // Martians: a neighbour on the gateway bridge sending to the node's 127.0.0.1 (which
    // route_localnet would otherwise let in) is dropped; the node's own localhost and its
    // localhost publish still work.
    let martians = site.counter("ip daddr 127.0.0.0/8 counter");
    sh_in(
        &cli_ns,
        "sysctl -qw net.ipv4.conf.all.route_localnet=1 && \
         ip route del local 127.0.0.0/8 dev lo table local; \
         ip route del local 127.0.0.1 dev lo table local; \
         ip route add 127.0.0.0/8 via 172.18.0.1",
    );
    let out = from_cli("curl -s --max-time 2 http://127.0.0.1:9200/ || true");
    assert!(
        !out.contains("Hostname:"),
        "a task reached the node's localhost: {out}"
    );
    assert!(
        site.counter("ip daddr 127.0.0.0/8 counter") > martians,
        "the martian rule dropped it"
    );
    let own = text(&node.ns.sh("curl -s --max-time 5 http://127.0.0.1:9200/"));
    assert!(own.contains("Hostname:"), "{own}");
    assert_eq!(
        http(|s| text(&node.ns.sh(s)), "http://127.0.0.1:8080/"),
        "rweb.1"
    );
}

#[test]
fn macvlan_tasks_live_on_the_parents_segment() {
    if !root_or_skip("macvlan_tasks_live_on_the_parents_segment") {
        return;
    }
    let node = Node::start("mvl");
    let segment = Netns::new(&unique("seg")).unwrap_or_else(|e| panic!("{e}"));
    // The parent: a veth whose other end is a host on the same segment.
    node.ns.sh_ok(&format!(
        "ip link add rmtmv0 type veth peer name rmtmv1 && ip link set rmtmv1 netns {} && \
         ip link set rmtmv0 up",
        segment.name
    ));
    segment.sh_ok("ip addr add 192.168.95.254/24 dev rmtmv1 && ip link set rmtmv1 up");

    // Bad input is refused and creates nothing.
    for (args, want) in [
        (
            vec!["--driver", "macvlan", "--subnet", "192.168.95.0/24"],
            "needs --opt parent=IF",
        ),
        (
            vec!["--driver", "macvlan", "-o", "parent=rmtmv0"],
            "needs --subnet",
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "-o",
                "parent=a/b",
                "--subnet",
                "192.168.95.0/24",
            ],
            "invalid interface name",
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "-o",
                "parent=rmtmv0",
                "-o",
                "macvlan_mode=vepa",
                "--subnet",
                "192.168.95.0/24",
            ],
            "only \"bridge\"",
        ),
        (
            vec!["--driver", "overlay", "-o", "bogus=1"],
            "unknown option \"bogus\"",
        ),
        (
            vec![
                "--driver",
                "macvlan",
                "-o",
                "parent=rmtmv0",
                "--subnet",
                "192.168.95.0/24",
                "--vni",
                "5000",
            ],
            "only for overlay",
        ),
    ] {
        let mut a = vec!["network", "create", "bad"];
        a.extend(args);
        let err = node.fails(&a);
        assert!(err.contains(want), "{a:?}: {err}");
    }
    // The parent must exist on the node the network is created on.
    let err = node.fails(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "-o",
        "parent=rmtnope0",
        "--subnet",
        "192.168.96.0/24",
        "bad",
    ]);
    assert!(
        err.contains("parent interface \"rmtnope0\" does not exist"),
        "{err}"
    );
    assert!(!node.ok(&["network", "ls"]).contains("bad"));

    node.ok(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "--opt",
        "parent=rmtmv0",
        "--subnet",
        "192.168.95.0/24",
        "--gateway",
        "192.168.95.254",
        "lan",
    ]);
    let shown = node.json(&["network", "inspect", "lan"]);
    assert_eq!(shown["driver"], "macvlan", "{shown}");
    assert_eq!(shown["parent"], "rmtmv0", "{shown}");
    node.ok(&[
        "service",
        "create",
        "--name",
        "mweb",
        "--replicas",
        "2",
        "--network",
        "lan",
        "--",
        "routemesh",
        "whoami",
        "--port",
        "80",
    ]);
    node.client_on("lan");
    let ips = [node.task_ip("mweb.1", "lan"), node.task_ip("mweb.2", "lan")];
    for ip in &ips {
        assert!(ip.starts_with("192.168.95."), "{ip}");
    }

    // The leg is a macvlan in bridge mode on the parent, with the task's address.
    let sandbox = node.netns_dir().join("task-mweb.1");
    let leg = sh_in(&sandbox, "ip -d addr show dev eth0");
    assert!(leg.contains("macvlan mode bridge"), "{leg}");
    assert!(leg.contains(&format!("inet {}/24", ips[0])), "{leg}");

    // Tasks reach each other over the parent, by address and by name; DNS names them.
    let in_client = |s: &str| text(&node.exec("client.1", &["sh", "-c", s]));
    for (i, ip) in ips.iter().enumerate() {
        let out = in_client(&format!("curl -s --max-time 5 http://{ip}/"));
        assert!(
            out.contains(&format!("Task: mweb.{}", i + 1)),
            "{ip}: {out}"
        );
    }
    let names: std::collections::BTreeSet<String> = in_client("dig +short +time=2 tasks.mweb")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, ips.iter().cloned().collect(), "tasks.mweb");
    let out = in_client("curl -s --max-time 5 http://mweb/");
    assert!(out.contains("Task: mweb."), "by name: {out}");

    // A host on the parent's segment reaches them directly, and they see its address.
    for ip in &ips {
        let out = text(&segment.sh(&format!("curl -s --max-time 5 http://{ip}/")));
        assert!(out.contains("RemoteAddr: 192.168.95.254:"), "{ip}: {out}");
    }

    // Removing the service and the network leaves nothing on the parent.
    node.ok(&["service", "rm", "mweb", "client"]);
    wait_for(
        "the sandboxes and their legs gone",
        Duration::from_secs(10),
        || (!sandbox.exists()).then_some(()),
    );
    assert!(
        node.ns.sh_ok("ip -o link show rmtmv0").contains("rmtmv0"),
        "the parent stays"
    );
    node.ok(&["network", "rm", "lan"]);
}

#[test]
fn an_encrypted_overlay_needs_esp_in_the_kernel() {
    if !root_or_skip("an_encrypted_overlay_needs_esp_in_the_kernel") {
        return;
    }
    let node = Node::start("esp");
    let create = ["network", "create", "--opt", "encrypted", "sec"];
    let log = node.daemon_log();
    if log.contains("IPsec ESP: available") {
        // A kernel with esp4 (the VM test covers this path end to end).
        node.ok(&create);
        assert_eq!(node.json(&["network", "inspect", "sec"])["encrypted"], true);
    } else {
        assert!(
            log.contains("IPsec ESP: not available"),
            "the daemon says why"
        );
        let err = node.fails(&create);
        assert!(err.contains("needs IPsec ESP"), "{err}");
        assert!(
            !node.ok(&["network", "ls"]).contains("sec"),
            "nothing created"
        );
        // The neighbour: the same network without encryption is fine.
        node.ok(&["network", "create", "sec"]);
    }
}
