//! Kernel tests of tasks as OCI containers (runc): what a task can and cannot reach, images
//! loaded into a node and served through the routing mesh, replicas that do not share files,
//! resource limits the kernel enforces, bad input that changes nothing, and the runtime choice.
//! Everything is checked from outside: the CLI, `routemesh exec`, curl, the cgroup tree, runc.

mod common;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use routemesh_testsupport::oci_image::{build_busybox_image, TestImage};
use serde_json::Value;

const IMAGE: &str = "rmtest/busybox:1";
/// Docker's default capability set, as a root task's CapEff shows it.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, `systemd` and the
/// hybrid layout's `unified` v2 tree: runc makes a task's cgroup in each).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// A node whose cgroup parent (`/routemesh/node1-<hash>` in every hierarchy) is removed once
/// the node, its daemon and its containers are gone: the runtime deletes each task's cgroup
/// but nothing deletes the node's own, and a test must leave no cgroup behind.
struct CNode {
    node: Option<Node>,
    cgroup: String,
}

impl CNode {
    fn start(label: &str) -> CNode {
        CNode::start_with(label, &[])
    }

    fn start_with(label: &str, extra: &[&str]) -> CNode {
        CNode::wrap(Node::start_with(label, extra))
    }

    /// A node whose directories are under `parent` instead of the temp dir.
    fn start_in(parent: &Path, label: &str) -> CNode {
        let name = unique(label);
        let ns = Netns::new(&name).unwrap_or_else(|e| panic!("{e}"));
        let dir = parent.join(&name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut node = Node {
            name,
            ns,
            dir,
            daemon: None,
            extra_args: Vec::new(),
        };
        node.start_daemon();
        CNode::wrap(node)
    }

    fn wrap(node: Node) -> CNode {
        let run = node.run_dir();
        let cgroup = format!(
            "node1-{:08x}",
            routemesh::agent::plan::fnv32(&run.to_string_lossy())
        );
        CNode {
            node: Some(node),
            cgroup,
        }
    }

    /// `/sys/fs/cgroup/<controller>/routemesh/<node>/<task>` (cgroup v1, this machine).
    fn task_cgroup(&self, controller: &str, task: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("routemesh")
            .join(&self.cgroup)
            .join(task)
    }

    fn runtime_root(&self) -> PathBuf {
        self.run_dir().join("runtime")
    }

    /// The container ids runc knows under this node's runtime root.
    fn runc_list(&self) -> Vec<String> {
        let o = run(Command::new("runc")
            .arg("--root")
            .arg(self.runtime_root())
            .args(["list", "-q"]));
        let mut ids: Vec<String> = text(&o).lines().map(str::to_string).collect();
        ids.sort();
        ids
    }

    /// Stops the daemon and its containers and checks nothing of the node is left: no
    /// container, no mount, no namespace, no cgroup. (Drop cleans up the same way when a
    /// test fails early; only here is it asserted.)
    fn finish(mut self) {
        let node = self.node.take().expect("node");
        let name = node.name.clone();
        let runtime_root = node.run_dir().join("runtime");
        let dir = node.dir.clone();
        drop(node);
        let cgroup = self.cgroup.clone();
        // The runtime deleted every task's cgroup; only the node's empty parent is left.
        for h in cgroup_hierarchies() {
            let parent = h.join("routemesh").join(&cgroup);
            let tasks: Vec<_> = std::fs::read_dir(&parent)
                .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).collect())
                .unwrap_or_default();
            assert!(
                tasks.is_empty(),
                "task cgroups left in {}: {tasks:?}",
                parent.display()
            );
        }
        drop(self);
        let mounts = text(&run(Command::new("findmnt").args(["-rn", "-o", "TARGET"])));
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&name)).collect();
        assert!(left.is_empty(), "mounts left behind: {left:?}");
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "namespace {name} left behind"
        );
        // (Only asked when the root is still there: `runc list` would create it.)
        if runtime_root.exists() {
            let o = run(Command::new("runc")
                .arg("--root")
                .arg(&runtime_root)
                .args(["list", "-q"]));
            panic!(
                "runc state left in {}: {}",
                runtime_root.display(),
                text(&o)
            );
        }
        assert!(!dir.exists(), "{} left behind", dir.display());
        for h in cgroup_hierarchies() {
            let p = h.join("routemesh").join(&cgroup);
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
    }
}

impl Deref for CNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.node.as_ref().expect("node")
    }
}

impl DerefMut for CNode {
    fn deref_mut(&mut self) -> &mut Node {
        self.node.as_mut().expect("node")
    }
}

impl Drop for CNode {
    fn drop(&mut self) {
        // The node's Drop stops the daemon and deletes its containers (and their cgroups).
        drop(self.node.take());
        remove_cgroup_parent(&self.cgroup);
    }
}

/// Removes `/routemesh/<name>` from every cgroup hierarchy, task cgroups first (empty by
/// now: their processes were killed with the containers).
fn remove_cgroup_parent(name: &str) {
    for h in cgroup_hierarchies() {
        let parent = h.join("routemesh").join(name);
        if let Ok(rd) = std::fs::read_dir(&parent) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    if let Err(e2) = std::fs::remove_dir(e.path()) {
                        eprintln!("cleanup: rmdir {}: {e2}", e.path().display());
                    }
                }
            }
        }
        if parent.exists() {
            if let Err(e) = std::fs::remove_dir(&parent) {
                eprintln!("cleanup: rmdir {}: {e}", parent.display());
            }
        }
    }
}

/// `sh -c script` inside a task (`routemesh exec`, i.e. `runc exec`).
fn task_sh(node: &Node, task: &str, script: &str) -> Output {
    node.exec(task, &["sh", "-c", script])
}

/// The output of a script that must succeed inside a task.
fn task_sh_ok(node: &Node, task: &str, script: &str) -> String {
    let o = task_sh(node, task, script);
    assert!(
        o.status.success(),
        "in {task}: {script}: {}{}",
        text(&o),
        errtext(&o)
    );
    text(&o)
}

/// Asserts a script fails inside a task (the path it tries is closed); returns its output.
fn task_sh_fails(node: &Node, task: &str, script: &str) -> String {
    let o = task_sh(node, task, script);
    assert!(
        !o.status.success(),
        "in {task}: `{script}` should have failed: {}{}",
        text(&o),
        errtext(&o)
    );
    format!("{}{}", text(&o), errtext(&o))
}

/// The `task ls` row of `task`.
fn task_row(node: &Node, task: &str) -> Value {
    let tasks = node.json(&["task", "ls"]);
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == task)
        .cloned()
        .unwrap_or_else(|| panic!("no task {task} in {tasks}"))
}

/// task name -> pid, for the tasks of `service`.
fn task_pids(node: &Node, service: &str) -> BTreeMap<String, u64> {
    let tasks = node.json(&["task", "ls", "--service", service]);
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// What the node holds, as the CLI reports it: services, images, tasks, networks.
fn snapshot(node: &Node) -> (Value, Value, Value, Value) {
    (
        node.json(&["service", "ls"]),
        node.json(&["image", "ls"]),
        node.json(&["task", "ls"]),
        node.json(&["network", "ls"]),
    )
}

fn image_names(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = node
        .json(&["image", "ls"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn busybox_image(dir: &Path) -> TestImage {
    build_busybox_image(dir, IMAGE).unwrap_or_else(|e| panic!("building the test image: {e}"))
}

/// The first line of a file, trimmed (cgroup files hold one value).
fn read_value(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `program args...` with a deadline: its output, or a panic naming it when it hangs.
fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(o) => o.expect("waiting"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .output();
            panic!("{cmd:?} still running after {timeout:?}");
        }
    }
}

/// A node plus an outside client namespace joined to it by a veth (node 192.168.93.1,
/// client 192.168.93.2), as a user's machine would reach a published port.
const NODE_ADDR: &str = "192.168.93.1";

fn outside_client(node: &Node) -> Netns {
    let client = Netns::new(&unique("cli")).unwrap_or_else(|e| panic!("{e}"));
    node.ns.sh_ok(&format!(
        "ip link add rmtcli0 type veth peer name rmtcli1 && ip link set rmtcli1 netns {} && \
         ip addr add {NODE_ADDR}/24 dev rmtcli0 && ip link set rmtcli0 up",
        client.name
    ));
    client.sh_ok(&format!(
        "ip addr add 192.168.93.2/24 dev rmtcli1 && ip link set rmtcli1 up && \
         ip route add default via {NODE_ADDR}"
    ));
    client
}

/// Who answered each of `n` new connections to `url` (busybox httpd serves the hostname).
fn answers(client: &Netns, url: &str, n: usize) -> BTreeMap<String, usize> {
    let urls = vec![url; n].join(" ");
    let out = text(&client.sh(&format!(
        "curl -s --max-time 20 -H 'Connection: close' {urls}"
    )));
    let mut counts = BTreeMap::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------

#[test]
fn a_task_cannot_reach_the_node() {
    if !root_or_skip("a_task_cannot_reach_the_node") {
        return;
    }
    // The node's directories go under /var/tmp, not /tmp: a task's private /tmp would hide
    // them anyway, while its /var is a copy-on-write view of the host's, so only the
    // runtime's masking of the run and state dirs keeps them out of the task's sight.
    let node = CNode::start_in(Path::new("/var/tmp"), "cage");
    node.ok(&["network", "create", "app"]);
    // Root in the container (the default), serving HTTP as pid 1.
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
        "--port",
        "80",
    ]);
    // An unprivileged user.
    node.ok(&[
        "service",
        "create",
        "--name",
        "box",
        "--network",
        "app",
        "--user",
        "1000:1000",
        "--",
        "sleep",
        "1000",
    ]);
    let run_dir = node.run_dir();
    let socket = node.socket();
    let state_dir = node.dir.join("state");
    assert!(socket.exists() && state_dir.join("state.json").exists());
    let other_sandbox = node.netns_dir().join("task-web.1");
    assert!(
        other_sandbox.exists(),
        "web.1's sandbox is bound where expected"
    );

    for (task, uid, caps, pid1) in [
        ("web.1", "0", DOCKER_CAPS, "whoami"),
        ("box.1", "1000", "0000000000000000", "sleep"),
    ] {
        // Closed: the API socket is not even visible, let alone connectable.
        task_sh_fails(&node, task, &format!("test -e {}", socket.display()));
        task_sh_fails(
            &node,
            task,
            &format!(
                "curl -s --max-time 3 --unix-socket {} http://x/v1/services",
                socket.display()
            ),
        );
        // Closed: the state (the local store), the run dir and the namespaces bound there.
        task_sh_fails(
            &node,
            task,
            &format!("cat {}", state_dir.join("state.json").display()),
        );
        // ...while the node's own dir beside them is seen through the task's /var: the view
        // is live, and masking is what hides the two.
        task_sh_ok(&node, task, &format!("test -d {}", node.dir.display()));
        for dir in [&run_dir, &state_dir, &node.netns_dir()] {
            let o = task_sh(&node, task, &format!("ls -A {}", dir.display()));
            assert!(
                !o.status.success() || text(&o).trim().is_empty(),
                "{task} sees {}: {}",
                dir.display(),
                text(&o)
            );
        }
        // Closed: host processes. Its own pid namespace: pid 1 is the task's command and
        // only a handful of pids exist (pid 1, this shell, ls, grep).
        let pids = task_sh_ok(&node, task, "ls /proc | grep -c '^[0-9]'");
        let count: usize = pids.trim().parse().expect("a count");
        assert!(count <= 5, "{task} sees {count} processes");
        let cmdline = task_sh_ok(&node, task, "tr '\\0' ' ' < /proc/1/cmdline");
        assert!(cmdline.contains(pid1), "{task}'s pid 1: {cmdline}");
        let ps = task_sh_ok(&node, task, "ps ax");
        assert!(!ps.contains("routemesh daemon"), "{task} sees: {ps}");
        // Its user and capabilities (Docker's defaults for root, none for a user).
        assert_eq!(task_sh_ok(&node, task, "id -u").trim(), uid, "{task}");
        let capeff = task_sh_ok(&node, task, "grep CapEff /proc/self/status");
        assert_eq!(
            capeff.split_whitespace().nth(1),
            Some(caps),
            "{task}: {capeff}"
        );
        // Closed: mounting, making links, entering other namespaces (its own sandbox's
        // included: setns and unshare need privileges a task lacks, and seccomp blocks them).
        task_sh_fails(&node, task, "mkdir -p /tmp/m && mount -t proc proc /tmp/m");
        task_sh_fails(&node, task, "ip link add d0 type dummy");
        task_sh_fails(
            &node,
            task,
            &format!("nsenter --net={} true", other_sandbox.display()),
        );
        task_sh_fails(&node, task, "nsenter --net=/proc/1/ns/net true");
        task_sh_fails(&node, task, "unshare --net true");
        // Closed: the kernel's masked and read-only /proc files.
        // (/proc/timer_list holds kernel addresses; the host shows it to root.)
        assert_eq!(
            task_sh_ok(&node, task, "wc -c < /proc/timer_list").trim(),
            "0"
        );
        task_sh_fails(&node, task, "echo rmt > /proc/sys/kernel/domainname");
        // Closed: the host's root is read-only.
        task_sh_fails(&node, task, "touch /usr/rmt-probe");
        task_sh_fails(&node, task, "touch /etc/rmt-probe");

        // Open: private scratch space, its own name and resolver.
        task_sh_ok(
            &node,
            task,
            "echo hi > /tmp/rmt-probe && grep -q hi /tmp/rmt-probe",
        );
        task_sh_ok(
            &node,
            task,
            "echo hi > /var/tmp/rmt-probe && grep -q hi /var/tmp/rmt-probe",
        );
        assert_eq!(task_sh_ok(&node, task, "hostname").trim(), task);
        let resolv = task_sh_ok(&node, task, "cat /etc/resolv.conf");
        assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    }
    // The scratch writes stayed in the tasks: the host's /var/tmp is untouched.
    assert!(!Path::new("/var/tmp/rmt-probe").exists());
    assert!(!Path::new("/usr/rmt-probe").exists());

    // Open: another service, by name, over the overlay (as the unprivileged user).
    let body = wait_for(
        "box.1 reaching web by name",
        Duration::from_secs(10),
        || {
            let o = node.exec("box.1", &["curl", "-s", "--max-time", "3", "http://web/"]);
            let t = text(&o);
            t.contains("Task: web.1").then_some(t)
        },
    );
    assert!(body.contains("Task: web.1"), "{body}");
    node.finish();
}

#[test]
fn busybox_image_service_publishes_and_survives_a_daemon_restart() {
    if !root_or_skip("busybox_image_service_publishes_and_survives_a_daemon_restart") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let img = busybox_image(tmp.path());
    let mut node = CNode::start("img");
    let client = outside_client(&node);

    // Load the archive, and the layout directory under another name.
    let out = node.ok(&["image", "load", &img.archive.display().to_string()]);
    assert!(out.contains(IMAGE), "{out}");
    let out = node.ok(&[
        "image",
        "load",
        &img.layout_dir.display().to_string(),
        "--tag",
        "rmtest/busybox:layout",
    ]);
    assert!(out.contains("rmtest/busybox:layout"), "{out}");
    let images = node.json(&["image", "ls"]);
    for name in [IMAGE, "rmtest/busybox:layout"] {
        let row = images
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {images}"));
        assert_eq!(row["id"], img.id.as_str(), "{row}");
        assert!(row["size"].as_u64().unwrap_or(0) > 0, "{row}");
    }
    // An unused image can go.
    node.ok(&["image", "rm", "rmtest/busybox:layout"]);
    assert_eq!(image_names(&node), [IMAGE]);

    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--image",
        IMAGE,
        "--replicas",
        "3",
        "--network",
        "app",
        "-p",
        "8080:80",
    ]);
    let url = format!("http://{NODE_ADDR}:8080/");
    let all_three = |what: &str| {
        wait_for(what, Duration::from_secs(15), || {
            let c = answers(&client, &url, 30);
            (c.keys().map(String::as_str).collect::<Vec<_>>() == ["web.1", "web.2", "web.3"]
                && c.values().sum::<usize>() == 30)
                .then_some(c)
        })
    };
    all_three("web.1..3 answering on the published port");

    // The image's default user is root; `--user app` is looked up in the image's passwd.
    assert_eq!(task_sh_ok(&node, "web.1", "id -u").trim(), "0");
    node.ok(&[
        "service",
        "create",
        "--name",
        "apps",
        "--image",
        IMAGE,
        "--user",
        "app",
        "--network",
        "app",
        "--",
        "sleep",
        "1000",
    ]);
    assert_eq!(task_sh_ok(&node, "apps.1", "id -u").trim(), "1000");
    assert_eq!(task_sh_ok(&node, "apps.1", "id -g").trim(), "1000");
    // Another task reaches the service by name (busybox wget, through the VIP).
    // (Not `wget -T`: busybox 1.35's wget segfaults with a timeout; `timeout` bounds it.)
    let mut last = String::new();
    let body = wait_for_or_timeout(Duration::from_secs(10), || {
        let o = task_sh(&node, "apps.1", "timeout 5 wget -qO- http://web/");
        let t = text(&o);
        last = format!("{t}{}", errtext(&o));
        t.trim().starts_with("web.").then_some(t)
    });
    assert!(body.is_some(), "apps.1 cannot reach web by name: {last}");

    // A daemon restart adopts the containers: same processes, same runc containers.
    let pids = task_pids(&node, "web");
    let containers = node.runc_list();
    assert_eq!(containers.len(), 4, "{containers:?}");
    node.stop_daemon();
    node.start_daemon();
    wait_for(
        "all four containers adopted",
        Duration::from_secs(15),
        || {
            let n = node
                .daemon_log()
                .matches("adopted running task container")
                .count();
            (n >= 4).then_some(())
        },
    );
    assert_eq!(task_pids(&node, "web"), pids);
    for (task, pid) in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{task}'s process {pid} did not survive the restart"
        );
    }
    assert_eq!(node.runc_list(), containers);
    all_three("web.1..3 answering after the restart");

    // An image in use cannot be removed; the store is unchanged.
    let before = node.json(&["image", "ls"]);
    let err = node.fails(&["image", "rm", IMAGE]);
    assert!(
        err.contains(IMAGE) && err.contains("in use by task "),
        "{err}"
    );
    assert_eq!(node.json(&["image", "ls"]), before);
    // Once no task runs it, it can.
    node.ok(&["service", "rm", "web", "apps"]);
    node.ok(&["image", "rm", IMAGE]);
    assert!(image_names(&node).is_empty());
    drop(client);
    node.finish();
}

#[test]
fn nginx_replicas_do_not_share_pid_or_log_files() {
    if !root_or_skip("nginx_replicas_do_not_share_pid_or_log_files") {
        return;
    }
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!("SKIP: nginx_replicas_do_not_share_pid_or_log_files: /usr/sbin/nginx is missing");
        return;
    }
    // The host's own nginx files, which the tasks (same binary, same config) must not touch.
    let host_files = || {
        ["/run/nginx.pid", "/var/log/nginx/access.log"].map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        })
    };
    let host_before = host_files();

    let node = CNode::start("ngx");
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "ngx",
        "--replicas",
        "3",
        "--network",
        "app",
        "--",
        "nginx",
        "-g",
        "daemon off;",
    ]);
    node.client_on("app");
    let tasks = ["ngx.1", "ngx.2", "ngx.3"];
    for t in tasks {
        assert_eq!(task_row(&node, t)["state"], "running", "{t}");
        // Each master writes its own /run/nginx.pid: pid 1 of its own pid namespace.
        let pid = wait_for(
            &format!("{t}'s /run/nginx.pid"),
            Duration::from_secs(10),
            || {
                let o = task_sh(&node, t, "cat /run/nginx.pid");
                o.status.success().then(|| text(&o).trim().to_string())
            },
        );
        assert_eq!(pid, "1", "{t}");
        let cmdline = task_sh_ok(&node, t, "tr '\\0' ' ' < /proc/1/cmdline");
        assert!(cmdline.contains("nginx"), "{t}: {cmdline}");
    }

    // A marker in one task's log directory is not seen by the others.
    task_sh_ok(&node, "ngx.1", "echo one > /var/log/nginx/rmt-marker");
    task_sh_ok(&node, "ngx.1", "test -e /var/log/nginx/rmt-marker");
    for t in ["ngx.2", "ngx.3"] {
        task_sh_fails(&node, t, "test -e /var/log/nginx/rmt-marker");
    }
    assert!(!Path::new("/var/log/nginx/rmt-marker").exists());

    // A request to ngx.2 lands in ngx.2's access log only.
    let probe = format!("/{}", unique("probe"));
    let ip2 = node.task_ip("ngx.2", "app");
    wait_for("ngx.2 answering", Duration::from_secs(10), || {
        let o = node.exec(
            "client.1",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "3",
                &format!("http://{ip2}{probe}"),
            ],
        );
        (text(&o).trim() == "404").then_some(())
    });
    wait_for("the probe in ngx.2's log", Duration::from_secs(10), || {
        let log = text(&task_sh(&node, "ngx.2", "cat /var/log/nginx/access.log"));
        log.contains(&probe).then_some(())
    });
    for t in ["ngx.1", "ngx.3"] {
        let log = text(&task_sh(&node, t, "cat /var/log/nginx/access.log"));
        assert!(!log.contains(&probe), "{t} logged ngx.2's request: {log}");
    }
    let host_log = std::fs::read_to_string("/var/log/nginx/access.log").unwrap_or_default();
    assert!(!host_log.contains(&probe), "the host's access.log got it");
    assert_eq!(
        host_files(),
        host_before,
        "the host's /run/nginx.pid or access.log changed"
    );
    node.finish();
    assert_eq!(host_files(), host_before);
}

#[test]
fn memory_and_pids_limits_hold() {
    if !root_or_skip("memory_and_pids_limits_hold") {
        return;
    }
    let node = CNode::start("lim");
    node.ok(&["network", "create", "app"]);

    // 64 MiB in a 32 MiB cgroup: the OOM killer ends it, again and again, with a back-off.
    // --detach: the task never stays up long enough for create to call it started.
    node.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hog",
        "--network",
        "app",
        "--limit-memory",
        "32m",
        "--",
        "/usr/bin/python3",
        "-c",
        "b = bytearray(64 << 20); import time; time.sleep(100)",
    ]);
    let first = wait_for("hog.1 OOM-killed", Duration::from_secs(20), || {
        let t = task_row(&node, "hog.1");
        (t["message"] == "out of memory").then_some(t)
    });
    let restarts = first["restarts"].as_u64().unwrap_or(0);
    let started = Instant::now();
    let later = wait_for("hog.1 restarted", Duration::from_secs(30), || {
        let t = task_row(&node, "hog.1");
        (t["restarts"].as_u64().unwrap_or(0) >= restarts + 2).then_some(t)
    });
    eprintln!(
        "hog.1 OOM-killed: {first}\nafter {:?}: {later}",
        started.elapsed()
    );
    // Two more restarts took at least one back-off step (1 s, then 2 s...): not a hot loop.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "restarted without back-off: {first} -> {later}"
    );
    let t = task_row(&node, "hog.1");
    assert!(
        t["message"] == "out of memory" || t["state"] == "running" || t["state"] == "starting",
        "{t}"
    );

    // 20 pids: a fork bomb inside the task stops there.
    node.ok(&[
        "service",
        "create",
        "--name",
        "forks",
        "--network",
        "app",
        "--limit-pids",
        "20",
        "--",
        "sh",
        "-c",
        "sleep 1000",
    ]);
    let pids_cg = node.task_cgroup("pids", "forks.1");
    assert_eq!(read_value(&pids_cg.join("pids.max")), "20");
    let o = task_sh(
        &node,
        "forks.1",
        // The sleepers must not hold the exec's output open, or it would wait for them.
        "for i in $(seq 40); do sleep 100 >/dev/null 2>&1 & done; echo spawned",
    );
    let err = errtext(&o).to_lowercase();
    assert!(err.contains("fork"), "no fork failure reported: {err}");
    let current: u64 = read_value(&pids_cg.join("pids.current"))
        .parse()
        .expect("pids.current");
    assert!(
        (2..=20).contains(&current),
        "pids.current {current} in {}",
        pids_cg.display()
    );
    let procs = read_value(&pids_cg.join("cgroup.procs")).lines().count();
    assert!(procs <= 20, "{procs} processes in forks.1's cgroup");

    // Half a CPU: a CFS quota of half the period; memory limit in bytes.
    node.ok(&[
        "service",
        "create",
        "--name",
        "half",
        "--network",
        "app",
        "--limit-cpu",
        "0.5",
        "--limit-memory",
        "64m",
        "--",
        "sleep",
        "1000",
    ]);
    let cpu = node.task_cgroup("cpu", "half.1");
    assert_eq!(read_value(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read_value(&cpu.join("cpu.cfs_quota_us")), "50000");
    let mem = node.task_cgroup("memory", "half.1");
    assert_eq!(
        read_value(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    node.finish();
}

#[test]
fn bad_container_input_changes_nothing() {
    if !root_or_skip("bad_container_input_changes_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let img = busybox_image(tmp.path());
    let node = CNode::start("bad");
    node.ok(&["network", "create", "app"]);
    node.ok(&["image", "load", &img.archive.display().to_string()]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--image",
        IMAGE,
        "--network",
        "app",
    ]);
    let before = snapshot(&node);

    // Broken image files.
    let truncated = tmp.path().join("truncated.tar");
    let bytes = std::fs::read(&img.archive).expect("archive");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("truncated archive");
    let garbage = tmp.path().join("garbage.tar");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).expect("garbage file");
    let missing = tmp.path().join("no-such-image.tar");

    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            svc(&["--image", "no-such:1", "--", "sleep", "1"]),
            vec!["no-such:1", "not on any node"],
        ),
        (
            vec![
                "image".into(),
                "load".into(),
                truncated.display().to_string(),
            ],
            vec!["truncated.tar", "truncated"],
        ),
        (
            vec!["image".into(), "load".into(), garbage.display().to_string()],
            vec!["garbage.tar", "corrupt"],
        ),
        (
            vec!["image".into(), "load".into(), missing.display().to_string()],
            vec!["no-such-image.tar", "No such file"],
        ),
        (
            svc(&["--user", "nosuchuser", "--", "sleep", "1"]),
            vec!["nosuchuser", "unknown user"],
        ),
        (
            svc(&["--limit-memory", "lots", "--", "sleep", "1"]),
            vec!["--limit-memory", "lots"],
        ),
        (
            svc(&["--limit-memory", "1k", "--", "sleep", "1"]),
            vec!["--limit-memory", "1k"],
        ),
        (
            svc(&["--limit-cpu=-1", "--", "sleep", "1"]),
            vec!["--limit-cpu", "-1"],
        ),
        (
            svc(&["--limit-cpu", "abc", "--", "sleep", "1"]),
            vec!["--limit-cpu", "abc"],
        ),
        (
            svc(&["--limit-pids", "0", "--", "sleep", "1"]),
            vec!["--limit-pids", "0"],
        ),
        (
            vec!["image".into(), "rm".into(), IMAGE.into()],
            vec![IMAGE, "use"],
        ),
        (
            vec!["image".into(), "rm".into(), "no-such:2".into()],
            vec!["no-such:2", "not found"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, words) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = node.rm(&a);
        let err = errtext(&o);
        eprintln!("routemesh {}: {}", a.join(" "), err.trim());
        if o.status.success() {
            failures.push(format!("{a:?} succeeded: {}", text(&o)));
        } else if let Some(w) = words.iter().find(|w| !err.contains(**w)) {
            failures.push(format!("{a:?}: error does not say {w:?}: {err}"));
        }
        let now = snapshot(&node);
        if now != before {
            failures.push(format!(
                "{a:?} changed the node:\nbefore {before:#?}\nafter {now:#?}"
            ));
            // Undo, so the next case starts from the same state.
            if a.first() == Some(&"service") {
                let _ = node.rm(&["service", "rm", "bad"]);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A runtime that does not exist: the daemon refuses to start, names it, binds nothing.
    let ns = Netns::new(&unique("nort")).unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("nort");
    let o = run_with_deadline(
        ns.cmd(bin().to_str().unwrap_or("routemesh"))
            .args(["daemon", "--node-name", "nort"])
            .args(["--runtime", "routemesh-no-such-runtime"])
            .arg("--run-dir")
            .arg(dir.join("run"))
            .arg("--state-dir")
            .arg(dir.join("state")),
        Duration::from_secs(20),
    );
    eprintln!(
        "daemon --runtime routemesh-no-such-runtime: {}",
        errtext(&o).trim()
    );
    assert!(!o.status.success(), "daemon started: {}", errtext(&o));
    assert!(
        errtext(&o).contains("routemesh-no-such-runtime"),
        "{}",
        errtext(&o)
    );
    assert!(!dir.join("run").join("routemesh.sock").exists());
    let nsdir = dir.join("run").join("netns");
    let bound = std::fs::read_dir(&nsdir).map(|rd| rd.count()).unwrap_or(0);
    assert_eq!(bound, 0, "namespaces left in {}", nsdir.display());
    drop(ns);
    node.finish();
}

/// `service create --name bad ARGS...`
fn svc(args: &[&str]) -> Vec<String> {
    ["service", "create", "--name", "bad", "--network", "app"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn crun_is_selectable_where_it_runs() {
    if !root_or_skip("crun_is_selectable_where_it_runs") {
        return;
    }
    if run(Command::new("crun").arg("--version")).status.code() != Some(0) {
        eprintln!("SKIP: crun_is_selectable_where_it_runs: no crun on this machine");
        return;
    }
    let node = CNode::start_with("crun", &["--runtime", "crun"]);
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "c",
        "--network",
        "app",
        "--",
        "sleep",
        "1000",
    ]);
    let row = wait_for("c.1 running or failed", Duration::from_secs(20), || {
        let t = task_row(&node, "c.1");
        (t["state"] == "running" || !t["message"].as_str().unwrap_or_default().is_empty())
            .then_some(t)
    });
    let message = row["message"].as_str().unwrap_or_default().to_string();
    if row["state"] != "running" && message.contains("hybrid") {
        eprintln!(
            "\n*** SKIP: crun_is_selectable_where_it_runs: crun cannot run containers on this \
             machine's hybrid cgroup layout (the daemon did pick crun: {message}) ***\n"
        );
        node.finish();
        return;
    }
    assert_eq!(row["state"], "running", "{row}");
    assert_eq!(task_sh_ok(&node, "c.1", "hostname").trim(), "c.1");
    let o = run(Command::new("crun")
        .arg("--root")
        .arg(node.runtime_root())
        .arg("list"));
    assert!(text(&o).contains("c.1"), "crun list: {}", text(&o));
    node.finish();
}
