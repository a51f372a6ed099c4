//! Namespace plumbing for the kernel tests and the benchmark (never product code): named
//! namespaces removed on drop, commands run in them, and closures run on a thread inside them.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use routemesh_nft::{Executor, NftCmd, NftError, Transaction};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion; Err carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Result<Self, String> {
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec NAME PROGRAM ARGS...`
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<ChildGuard, String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        let child = Command::new("ip")
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning {program} in {}: {e}", self.name))?;
        Ok(ChildGuard(child))
    }

    pub fn sysctl(&self, key_value: &str) -> Result<(), String> {
        self.exec("sysctl", &["-q", "-w", key_value]).map(|_| ())
    }

    /// Runs `f` on a fresh thread that entered this namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        in_netns(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A child process killed (by its own pid) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `f` on a scoped thread that entered the network namespace at `path`.
pub fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: setns on a valid fd; it only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| format!("thread in {path} panicked"))?
    })
}

/// Applies transactions in a namespace through the product's [`NftCmd`] and records every
/// script.
pub struct NsRunner {
    pub path: String,
    pub scripts: Mutex<Vec<String>>,
}

impl NsRunner {
    pub fn new(ns: &Netns) -> Self {
        NsRunner {
            path: ns.path(),
            scripts: Mutex::new(Vec::new()),
        }
    }

    pub fn last_script(&self) -> Option<String> {
        self.scripts.lock().ok()?.last().cloned()
    }

    /// Runs a script as it is (for tests that send text).
    pub fn run(&self, script: &str) -> Result<(), NftError> {
        if let Ok(mut scripts) = self.scripts.lock() {
            scripts.push(script.to_string());
        }
        NftCmd::in_netns(&self.path).run_script(script, "(test script)")
    }
}

impl Executor for NsRunner {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        if let Ok(mut scripts) = self.scripts.lock() {
            scripts.push(txn.render());
        }
        NftCmd::in_netns(&self.path).apply(txn)
    }
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), String> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
