//! Kernel tests of the embedded DNS: `dig` inside a task's sandbox against 127.0.0.11.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

fn dig(node: &Node, task: &str, args: &str) -> String {
    let o = node.exec(task, &["sh", "-c", &format!("dig +time=2 +tries=1 {args}")]);
    text(&o)
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn task_addrs(node: &Node, service: &str) -> BTreeSet<String> {
    let tasks = node.json(&["task", "ls", "--service", service]);
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["desired"] == "running")
        .map(|t| {
            let a = t["addresses"][0]["address"].as_str().unwrap_or_default();
            a.split('/').next().unwrap_or_default().to_string()
        })
        .collect()
}

/// An upstream namespace joined to the node, with two dnsmasq servers (.2 and .3) that
/// answer `ext.test` with different addresses.
struct Upstream {
    /// Held for its Drop: the namespace (and the dnsmasq servers in it) go with it.
    _ns: Netns,
    pids: Vec<u32>,
}

impl Upstream {
    fn new(node: &Node) -> Upstream {
        let ns = Netns::new(&unique("ups")).unwrap_or_else(|e| panic!("{e}"));
        node.ns.sh_ok(&format!(
            "ip link add rmtup0 type veth peer name rmtup1 && ip link set rmtup1 netns {} && \
             ip addr add 192.168.91.1/24 dev rmtup0 && ip link set rmtup0 up",
            ns.name
        ));
        ns.sh_ok("ip addr add 192.168.91.2/24 dev rmtup1 && ip addr add 192.168.91.3/24 dev rmtup1 && ip link set rmtup1 up");
        let mut pids = Vec::new();
        for (addr, answer) in [
            ("192.168.91.2", "198.51.100.2"),
            ("192.168.91.3", "198.51.100.3"),
        ] {
            let pidfile = std::env::temp_dir().join(format!("{}-{addr}.pid", ns.name));
            ns.sh_ok(&format!(
                "dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address={addr} \
                 --port=53 --address=/ext.test/{answer} --pid-file={} --user=root",
                pidfile.display()
            ));
            let pid = wait_for("dnsmasq pid file", Duration::from_secs(5), || {
                std::fs::read_to_string(&pidfile)
                    .ok()?
                    .trim()
                    .parse::<u32>()
                    .ok()
            });
            let _ = std::fs::remove_file(&pidfile);
            pids.push(pid);
        }
        Upstream { _ns: ns, pids }
    }
}

#[test]
fn service_names_scoping_forwarding_and_robustness() {
    if !root_or_skip("service_names_scoping_forwarding_and_robustness") {
        return;
    }
    let node = Node::start_with("dns", &["--dns", "192.168.91.2", "--dns", "192.168.91.3"]);
    let upstream = Upstream::new(&node);
    node.ok(&["network", "create", "app"]);
    node.ok(&["network", "create", "private"]);
    let svc = |name: &str, n: &str, net: &str, extra: &[&str]| {
        let mut a = vec![
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            n,
            "--network",
            net,
        ];
        a.extend_from_slice(extra);
        a.extend(["--", "routemesh", "whoami", "--port", "80"]);
        node.ok(&a);
    };
    svc("web", "3", "app", &["--publish", "8080:80"]);
    svc("db", "2", "app", &["--endpoint-mode", "dnsrr"]);
    svc("other", "1", "private", &[]);
    node.client_on("app");

    // The name table follows the running tasks within moments of the creates.
    wait_for(
        "the client's resolver knowing web",
        Duration::from_secs(5),
        || (lines(&dig(&node, "client.1", "+short tasks.web")).len() == 3).then_some(()),
    );
    // SERVICE -> VIP; tasks.SERVICE -> the tasks; TASK -> its address.
    let vip = {
        let v = node.json(&["service", "inspect", "web"]);
        v["vips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        lines(&dig(&node, "client.1", "+short web")),
        vec![vip.clone()]
    );
    let want: BTreeSet<String> = task_addrs(&node, "web");
    let got: BTreeSet<String> = lines(&dig(&node, "client.1", "+short tasks.web"))
        .into_iter()
        .collect();
    assert_eq!(got, want);
    let web1 = node.task_ip("web.1", "app");
    assert_eq!(
        lines(&dig(&node, "client.1", "+short web.1")),
        vec![web1.clone()]
    );
    // PTR of a task's address names the task.
    assert_eq!(
        lines(&dig(&node, "client.1", &format!("+short -x {web1}"))),
        vec!["web.1.".to_string()]
    );

    // dnsrr: the tasks' addresses, in an order that varies.
    let db: BTreeSet<String> = task_addrs(&node, "db");
    let mut orders = BTreeSet::new();
    for _ in 0..20 {
        let l = lines(&dig(&node, "client.1", "+short db"));
        assert_eq!(l.iter().cloned().collect::<BTreeSet<_>>(), db);
        orders.insert(l);
    }
    assert!(
        orders.len() > 1,
        "the order of db's addresses never changed"
    );

    // resolv.conf is right for libc; PTR of the VIP names the service; short TTL.
    let getent = text(&node.exec("client.1", &["getent", "hosts", "web"]));
    assert!(getent.starts_with(&vip), "{getent}");
    assert_eq!(
        lines(&dig(&node, "client.1", &format!("+short -x {vip}"))),
        vec!["web.".to_string()]
    );
    let full = dig(&node, "client.1", "web");
    let ttl: u32 = full
        .lines()
        .find(|l| l.starts_with("web.") && l.contains("\tA\t"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no answer line: {full}"));
    assert!(ttl <= 5, "ttl {ttl}");
    // SRV for the published target port; AAAA of an existing name is NODATA.
    let srv = dig(&node, "client.1", "+short SRV _80._tcp.web");
    assert!(srv.contains(" 80 web."), "{srv}");
    let aaaa = dig(&node, "client.1", "AAAA web");
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );

    // Names on networks the client is not on: NXDOMAIN, never forwarded.
    for name in ["other", "tasks.other", "other.1"] {
        let out = dig(&node, "client.1", name);
        assert!(out.contains("status: NXDOMAIN"), "{name}: {out}");
    }

    // Other names go upstream; the second server takes over when the first is gone.
    assert_eq!(
        lines(&dig(&node, "client.1", "+short ext.test")),
        vec!["198.51.100.2".to_string()]
    );
    let _ = run(std::process::Command::new("kill").arg(upstream.pids[0].to_string()));
    let answer = wait_for(
        "the second upstream answering",
        Duration::from_secs(10),
        || {
            // A fresh name, so no cached answer hides the failover.
            let l = lines(&dig(&node, "client.1", "+short +time=4 again.ext.test"));
            (l == ["198.51.100.3"]).then_some(l)
        },
    );
    assert_eq!(answer, ["198.51.100.3"]);

    // Scale web to 4: tasks.web shows 4 addresses within 1 s of the tasks running.
    node.ok(&["service", "scale", "web=4"]);
    let t = Instant::now();
    wait_for("tasks.web with 4 addresses", Duration::from_secs(1), || {
        (lines(&dig(&node, "client.1", "+short tasks.web")).len() == 4).then_some(())
    });
    eprintln!(
        "tasks.web had 4 addresses {:?} after scale returned",
        t.elapsed()
    );
    // And back to 3: the stopped task's address is gone within 1 s.
    let four: Vec<String> = lines(&dig(&node, "client.1", "+short tasks.web"));
    node.ok(&["service", "scale", "web=3"]);
    let t = Instant::now();
    let three = wait_for("tasks.web with 3 addresses", Duration::from_secs(1), || {
        let l = lines(&dig(&node, "client.1", "+short tasks.web"));
        (l.len() == 3).then_some(l)
    });
    assert!(
        three.iter().all(|a| four.contains(a)),
        "{four:?} -> {three:?}"
    );
    eprintln!(
        "tasks.web had 3 addresses {:?} after scale returned",
        t.elapsed()
    );

    // A task that binds port 53 itself (UDP, on 0.0.0.0) keeps its resolver: the create only
    // converges if whoami could bind, and the task's own queries still reach 127.0.0.11.
    node.ok(&[
        "service",
        "create",
        "--name",
        "own53",
        "--network",
        "app",
        "--",
        "routemesh",
        "whoami",
        "--udp",
        "--port",
        "53",
    ]);
    assert_eq!(
        lines(&dig(&node, "own53.1", "+short web")),
        vec![vip.clone()]
    );

    // A burst of malformed packets and a stalled TCP client, then a normal query answers.
    // The stalled TCP clients stay connected while the normal queries run (from the same
    // script), so a server that served one connection at a time would stall here.
    let hostile = r#"
import socket, os, subprocess
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    u.sendto(os.urandom(i % 40), ("127.0.0.11", 53))
u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", ("127.0.0.11", 53))
stalled = []
for i in range(20):
    t = socket.create_connection(("127.0.0.11", 53))
    t.send(b"\x00")
    stalled.append(t)
for args in (["+short"], ["+tcp", "+short"]):
    r = subprocess.run(["dig", "+time=3", "+tries=1"] + args + ["web"], capture_output=True, text=True)
    print("answer:", r.stdout.strip())
"#;
    let o = node.exec("client.1", &["python3", "-c", hostile]);
    let out = text(&o);
    let answers: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("answer: "))
        .collect();
    assert_eq!(
        answers,
        vec![vip.as_str(), vip.as_str()],
        "{out}{}",
        errtext(&o)
    );
    // And after the hostile client is gone, normal queries still answer.
    assert_eq!(
        lines(&dig(&node, "client.1", "+short web")),
        vec![vip.clone()]
    );
    assert_eq!(lines(&dig(&node, "client.1", "+tcp +short web")), vec![vip]);
    drop(upstream);
}

#[test]
fn big_answers_truncate_over_udp_and_complete_over_tcp() {
    if !root_or_skip("big_answers_truncate_over_udp_and_complete_over_tcp") {
        return;
    }
    let node = Node::start("big");
    node.ok(&["network", "create", "app"]);
    node.client_on("app");
    node.ok(&[
        "service",
        "create",
        "--name",
        "big",
        "--replicas",
        "100",
        "--network",
        "app",
        "--",
        "sleep",
        "1000",
    ]);
    // The tasks run when create returns; the name table follows within moments. Over TCP the
    // whole answer comes back: wait for all 100 before looking at the UDP answer.
    wait_for(
        "all 100 tasks in tasks.big",
        Duration::from_secs(10),
        || {
            let tcp = lines(&dig(&node, "client.1", "+tcp +short tasks.big"));
            (tcp.len() == 100).then_some(())
        },
    );
    let udp = dig(&node, "client.1", "+ignore +bufsize=512 tasks.big");
    let flags = udp
        .lines()
        .find(|l| l.contains("flags:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        flags.contains(" tc"),
        "UDP answer not truncated: {flags}\n{udp}"
    );
}
