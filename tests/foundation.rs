//! Kernel tests of the foundation: a daemon in a throwaway node namespace, networks, services
//! and tasks, checked from outside with the CLI, `ip`, `nft` and curl inside the sandboxes.

mod common;

use std::time::Duration;

use common::*;

/// The task that answers HTTP on `ip`, asked from task `from`. A task counts as running once
/// its process has started, a moment before it listens: ask until it answers.
fn curl_task_name(node: &Node, from: &str, ip: &str) -> String {
    let mut last = String::new();
    wait_for_or_timeout(Duration::from_secs(10), || {
        let o = node.exec(
            from,
            &["curl", "-s", "--max-time", "3", &format!("http://{ip}/")],
        );
        let body = text(&o);
        let name = body
            .lines()
            .find_map(|l| l.strip_prefix("Task: "))
            .map(str::to_string);
        if name.is_none() {
            last = format!("{body}{}", errtext(&o));
        }
        name
    })
    .unwrap_or_else(|| panic!("no answer from {ip} via {from}: {last}"))
}

fn web_vip(node: &Node) -> String {
    node.json(&["service", "inspect", "web"])["vips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(String::from)
        .expect("web's VIP")
}

fn pids(node: &Node) -> Vec<(String, u64)> {
    let tasks = node.json(&["task", "ls", "--service", "web"]);
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or("").to_string(),
                t["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn overlay_service_lifecycle() {
    if !root_or_skip("overlay_service_lifecycle") {
        return;
    }
    let mut node = Node::start("life");
    let baseline = node.footprint();

    node.ok(&["network", "create", "--driver", "overlay", "app"]);
    let out = node.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "app",
        "--",
        "routemesh",
        "whoami",
        "--port",
        "80",
    ]);
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");

    // task ls: three running tasks named web.1..3.
    let ls = node.ok(&["task", "ls"]);
    for t in ["web.1", "web.2", "web.3"] {
        let line = ls
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap_or_else(|| panic!("{t} missing: {ls}"));
        assert!(line.contains("running"), "{line}");
    }

    // Tasks reach each other over the overlay, and the answer names the task.
    let ip2 = node.task_ip("web.2", "app");
    let ip3 = node.task_ip("web.3", "app");
    assert_eq!(curl_task_name(&node, "web.1", &ip2), "web.2");
    assert_eq!(curl_task_name(&node, "web.1", &ip3), "web.3");

    // The overlay namespace holds the VXLAN device as specified.
    let vni = node.json(&["network", "inspect", "app"])["vni"]
        .as_u64()
        .expect("vni");
    assert!(vni >= 4096);
    let ov = node.netns_dir().join("ov-app");
    let link = text(&in_netns(
        &ov,
        &["ip", "-d", "link", "show", &format!("vxlan{vni}")],
    ));
    assert!(link.contains(&format!("vxlan id {vni}")), "{link}");
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    let eth0 = text(&node.exec("web.1", &["ip", "link", "show", "eth0"]));
    assert!(eth0.contains("mtu 1450"), "{eth0}");
    // The sandbox's resolver points at the embedded DNS address.
    let resolv = text(&node.exec("web.1", &["cat", "/etc/resolv.conf"]));
    assert!(
        resolv.contains("nameserver 127.0.0.11") && resolv.contains("ndots:0"),
        "{resolv}"
    );

    // Restarting the daemon adopts the tasks: same processes, same addresses, still answering.
    let before = pids(&node);
    let vip = web_vip(&node);
    node.stop_daemon();
    // While it is down, someone deletes the overlay's VXLAN device and its load-balancer table;
    // the restarted daemon puts both back.
    let in_ov = |script: &str| in_netns(&ov, &["sh", "-c", script]);
    let lb_tables = || {
        text(&in_ov("nft list tables"))
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let tables = lb_tables();
    assert!(!tables.is_empty(), "ov-app has a load-balancer table");
    let o = in_ov(&format!(
        "ip link del vxlan{vni} && for t in $(nft list tables | cut -d' ' -f3); do nft delete table ip $t; done"
    ));
    assert!(o.status.success(), "{}", errtext(&o));
    assert!(lb_tables().is_empty());
    node.start_daemon();
    wait_for(
        "VXLAN device and lb table repaired",
        Duration::from_secs(10),
        || {
            let link = text(&in_ov(&format!("ip -d link show vxlan{vni}")));
            (link.contains(&format!("vxlan id {vni}")) && lb_tables() == tables).then_some(())
        },
    );
    // The store keeps the old pids whether or not the agent adopted them, so wait for the
    // agent to say it adopted all three, then check the processes really are the old ones.
    wait_for("tasks adopted", Duration::from_secs(10), || {
        let adopted = node
            .daemon_log()
            .matches("adopted running task container")
            .count();
        (adopted >= before.len()).then_some(())
    });
    assert_eq!(pids(&node), before);
    for (task, pid) in &before {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{task}'s process {pid} did not survive the restart"
        );
    }
    assert_eq!(node.task_ip("web.2", "app"), ip2);
    assert_eq!(curl_task_name(&node, "web.1", &ip2), "web.2");
    // The VIP is the same, and the repaired table balances it again.
    assert_eq!(web_vip(&node), vip);
    assert!(curl_task_name(&node, "web.1", &vip).starts_with("web."));

    // Scale down: one task left, the other sandboxes gone when the command returns.
    node.ok(&["service", "scale", "web=1"]);
    let tasks = node.json(&["task", "ls"]);
    assert_eq!(tasks.as_array().map(|a| a.len()), Some(1), "{tasks}");
    let (ns, _, _) = node.footprint();
    assert!(
        ns.contains(&"task-web.1".to_string())
            && !ns.iter().any(|n| n == "task-web.2" || n == "task-web.3"),
        "{ns:?}"
    );

    // Remove everything: back to what the node looked like before.
    node.ok(&["service", "rm", "web"]);
    node.ok(&["network", "rm", "app"]);
    let mut last = None;
    let done = wait_for_or_timeout(Duration::from_secs(10), || {
        let now = node.footprint();
        let same = now == baseline;
        last = Some(now);
        same.then_some(())
    });
    assert!(
        done.is_some(),
        "footprint not back to baseline:\nbefore {baseline:#?}\nafter {last:#?}"
    );
    let nets = node.json(&["network", "ls"]);
    let names: Vec<&str> = nets
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["ingress"],
        "only the routing mesh's own network is left"
    );
}

#[test]
fn overlays_with_the_same_subnet_are_isolated() {
    if !root_or_skip("overlays_with_the_same_subnet_are_isolated") {
        return;
    }
    let node = Node::start("iso");
    node.ok(&["network", "create", "--subnet", "10.77.0.0/24", "red"]);
    node.ok(&["network", "create", "--subnet", "10.77.0.0/24", "blue"]);
    let red = node.json(&["network", "inspect", "red"]);
    let blue = node.json(&["network", "inspect", "blue"]);
    assert_ne!(red["vni"], blue["vni"], "tenants are told apart by VNI");
    for (svc, net) in [("r", "red"), ("b", "blue")] {
        node.ok(&[
            "service",
            "create",
            "--name",
            svc,
            "--replicas",
            "2",
            "--network",
            net,
            "--",
            "routemesh",
            "whoami",
            "--port",
            "80",
        ]);
    }
    // Same addresses on both overlays, each answered by its own peer.
    let r2 = node.task_ip("r.2", "red");
    let b2 = node.task_ip("b.2", "blue");
    assert_eq!(r2, b2, "both overlays hand out the same first addresses");
    assert_eq!(curl_task_name(&node, "r.1", &r2), "r.2");
    assert_eq!(curl_task_name(&node, "b.1", &b2), "b.2");
    // One service cannot join both.
    let err = node.fails(&[
        "service",
        "create",
        "--name",
        "both",
        "--network",
        "red",
        "--network",
        "blue",
        "--",
        "routemesh",
        "whoami",
    ]);
    assert!(err.contains("overlap"), "{err}");
}

#[test]
fn bridge_network_and_gateway_bridge_egress() {
    if !root_or_skip("bridge_network_and_gateway_bridge_egress") {
        return;
    }
    let node = Node::start("brg");
    // An outside host joined to the node by a veth, with a server of its own.
    let world = Netns::new(&unique("world")).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (unique("va"), unique("vb"));
    let (a, b) = (
        &a[a.len().saturating_sub(12)..],
        &b[b.len().saturating_sub(12)..],
    );
    node.ns.sh_ok(&format!(
        "ip link add {a} type veth peer name {b} && ip link set {b} netns {} && ip addr add 192.168.77.1/24 dev {a} && ip link set {a} up",
        world.name
    ));
    world.sh_ok(&format!(
        "ip addr add 192.168.77.2/24 dev {b} && ip link set {b} up"
    ));
    let mut server = world
        .cmd(bin().to_str().unwrap_or("routemesh"))
        .args(["whoami", "--port", "8000"])
        .env("ROUTEMESH_TASK_NAME", "world")
        .spawn()
        .expect("world server");

    node.ok(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.88.0.0/24",
        "lan",
    ]);
    // The agent builds the bridge right after the network lands in the store.
    wait_for(
        "bridge rmb-lan with its gateway",
        Duration::from_secs(10),
        || {
            let o = node.ns.sh("ip -br addr show rmb-lan");
            text(&o).contains("10.88.0.1/24").then_some(())
        },
    );
    node.ok(&[
        "service",
        "create",
        "--name",
        "svc",
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
    let ip2 = node.task_ip("svc.2", "lan");
    assert_eq!(curl_task_name(&node, "svc.1", &ip2), "svc.2");
    // Egress: the world sees the node's address (masqueraded), not the task's.
    let body = wait_for(
        "egress through rm_gwbridge",
        Duration::from_secs(10),
        || {
            let o = node.exec(
                "svc.1",
                &["curl", "-s", "--max-time", "2", "http://192.168.77.2:8000/"],
            );
            let t = text(&o);
            t.contains("Task: world").then_some(t)
        },
    );
    assert!(body.contains("RemoteAddr: 192.168.77.1:"), "{body}");
    let nft = node.ns.sh_ok("nft list table ip routemesh");
    assert!(
        nft.contains("ip saddr 10.88.0.0/24 oifname != \"rmb-lan\" masquerade"),
        "{nft}"
    );
    assert!(
        nft.contains("ip saddr 172.18.0.0/16 oifname != \"rm_gwbridge\" masquerade"),
        "{nft}"
    );

    // A bridge subnet may not overlap anything on the node.
    let err = node.fails(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "192.168.77.0/25",
        "x",
    ]);
    assert!(err.contains("overlaps 192.168.77.0/24"), "{err}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn tasks_restart_log_and_see_their_env() {
    if !root_or_skip("tasks_restart_log_and_see_their_env") {
        return;
    }
    let node = Node::start("logs");
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "echo",
        "--network",
        "app",
        "--env",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        "echo $GREETING from $ROUTEMESH_TASK_NAME on $(hostname); exec sleep 1000",
    ]);
    let logs = wait_for("the task's log line", Duration::from_secs(10), || {
        let l = node.ok(&["service", "logs", "echo"]);
        l.contains("hello from echo.1 on echo.1").then_some(l)
    });
    assert!(logs.starts_with("echo.1@node1"), "{logs}");

    // Kill the task's process: it is restarted in the same sandbox with a new pid.
    let first = node.json(&["task", "ls"])[0]["pid"].as_u64().expect("pid");
    let _ = run(std::process::Command::new("kill").args(["-9", &first.to_string()]));
    let second = wait_for("the task restarted", Duration::from_secs(10), || {
        let t = node.json(&["task", "ls"]);
        let pid = t[0]["pid"].as_u64()?;
        (pid != first && t[0]["state"] == "running").then_some(pid)
    });
    assert_ne!(first, second);
    let logs = node.ok(&["service", "logs", "echo"]);
    assert_eq!(logs.matches("hello from echo.1").count(), 2, "{logs}");

    // A task that cannot start (its command exits at once, every time): `service create`
    // fails and says which task and why, instead of waiting out its timeout.
    let err = node.fails(&[
        "service",
        "create",
        "--name",
        "crash",
        "--network",
        "app",
        "--",
        "sh",
        "-c",
        "echo no config >&2; exit 3",
    ]);
    assert!(err.contains("task crash.1 cannot start"), "{err}");
    assert!(err.contains("exit"), "the reason names the exit: {err}");
    eprintln!("create of a crashing service: {err}");
    let logs = node.ok(&["service", "logs", "crash"]);
    assert!(logs.contains("no config"), "{logs}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !root_or_skip("bad_input_is_refused_and_changes_nothing") {
        return;
    }
    let node = Node::start("bad");
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        "10.99.0.0/24",
        "lan",
    ]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--network",
        "app",
        "--",
        "routemesh",
        "whoami",
    ]);
    // What a refused request must leave as it was.
    let snapshot = || {
        (
            node.ok(&["network", "ls", "--format", "json"]),
            node.ok(&["service", "ls", "--format", "json"]),
            node.ok(&["service", "inspect", "web", "--format", "json"]),
            node.ok(&["task", "ls", "--format", "json"]),
            node.footprint(),
        )
    };
    let before = snapshot();
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "bad name"], "invalid network name"),
        (
            &["network", "create", "--subnet", "10.1.0.0/33", "n2"],
            "invalid subnet",
        ),
        (
            &[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                "10.99.0.128/25",
                "lan2",
            ],
            "overlaps bridge network \"lan\"",
        ),
        (
            &["network", "create", "--driver", "ipvlan", "n3"],
            "invalid driver",
        ),
        (
            &["network", "create", "--driver", "macvlan", "n3"],
            "needs --opt parent=IF",
        ),
        (&["network", "create", "app"], "already exists"),
        (&["network", "rm", "app"], "in use by service web"),
        (&["network", "rm", "nope"], "not found"),
        (
            &["service", "create", "--name", "web", "--", "true"],
            "already exists",
        ),
        (
            &["service", "create", "--name", "Bad_Name", "--", "true"],
            "invalid service name",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "s2",
                "--network",
                "nope",
                "--",
                "true",
            ],
            "network \"nope\" not found",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "s3",
                "--replicas",
                "-1",
                "--",
                "true",
            ],
            "invalid replicas -1",
        ),
        (
            &[
                "service",
                "create",
                "--name",
                "s4",
                "--",
                "no-such-command-xyz",
            ],
            "not found in PATH",
        ),
        (
            &[
                "service", "create", "--name", "s5", "--env", "1X=y", "--", "true",
            ],
            "invalid --env",
        ),
        (&["service", "scale", "web=-2"], "invalid replicas -2"),
        (
            &["service", "scale", "nope=2"],
            "service \"nope\" not found",
        ),
        (&["service", "rm", "nope"], "not found"),
        (
            &["exec", "nope.1", "--", "true"],
            "task \"nope.1\" not found",
        ),
    ];
    for (args, want) in cases {
        let err = node.fails(args);
        assert!(
            err.contains(want),
            "routemesh {args:?}: expected {want:?} in {err:?}"
        );
    }
    let after = snapshot();
    assert_eq!(before, after, "refused requests must change nothing");
}

#[test]
fn address_pool_exhaustion_is_a_clear_error() {
    if !root_or_skip("address_pool_exhaustion_is_a_clear_error") {
        return;
    }
    let node = Node::start("pool");
    node.ok(&["network", "create", "--subnet", "10.66.0.0/30", "tiny"]);
    // A /30 has two hosts: the gateway and one task.
    let err = node.fails(&[
        "service",
        "create",
        "--name",
        "big",
        "--replicas",
        "2",
        "--network",
        "tiny",
        "--",
        "true",
    ]);
    assert!(
        err.contains("free addresses, 3 more are needed (one per task, one for the VIP)"),
        "{err}"
    );
    assert!(node
        .fails(&["service", "inspect", "big"])
        .contains("not found"));
}

#[test]
fn dataplane_choice_follows_the_kernel() {
    if !root_or_skip("dataplane_choice_follows_the_kernel") {
        return;
    }
    let has_ipvs = routemesh_lb::ipvs::ipvs_available().is_ok();
    let ns = Netns::new(&unique("dp")).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(&ns.name);
    let out = run(ns
        .cmd(bin().to_str().unwrap_or("routemesh"))
        .args(["daemon", "--dataplane", "ipvs", "--run-dir"])
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("PATH", path_with_bin()));
    if has_ipvs {
        eprintln!("this kernel has IPVS: the VM tests cover --dataplane ipvs");
    } else {
        assert!(
            !out.status.success(),
            "--dataplane ipvs must refuse to start"
        );
        let err = errtext(&out);
        assert!(
            err.contains("--dataplane ipvs refused") && err.contains("IPVS"),
            "{err}"
        );
        assert!(!dir.exists(), "a refused start changes nothing");
    }
    // auto runs, and says which dataplane it took and why.
    let node = Node::start("auto");
    let log = node.daemon_log();
    let want = if has_ipvs {
        "dataplane: ipvs (auto"
    } else {
        "dataplane: nftables (auto: no IPVS"
    };
    assert!(log.contains(want), "{}", tail(&log, 20));
}

#[test]
fn config_file_and_routemesh_host() {
    if !root_or_skip("config_file_and_routemesh_host") {
        return;
    }
    // Keys in the TOML file are spelled like the flags; flags given on the command line win
    // (the harness passes --node-name node1, the file says otherwise).
    let conf = std::env::temp_dir().join(format!("{}.toml", unique("conf")));
    std::fs::write(
        &conf,
        "node-name = \"from-file\"\ningress-subnet = \"10.254.0.0/16\"\ndns-ttl = 2\n",
    )
    .expect("writing the config file");
    let conf_arg = conf.display().to_string();
    let node = Node::start_with("conf", &["--config", &conf_arg]);
    let _ = std::fs::remove_file(&conf);

    // ROUTEMESH_HOST picks the socket when --host is not given.
    let via_env = |args: &[&str]| {
        run(std::process::Command::new(bin())
            .args(args)
            .env("ROUTEMESH_HOST", node.socket())
            .env("PATH", path_with_bin()))
    };
    let o = via_env(&["network", "inspect", "ingress", "--format", "json"]);
    assert!(o.status.success(), "{}", errtext(&o));
    let ingress: serde_json::Value = serde_json::from_str(&text(&o)).expect("json");
    assert_eq!(ingress["subnet"], "10.254.0.0/16", "{ingress}");
    let o = via_env(&["node", "ls"]);
    let ls = text(&o);
    assert!(ls.contains("node1") && !ls.contains("from-file"), "{ls}");

    // The ingress sandbox's leg sits in the configured subnet.
    let sbox = node.netns_dir().join("ingress_sbox");
    let addrs = text(&in_netns(&sbox, &["ip", "-4", "-o", "addr", "show"]));
    assert!(addrs.contains(" 10.254."), "{addrs}");

    // The DNS TTL from the file is what a task's resolver answers with.
    node.ok(&["network", "create", "app"]);
    node.client_on("app");
    let answer = wait_for(
        "client.1 in its own resolver",
        Duration::from_secs(10),
        || {
            let a = text(&node.exec("client.1", &["dig", "+noall", "+answer", "client.1"]));
            a.contains("client.1.").then_some(a)
        },
    );
    let ttl: Vec<&str> = answer.split_whitespace().skip(1).take(1).collect();
    assert_eq!(ttl, ["2"], "{answer}");
}

#[test]
fn bad_store_settings_refuse_to_start_and_change_nothing() {
    if !root_or_skip("bad_store_settings_refuse_to_start_and_change_nothing") {
        return;
    }
    let ns = Netns::new(&unique("st")).unwrap_or_else(|e| panic!("{e}"));
    // Removed with `tmp`, even when an assertion fails.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let daemon = |extra: &[&str]| {
        run(ns
            .cmd(bin().to_str().unwrap_or("routemesh"))
            .args(["daemon", "--run-dir"])
            .arg(dir.join("run"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("PATH", path_with_bin()))
    };
    let missing_ca = dir.join("missing-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap_or("/nonexistent/ca.pem");
    let cases: &[(&[&str], &str)] = &[
        // The CA file is read before anything is dialled, and named when it is missing.
        (
            &[
                "--store",
                "etcd://127.0.0.1:2379",
                "--etcd-cacert",
                missing_ca,
            ],
            missing_ca,
        ),
        (
            &[
                "--store",
                "etcd://127.0.0.1:2379",
                "--etcd-cert",
                "/c.pem",
                "--etcd-key",
                "/c.key",
            ],
            "need --etcd-cacert",
        ),
        // Nothing listens in this fresh namespace: unreachable etcd is named, not waited on.
        (&["--store", "etcd://127.0.0.1:2379"], "127.0.0.1:2379"),
        (&["--store", "consul://x"], "invalid --store"),
    ];
    for (args, want) in cases {
        let out = daemon(args);
        assert!(!out.status.success(), "{args:?} must refuse to start");
        let err = errtext(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        // It may have made its own (empty) directories, but nothing else: no socket, no
        // namespaces, no store file, no links.
        let run_dir = dir.join("run");
        assert!(!run_dir.join("routemesh.sock").exists(), "{args:?}");
        let netns = std::fs::read_dir(run_dir.join("netns"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert_eq!(netns, 0, "{args:?}: no namespaces");
        assert!(!dir.join("state/state.json").exists(), "{args:?}");
        let links = ns.sh_ok("ip -o link show");
        assert_eq!(links.lines().count(), 1, "{args:?}: only lo: {links}");
    }
}
