//! Kernel-test harness: a throwaway node namespace with a daemon of its own, driven through
//! the real CLI, and torn down completely even when the test fails.
//!
//! Everything lives in namespaces the harness creates; nothing is added to the machine's
//! own namespace. Without root the tests are skipped loudly, never passed silently.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use routemesh_netdev::netns::kill_processes_in as kill_processes_in_netns;
// Each test binary uses some of these.
#[allow(unused_imports)]
pub use routemesh_testsupport::{
    errtext, root_or_skip, text, unique, wait_for, wait_for_or_timeout, Netns,
};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_routemesh"))
}

/// PATH with the routemesh binary first, so tasks can run `routemesh whoami`.
pub fn path_with_bin() -> String {
    let dir = bin()
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

pub fn run(cmd: &mut Command) -> Output {
    routemesh_testsupport::output(cmd)
}

/// Runs `args` in the network namespace bound at `ns` (a node's sandbox, overlay namespace...).
pub fn in_netns(ns: &Path, args: &[&str]) -> Output {
    routemesh_testsupport::nsenter(ns, args)
}

/// The output of a shell script run in the network namespace bound at `ns`.
pub fn sh_in(ns: &Path, script: &str) -> String {
    text(&in_netns(ns, &["sh", "-c", script]))
}

/// One node: a namespace, a state dir and run dir, and a daemon serving the CLI.
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub dir: PathBuf,
    pub daemon: Option<Child>,
    pub extra_args: Vec<String>,
}

impl Node {
    pub fn start(label: &str) -> Node {
        Node::start_with(label, &[])
    }

    pub fn start_with(label: &str, extra: &[&str]) -> Node {
        let name = unique(label);
        let ns = Netns::new(&name).unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut node = Node {
            name,
            ns,
            dir,
            daemon: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.start_daemon();
        node
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("routemesh.sock")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir().join("netns")
    }

    pub fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let mut cmd = self.ns.cmd(bin().to_str().unwrap_or("routemesh"));
        cmd.args(["daemon", "--node-name", "node1", "--log-level", "debug"])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(&self.extra_args)
            .env("PATH", path_with_bin())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.daemon = Some(cmd.spawn().expect("starting daemon"));
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            let o = self.rm(&["node", "ls"]);
            o.status.success().then_some(())
        });
        // The node is ready once its routing-mesh plumbing (ingress overlay and sandbox) is.
        let sbox = self.netns_dir().join("ingress_sbox");
        wait_for(
            "the ingress sandbox and DNAT",
            Duration::from_secs(20),
            || {
                let nft = text(&self.ns.sh("nft list table ip routemesh"));
                let links = text(&self.ns.sh("ip -o link show"));
                (sbox.exists() && nft.contains("@ingress_ports") && links.contains("rv"))
                    .then_some(())
            },
        );
    }

    /// Stops the daemon the way an operator would (SIGTERM); tasks stay up.
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .output();
            let _ = d.wait();
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The routemesh CLI against this node's daemon.
    pub fn rm(&self, args: &[&str]) -> Output {
        run(Command::new(bin())
            .arg("--host")
            .arg(self.socket())
            .args(args)
            .env("PATH", path_with_bin()))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.rm(args);
        assert!(
            o.status.success(),
            "routemesh {args:?} failed: {}{}\n--- daemon log tail ---\n{}",
            text(&o),
            errtext(&o),
            tail(&self.daemon_log(), 30)
        );
        text(&o)
    }

    /// Runs a command expected to fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.rm(args);
        assert!(
            !o.status.success(),
            "routemesh {args:?} should have failed: {}",
            text(&o)
        );
        errtext(&o)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    /// The overlay address of a task on `network`.
    pub fn task_ip(&self, task: &str, network: &str) -> String {
        let tasks = self.json(&["task", "ls"]);
        for t in tasks.as_array().into_iter().flatten() {
            if t["name"] == task {
                for a in t["addresses"].as_array().into_iter().flatten() {
                    if a["network"] == network {
                        let cidr = a["address"].as_str().unwrap_or_default();
                        return cidr.split('/').next().unwrap_or_default().to_string();
                    }
                }
            }
        }
        panic!("task {task} has no address on {network}");
    }

    /// A one-task service `client` on `network` that only sleeps: a place to run commands from.
    pub fn client_on(&self, network: &str) {
        self.ok(&[
            "service",
            "create",
            "--name",
            "client",
            "--network",
            network,
            "--",
            "sleep",
            "1000",
        ]);
    }

    pub fn exec(&self, task: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", task, "--"];
        a.extend_from_slice(cmd);
        self.rm(&a)
    }

    /// What routemesh has made on this node: namespaces, links, nft ruleset.
    pub fn footprint(&self) -> (Vec<String>, String, String) {
        let mut ns: Vec<String> = std::fs::read_dir(self.netns_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ns.sort();
        let links = self
            .ns
            .sh_ok("ip -o link show | awk -F': ' '{print $2}' | sort");
        let nft = self.ns.sh_ok("nft list ruleset");
        (ns, links, nft)
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_daemon();
        routemesh::topology::remove_containers(&self.run_dir());
        // Anything else left in the sandboxes: find it through the namespaces and stop it.
        let netns_dir = self.netns_dir();
        if let Ok(rd) = std::fs::read_dir(&netns_dir) {
            for e in rd.flatten() {
                kill_processes_in_netns(&e.path());
                let _ = Command::new("umount").arg("-l").arg(e.path()).output();
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&netns_dir).output();
        // Again, for a container the stopping daemon's runtime call made after the first pass.
        routemesh::topology::remove_containers(&self.run_dir());
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log of {} ---\n{}",
                self.name,
                tail(&self.daemon_log(), 60)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // self.ns drops next: its processes are killed and the node namespace deleted.
    }
}
