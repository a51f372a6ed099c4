//! The OCI runtime (`runc`, or `crun`), driven through the CLI both document: `run --detach`,
//! `state`, `kill`, `delete`, `list`, `exec`. Each node keeps its containers under its own
//! `--root`, so nodes sharing a machine (tests, the demo) never see each other's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

use crate::error::RuntimeError;

/// The runtime a daemon uses unless told otherwise.
pub const DEFAULT_RUNTIME: &str = "runc";

/// A container as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub bundle: PathBuf,
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        self.status == "running" && self.pid != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciRuntime {
    name: String,
    binary: PathBuf,
    root: PathBuf,
    /// The machine runs from its initramfs, where `pivot_root` is impossible: the runtime is
    /// told `--no-pivot` (as Docker's `DOCKER_RAMDISK`). Only the VM tests run like this.
    no_pivot: bool,
}

/// Whether `/` is the kernel's initial root file system (an initramfs never switched away
/// from), read from a mountinfo text.
fn root_is_initramfs(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        left.split(' ').nth(4) == Some("/") && right.split(' ').next() == Some("rootfs")
    })
}

/// Finds `name` (a program on PATH, or a path) as an executable file.
pub fn find_binary(name: &str) -> Result<PathBuf, RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(RuntimeError::RuntimeMissing {
                name: name.to_string(),
                looked: name.to_string(),
            })
        };
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| RuntimeError::RuntimeMissing {
            name: name.to_string(),
            looked: format!("PATH={path}"),
        })
}

impl OciRuntime {
    /// The runtime `name` (`runc`, `crun` or a path) keeping its state under `root`.
    pub fn new(name: &str, root: impl Into<PathBuf>) -> Result<OciRuntime, RuntimeError> {
        let binary = find_binary(name)?;
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        let no_pivot =
            std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| root_is_initramfs(&m));
        Ok(OciRuntime {
            name,
            binary,
            root: root.into(),
            no_pivot,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null()).kill_on_drop(false);
        c
    }

    fn failed(&self, op: &'static str, id: &str, message: String) -> RuntimeError {
        RuntimeError::Command {
            runtime: self.name.clone(),
            op,
            container: id.to_string(),
            message,
        }
    }

    /// Runs a command and returns its stdout, or its stderr as the error.
    async fn output(
        &self,
        op: &'static str,
        id: &str,
        mut c: Command,
    ) -> Result<Vec<u8>, RuntimeError> {
        let out = c
            .output()
            .await
            .map_err(|e| self.failed(op, id, format!("starting {}: {e}", self.binary.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(self.failed(op, id, err));
        }
        Ok(out.stdout)
    }

    /// Creates and starts container `id` from `bundle`, detached: its stdout and stderr are
    /// `log`, it outlives us. Returns its pid.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        log: &Path,
    ) -> Result<u32, RuntimeError> {
        std::fs::create_dir_all(&self.root).map_err(RuntimeError::io("creating", &self.root))?;
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(RuntimeError::io("opening log", log))
        };
        let (out, err): (File, File) = (open()?, open()?);
        let pid_file = bundle.join("pid");
        let runtime_log = bundle.join("runtime.log");
        let _ = std::fs::remove_file(&runtime_log);
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&runtime_log)
            .args(["--log-format", "json", "run", "--detach"]);
        if self.no_pivot {
            c.arg("--no-pivot");
        }
        c.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let status = c.status().await.map_err(|e| {
            self.failed(
                "run",
                id,
                format!("starting {}: {e}", self.binary.display()),
            )
        })?;
        if !status.success() {
            let why = last_error(&runtime_log).unwrap_or_else(|| format!("exited with {status}"));
            // A container that failed half-way may be left created: take it away.
            let _ = self.delete(id).await;
            return Err(self.failed("run", id, why));
        }
        let text = std::fs::read_to_string(&pid_file)
            .map_err(RuntimeError::io("reading pid file", &pid_file))?;
        text.trim()
            .parse()
            .map_err(|_| self.failed("run", id, format!("pid file says {text:?}")))
    }

    /// Whether the runtime keeps anything for container `id` (runc and crun both keep one
    /// directory per container under their root): read without starting the runtime, so a
    /// first start costs one `run` only.
    pub fn knows(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    /// The container's state, `None` when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        if !self.knows(id) {
            return Ok(None);
        }
        let mut c = self.command();
        c.args(["state", id]);
        match self.output("state", id, c).await {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| RuntimeError::State {
                        runtime: self.name.clone(),
                        container: id.to_string(),
                        source,
                    })
            }
            // Gone between the check and the call.
            Err(_) if !self.knows(id) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under this runtime's root.
    pub async fn list(&self) -> Result<Vec<ContainerState>, RuntimeError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let mut c = self.command();
        c.args(["list", "--format", "json"]);
        let out = self.output("list", "*", c).await?;
        let text = String::from_utf8_lossy(&out);
        // runc prints `null` when there is none.
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str::<Vec<ContainerState>>(&text).map_err(|source| RuntimeError::State {
            runtime: self.name.clone(),
            container: "*".into(),
            source,
        })
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) to the container's processes.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let mut c = self.command();
        c.args(["kill", "--all", id, signal]);
        self.output("kill", id, c).await.map(|_| ())
    }

    /// Deletes the container, killing what still runs in it; a container the runtime does
    /// not know is already deleted.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.knows(id) {
            return Ok(());
        }
        let mut c = self.command();
        c.args(["delete", "--force", id]);
        match self.output("delete", id, c).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Command { message, .. })
                if message.contains("does not exist") || message.contains("No such file") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The command that runs `args` in container `id` (`runc exec`), with a terminal when
    /// `tty`; the caller wires its stdio.
    pub fn exec_command(&self, id: &str, args: &[String], tty: bool) -> std::process::Command {
        let mut c = std::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root).arg("exec");
        if tty {
            c.arg("--tty");
        }
        c.arg(id).args(args);
        c
    }
}

/// The last error message in a runtime's JSON log (`{"level":"error","msg":...}` lines).
fn last_error(log: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
        .next_back()
        .or_else(|| text.lines().last().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runtime_is_named() {
        let e = OciRuntime::new("routemesh-no-such-runtime", "/tmp/x").unwrap_err();
        assert!(e.to_string().contains("routemesh-no-such-runtime"), "{e}");
        let e = OciRuntime::new("/nonexistent/runc", "/tmp/x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/runc"), "{e}");
    }

    #[test]
    fn runtime_errors_come_from_its_json_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runtime.log");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"runc run failed: no such file\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log).as_deref(),
            Some("runc run failed: no such file")
        );
    }

    #[test]
    fn an_initramfs_root_is_told_from_a_mounted_one() {
        let initramfs =
            "1 1 0:2 / / rw - rootfs rootfs rw,size=500000k\n22 1 0:21 / /proc rw - proc proc rw\n";
        let disk =
            "24 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n25 24 0:5 / /tmp rw - tmpfs tmpfs rw\n";
        assert!(root_is_initramfs(initramfs));
        assert!(!root_is_initramfs(disk));
    }

    #[test]
    fn list_output_parses() {
        let text = r#"[{"ociVersion":"1.0.2","id":"web.1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"x","owner":""}]"#;
        let v: Vec<ContainerState> = serde_json::from_str(text).unwrap();
        assert!(v[0].is_running());
        assert_eq!(v[0].id, "web.1");
    }
}
