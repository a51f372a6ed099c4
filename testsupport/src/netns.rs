//! Network namespaces a test makes (`ip netns add`), and ways to act inside one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::cmd::{errtext, output, run, text, TestError};

/// A named network namespace (`/run/netns/NAME`). Dropping it kills every process inside
/// (a daemon's tasks outlive the daemon by design) and deletes it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns, TestError> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` run inside the namespace, keeping our mount namespace (`nsenter --net`, not
    /// `ip netns exec`, which would hide a daemon's namespace mounts).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String, TestError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `PROGRAM ARGS...` inside the namespace; its output when it succeeded.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, TestError> {
        let net = format!("--net={}", self.path().display());
        let mut all = vec![net.as_str(), program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// A shell script inside the namespace, whatever its exit status.
    pub fn sh(&self, script: &str) -> Output {
        output(self.cmd("sh").args(["-c", script]))
    }

    /// A shell script inside the namespace that must succeed (panics otherwise); its output.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "in {}: {script}: {}",
            self.name,
            errtext(&o)
        );
        text(&o)
    }

    /// Starts `program args...` inside the namespace; killed when the guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<ChildGuard, TestError> {
        let child = self
            .cmd(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| TestError::Spawn {
                command: format!("{program} in {}", self.name),
                source,
            })?;
        Ok(ChildGuard(child))
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key_value: &str) -> Result<(), TestError> {
        self.exec("sysctl", &["-q", "-w", key_value]).map(|_| ())
    }

    /// Runs `f` on a fresh thread that entered this namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, TestError> {
        in_netns(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        routemesh_netdev::netns::kill_processes_in(&self.path());
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

/// Runs `f` on a scoped thread that entered the network namespace bound at `path`; the
/// calling thread's namespace never changes.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, TestError> {
    let label = path.display().to_string();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(path).map_err(|source| TestError::Io {
                    what: format!("opening {label}"),
                    source,
                })?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    TestError::Io {
                        what: format!("entering {label}"),
                        source: e.into(),
                    }
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| TestError::Panicked {
                netns: label.clone(),
            })?
    })
}

/// Runs `args` in the network namespace bound at `ns` (a daemon's sandbox, overlay
/// namespace...), whatever its exit status.
pub fn nsenter(ns: &Path, args: &[&str]) -> Output {
    output(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(args),
    )
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), TestError> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
