//! One task's container from start to end: its root mounted, its bundle written, the runtime
//! asked to run it; stopped with a signal and a grace period, deleted, its root unmounted.
//! Everything lives in the task's directory, so what a task leaves is found by its name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxSeccomp;

use crate::bundle::{spec, ContainerConfig, RootKind};
use crate::error::RuntimeError;
use crate::oci::OciRuntime;
use crate::rootfs;

/// Where a task's container keeps its files, under the task's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerDirs {
    pub task_dir: PathBuf,
}

impl ContainerDirs {
    pub fn new(task_dir: impl Into<PathBuf>) -> ContainerDirs {
        ContainerDirs {
            task_dir: task_dir.into(),
        }
    }
    /// The OCI bundle: config.json, rootfs, the runtime's pid file and log.
    pub fn bundle(&self) -> PathBuf {
        self.task_dir.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    /// The task's own writable layer (over an image, or over the host's /var).
    pub fn upper(&self) -> PathBuf {
        self.task_dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.task_dir.join("work")
    }
    /// The root kind for a task without an image.
    pub fn host_root(&self) -> RootKind {
        RootKind::Host {
            var_upper: self.upper(),
            var_work: self.work(),
        }
    }
}

/// What the root of a task is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootSource {
    /// An image's unpacked layers, bottom first.
    Image(Vec<PathBuf>),
    Host,
}

/// Mounts the root, writes the bundle and runs container `id`; returns its pid.
pub async fn start(
    rt: &OciRuntime,
    id: &str,
    dirs: &ContainerDirs,
    source: &RootSource,
    cfg: &ContainerConfig,
    seccomp: LinuxSeccomp,
    log: &Path,
) -> Result<u32, RuntimeError> {
    // A container left stopped (the process ended while nobody watched) is replaced.
    rt.delete(id).await?;
    match source {
        RootSource::Image(layers) => {
            rootfs::mount_image(id, &dirs.rootfs(), layers, &dirs.upper(), &dirs.work())?
        }
        RootSource::Host => rootfs::mount_host(id, &dirs.rootfs(), &dirs.upper(), &dirs.work())?,
    }
    let spec = spec(cfg, seccomp)?;
    let config = dirs.bundle().join("config.json");
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::Spec {
        what: "config.json",
        message: e.to_string(),
    })?;
    std::fs::write(&config, text).map_err(RuntimeError::io("writing", &config))?;
    rt.run_detached(id, &dirs.bundle(), log).await
}

/// Stops container `id`: `TERM`, `KILL` after `grace`; deletes it and unmounts its root.
/// `gone` resolves when the container's process has ended.
pub async fn stop<F>(
    rt: &OciRuntime,
    id: &str,
    dirs: &ContainerDirs,
    grace: Duration,
    gone: F,
) -> Result<(), RuntimeError>
where
    F: std::future::Future<Output = ()>,
{
    if rt.state(id).await?.is_some_and(|s| s.is_running()) {
        let _ = rt.kill(id, "TERM").await;
        if tokio::time::timeout(grace, gone).await.is_err() {
            let _ = rt.kill(id, "KILL").await;
        }
    }
    remove(rt, id, dirs).await
}

/// Deletes container `id` whatever its state (killing what runs) and unmounts its root.
pub async fn remove(rt: &OciRuntime, id: &str, dirs: &ContainerDirs) -> Result<(), RuntimeError> {
    rt.delete(id).await?;
    rootfs::unmount(id, &dirs.rootfs())
}

/// Removes every container under a node's runtime root, every task root mounted under
/// `tasks_dir` and the node's task cgroups (under `cgroup_parent`, as far as they are empty),
/// without a daemon: for tests and `demo` teardown, after a node is gone.
pub fn teardown_blocking(runtime_root: &Path, tasks_dir: &Path, cgroup_parent: Option<&str>) {
    if let Ok(rd) = std::fs::read_dir(runtime_root) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            for bin in ["runc", "crun"] {
                let _ = std::process::Command::new(bin)
                    .arg("--root")
                    .arg(runtime_root)
                    .args(["delete", "--force", &id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(tasks_dir) {
        for e in rd.flatten() {
            let dirs = ContainerDirs::new(e.path());
            let _ = rootfs::unmount("teardown", &dirs.rootfs());
        }
    }
    if let Some(parent) = cgroup_parent {
        // A process killed a moment ago may still hold its cgroup: try again for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !crate::cgroup::remove_empty_tree(parent) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
