//! Kernel tests of the routing mesh on one node: published ports from an outside client, the
//! node itself and a task; VIPs between services; UDP; following the tasks; nothing stale.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// A node plus an outside client namespace joined to it by a veth (node 192.168.90.1,
/// client 192.168.90.2).
struct Mesh {
    node: Node,
    client: Netns,
}

const NODE_ADDR: &str = "192.168.90.1";

impl Mesh {
    fn new(label: &str) -> Mesh {
        let node = Node::start(label);
        let client = Netns::new(&unique("cli")).unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = ("rmtcli0", "rmtcli1");
        node.ns.sh_ok(&format!(
            "ip link add {a} type veth peer name {b} && ip link set {b} netns {} && \
             ip addr add {NODE_ADDR}/24 dev {a} && ip link set {a} up",
            client.name
        ));
        client.sh_ok(&format!(
            "ip addr add 192.168.90.2/24 dev {b} && ip link set {b} up && ip route add default via {NODE_ADDR}"
        ));
        Mesh { node, client }
    }
}

/// Who answered each of `n` new connections to `url`, made from a shell in `ns_sh`.
fn spread(run_sh: impl Fn(&str) -> String, url: &str, n: usize) -> BTreeMap<String, usize> {
    // One curl, n URLs: whoami closes every connection, so each request is a new one.
    let urls = vec![url; n].join(" ");
    let out = run_sh(&format!(
        "curl -s --max-time 20 -H 'Connection: close' {urls}"
    ));
    let mut counts = BTreeMap::new();
    for line in out.lines() {
        if let Some(task) = line.strip_prefix("Task: ") {
            *counts.entry(task.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn assert_spread(counts: &BTreeMap<String, usize>, tasks: &[&str], n: usize) {
    let total: usize = counts.values().sum();
    assert_eq!(total, n, "every connection answered: {counts:?}");
    for t in tasks {
        let c = counts.get(*t).copied().unwrap_or(0);
        let share = c as f64 / n as f64;
        assert!(
            (0.20..=0.47).contains(&share),
            "{t} answered {c} of {n} ({share:.2}); all: {counts:?}"
        );
    }
    assert_eq!(
        counts.len(),
        tasks.len(),
        "only {tasks:?} answer: {counts:?}"
    );
}

fn whoami_service(node: &Node, name: &str, replicas: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        replicas,
        "--network",
        "app",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "routemesh", "whoami", "--port", "80"]);
    node.ok(&args);
}

fn vip_of(node: &Node, service: &str) -> String {
    let v = node.json(&["service", "inspect", service]);
    let cidr = v["vips"][0]["address"].as_str().expect("a VIP");
    cidr.split('/').next().unwrap_or_default().to_string()
}

#[test]
fn published_port_spreads_over_tasks_from_everywhere() {
    if !root_or_skip("published_port_spreads_over_tasks_from_everywhere") {
        return;
    }
    let m = Mesh::new("pub");
    let node = &m.node;
    node.ok(&["network", "create", "app"]);
    whoami_service(node, "web", "3", &["--publish", "8080:80"]);

    // From an outside client, to the node's address, once the rules follow the running tasks
    // (within moments of the create).
    wait_for(
        "all three tasks behind 8080",
        Duration::from_secs(5),
        || {
            let c = spread(
                |s| text(&m.client.sh(s)),
                &format!("http://{NODE_ADDR}:8080/"),
                30,
            );
            (c.len() == 3).then_some(())
        },
    );
    let counts = spread(
        |s| text(&m.client.sh(s)),
        &format!("http://{NODE_ADDR}:8080/"),
        300,
    );
    assert_spread(&counts, &["web.1", "web.2", "web.3"], 300);

    // From the node itself, to 127.0.0.1 and to its own address.
    for url in [
        "http://127.0.0.1:8080/",
        &format!("http://{NODE_ADDR}:8080/"),
    ] {
        let counts = spread(|s| text(&node.ns.sh(s)), url, 30);
        assert_eq!(counts.values().sum::<usize>(), 30, "{url}: {counts:?}");
    }

    // From a task, through its node's address.
    node.client_on("app");
    let counts = spread(
        |s| text(&node.exec("client.1", &["sh", "-c", s])),
        &format!("http://{NODE_ADDR}:8080/"),
        30,
    );
    assert_eq!(counts.values().sum::<usize>(), 30, "{counts:?}");

    // The rules dispatch by set and map lookups with a numgen pick, not a rule per service.
    let node_nft = node.ns.sh_ok("nft list ruleset");
    assert!(node_nft.contains("@ingress_ports"), "{node_nft}");
    assert!(
        !node_nft.lines().any(|l| l.contains("dport 8080")),
        "the port is a set element, not a rule:\n{node_nft}"
    );
    let sbox = node.netns_dir().join("ingress_sbox");
    let sbox_rules = || sh_in(&sbox, "nft list ruleset");
    let sbox_nft = sbox_rules();
    assert!(sbox_nft.contains("numgen random mod 3"), "{sbox_nft}");
    assert!(sbox_nft.contains('@'), "map lookups: {sbox_nft}");

    // Publishing the same port again names its owner.
    let err = node.fails(&[
        "service",
        "create",
        "--name",
        "other",
        "--publish",
        "8080:80",
        "--",
        "routemesh",
        "whoami",
    ]);
    assert!(
        err.contains("already published by service \"web\""),
        "{err}"
    );

    // A port a process on the node listens on is refused, naming the process.
    let mut listener = node
        .ns
        .cmd("nc")
        .args(["-l", "-p", "9999"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nc");
    wait_for("the local listener", Duration::from_secs(5), || {
        node.ns.sh_ok("ss -ltn").contains(":9999").then_some(())
    });
    let err = node.fails(&[
        "service",
        "create",
        "--name",
        "clash",
        "--publish",
        "9999:80",
        "--",
        "routemesh",
        "whoami",
    ]);
    assert!(
        err.contains("port 9999/tcp is in use on this node by pid") && err.contains("(nc"),
        "{err}"
    );
    let _ = listener.kill();
    let _ = listener.wait();

    // After rm, nothing of web is left in either namespace.
    let before = sbox_rules();
    assert!(
        before.contains(" . 80,") || before.contains(" . 80\n"),
        "{before}"
    );
    node.ok(&["service", "rm", "web"]);
    wait_for("web's rules gone", Duration::from_secs(10), || {
        let n = node.ns.sh_ok("nft list ruleset");
        let s = sbox_rules();
        // nft prints a backend as `10.255.0.7 . 80`: no element may point at web's target port.
        (!n.contains("8080")
            && !s.contains("8080")
            && !s.contains(" . 80\n")
            && !s.contains(" . 80,"))
        .then_some(())
    });
    let out = m
        .client
        .sh(&format!("curl -s --max-time 2 http://{NODE_ADDR}:8080/"));
    assert!(!out.status.success(), "nothing answers 8080 any more");
}

#[test]
fn vip_spreads_and_follows_the_tasks() {
    if !root_or_skip("vip_spreads_and_follows_the_tasks") {
        return;
    }
    let node = Node::start("vip");
    node.ok(&["network", "create", "app"]);
    whoami_service(&node, "web", "3", &[]);
    node.client_on("app");
    let vip = vip_of(&node, "web");
    let from_client = |s: &str| text(&node.exec("client.1", &["sh", "-c", s]));
    wait_for(
        "all three tasks behind the VIP",
        Duration::from_secs(5),
        || (spread(from_client, &format!("http://{vip}/"), 30).len() == 3).then_some(()),
    );
    let counts = spread(from_client, &format!("http://{vip}/"), 300);
    assert_spread(&counts, &["web.1", "web.2", "web.3"], 300);

    // Scale 3 -> 5: within 2 s all five answer.
    node.ok(&["service", "scale", "--detach", "web=5"]);
    let started = Instant::now();
    wait_for(
        "all five tasks behind the VIP",
        Duration::from_secs(2),
        || {
            let c = spread(from_client, &format!("http://{vip}/"), 60);
            (c.len() == 5).then_some(())
        },
    );
    eprintln!("5 tasks answered after {:?}", started.elapsed());

    // Kill one task's process: within 1 s it gets no requests; restarted, it gets them again.
    let tasks = node.json(&["task", "ls", "--service", "web"]);
    let pid = tasks[0]["pid"].as_u64().expect("pid");
    let victim = tasks[0]["name"].as_str().expect("name").to_string();
    let _ = run(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
    let killed = Instant::now();
    let gone_after = wait_for(
        &format!("{victim} out of the VIP"),
        Duration::from_secs(1),
        || {
            let c = spread(from_client, &format!("http://{vip}/"), 30);
            (!c.contains_key(&victim) && c.values().sum::<usize>() == 30).then(|| killed.elapsed())
        },
    );
    eprintln!("{victim} left the backends {gone_after:?} after its exit");
    wait_for(
        "the restarted task back behind the VIP",
        Duration::from_secs(10),
        || {
            let c = spread(from_client, &format!("http://{vip}/"), 60);
            c.contains_key(&victim).then_some(())
        },
    );

    // No running task at all: refused at once, not left hanging.
    node.ok(&["service", "scale", "web=0"]);
    let t = Instant::now();
    let o = node.exec(
        "client.1",
        &["curl", "-s", "--max-time", "5", &format!("http://{vip}/")],
    );
    assert!(!o.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused at once, took {:?}",
        t.elapsed()
    );

    // The VIP is a local route through br0 (what answers ARP for it), not an address.
    let ov = node.netns_dir().join("ov-app");
    let local = sh_in(
        &ov,
        "ip -4 route show table local type local dev br0 proto static",
    );
    assert!(
        local
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(vip.as_str())),
        "{local}"
    );
    let addrs = sh_in(&ov, "ip -o -4 addr show dev br0");
    assert!(!addrs.contains(&format!(" {vip}/")), "{addrs}");

    // After rm, web's VIP is gone from the overlay namespace's local routes and rules.
    node.ok(&["service", "rm", "web"]);
    wait_for("web's VIP gone", Duration::from_secs(10), || {
        let sh = |c: &str| sh_in(&ov, c);
        let local = sh("ip -4 route show table local type local dev br0");
        let rules = sh("nft list ruleset");
        (!local
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(vip.as_str()))
            && !rules.contains(&vip))
        .then_some(())
    });
}

#[test]
fn udp_host_mode_update_and_dnsrr() {
    if !root_or_skip("udp_host_mode_update_and_dnsrr") {
        return;
    }
    let m = Mesh::new("udp");
    let node = &m.node;
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "dns",
        "--replicas",
        "2",
        "--network",
        "app",
        "--publish",
        "9053:53/udp",
        "--",
        "routemesh",
        "whoami",
        "--udp",
        "--port",
        "53",
    ]);
    let out = wait_for(
        "a UDP answer through the node",
        Duration::from_secs(5),
        || {
            let o = m
                .client
                .sh(&format!("echo hi | nc -u -w1 {NODE_ADDR} 9053"));
            let t = text(&o);
            t.contains("Task: dns.").then_some(t)
        },
    );
    assert!(out.contains("RemoteAddr:"), "{out}");

    // Host mode: straight to the local task, the client's address kept.
    whoami_service(node, "h", "1", &["--publish", "mode=host,8081:80"]);
    // The node's rules follow the task's running state within moments of the create.
    let body = wait_for("host-mode port answering", Duration::from_secs(5), || {
        let o = m
            .client
            .sh(&format!("curl -s --max-time 2 http://{NODE_ADDR}:8081/"));
        o.status.success().then(|| text(&o))
    });
    assert!(body.contains("Task: h.1"), "{body}");
    assert!(
        body.contains("RemoteAddr: 192.168.90.2:"),
        "host mode keeps the client address: {body}"
    );

    // service update: publish another port on a running service, then remove the first.
    whoami_service(node, "web", "2", &["--publish", "8080:80"]);
    node.ok(&[
        "service",
        "update",
        "web",
        "--publish-add",
        "8090:80",
        "--publish-rm",
        "8080",
    ]);
    let body = wait_for("8090 answering", Duration::from_secs(5), || {
        let o = m
            .client
            .sh(&format!("curl -s --max-time 2 http://{NODE_ADDR}:8090/"));
        o.status.success().then(|| text(&o))
    });
    assert!(body.contains("Task: web."), "{body}");
    wait_for("8080 no longer answering", Duration::from_secs(5), || {
        (!m.client
            .sh(&format!("curl -s --max-time 1 http://{NODE_ADDR}:8080/"))
            .status
            .success())
        .then_some(())
    });
    // Nothing stale: neither the node's table nor ingress_sbox's mentions 8080 any more, and
    // both carry 8090.
    let sbox = node.netns_dir().join("ingress_sbox");
    wait_for("8080 gone from the rules", Duration::from_secs(5), || {
        let n = node.ns.sh_ok("nft list ruleset");
        let s = sh_in(&sbox, "nft list ruleset");
        (!n.contains("8080") && !s.contains("8080") && n.contains("8090") && s.contains("8090"))
            .then_some(())
    });

    // dnsrr: no VIP.
    node.ok(&[
        "service",
        "create",
        "--name",
        "rr",
        "--endpoint-mode",
        "dnsrr",
        "--network",
        "app",
        "--",
        "routemesh",
        "whoami",
    ]);
    let v = node.json(&["service", "inspect", "rr"]);
    assert!(v["vips"].as_array().is_some_and(|a| a.is_empty()), "{v}");
}
