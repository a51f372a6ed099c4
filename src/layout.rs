//! Where a node keeps things under its run dir: the API socket, the named namespace files and
//! each task's files. The one place these names and paths are spelled; the planner, the agent,
//! the API server and the CLI all ask it.
//!
//! ```text
//! <run-dir>/routemesh.sock            the API (root only)
//! <run-dir>/daemon.lock               one daemon per run dir
//! <run-dir>/netns/ov-<network>        an overlay network's namespace (br0, vxlan<vni>)
//! <run-dir>/netns/ingress_sbox        the ingress sandbox
//! <run-dir>/netns/task-<task>         a task's sandbox
//! <run-dir>/runtime/                  the OCI runtime's state (`runc --root`)
//! <run-dir>/cgroup-parent             the cgroup of this node's tasks
//! <run-dir>/tasks/<task>/             resolv.conf, hosts, log; bundle/ (config.json, rootfs),
//!                                     upper/ and work/ (the task's writable layer)
//! ```

use std::path::{Path, PathBuf};

/// The run dir a daemon uses unless told otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/routemesh";
/// File name of the API socket in the run dir.
pub const SOCKET: &str = "routemesh.sock";
/// Name of the per-node ingress sandbox's namespace file.
pub const INGRESS_SBOX: &str = "ingress_sbox";
/// Prefixes of namespace file names, so leftovers can be recognised by name.
pub const OVERLAY_NS_PREFIX: &str = "ov-";
pub const TASK_NS_PREFIX: &str = "task-";

/// A daemon's run dir and everything it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join(SOCKET)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The directory of named namespace files (a shared mount point).
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    pub fn overlay_netns(&self, network: &str) -> PathBuf {
        self.netns_dir()
            .join(format!("{OVERLAY_NS_PREFIX}{network}"))
    }

    pub fn task_netns(&self, task: &str) -> PathBuf {
        self.netns_dir().join(format!("{TASK_NS_PREFIX}{task}"))
    }

    pub fn ingress_sbox_netns(&self) -> PathBuf {
        self.netns_dir().join(INGRESS_SBOX)
    }

    /// The OCI runtime's state (`runc --root`): this node's containers only.
    pub fn runtime_root(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// The cgroup under which this node's task cgroups live (written by the daemon), so a
    /// teardown without a daemon can remove it.
    pub fn cgroup_parent_file(&self) -> PathBuf {
        self.root.join("cgroup-parent")
    }

    /// The directory holding one directory per task.
    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }

    pub fn task(&self, task: &str) -> TaskPaths {
        TaskPaths {
            dir: self.tasks_dir().join(task),
        }
    }
}

/// The files of one task, under `<run-dir>/tasks/<task>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskPaths {
    pub dir: PathBuf,
}

impl TaskPaths {
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// The task's container: its bundle and writable layer.
    pub fn container(&self) -> routemesh_runtime::container::ContainerDirs {
        routemesh_runtime::container::ContainerDirs::new(&self.dir)
    }
}

/// What a namespace file in the netns dir belongs to, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsOwner<'a> {
    Task(&'a str),
    Overlay(&'a str),
    IngressSbox,
    /// Not a name routemesh gives.
    Unknown,
}

impl<'a> NetnsOwner<'a> {
    pub fn of(file_name: &'a str) -> NetnsOwner<'a> {
        if file_name == INGRESS_SBOX {
            NetnsOwner::IngressSbox
        } else if let Some(task) = file_name.strip_prefix(TASK_NS_PREFIX) {
            NetnsOwner::Task(task)
        } else if let Some(net) = file_name.strip_prefix(OVERLAY_NS_PREFIX) {
            NetnsOwner::Overlay(net)
        } else {
            NetnsOwner::Unknown
        }
    }
}

/// The file name of a namespace path (`ov-app` for `/run/routemesh/netns/ov-app`).
pub fn netns_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_owners() {
        let run = RunDir::new("/run/rm");
        assert_eq!(run.socket(), PathBuf::from("/run/rm/routemesh.sock"));
        assert_eq!(
            run.overlay_netns("app"),
            PathBuf::from("/run/rm/netns/ov-app")
        );
        assert_eq!(
            run.task_netns("web.1"),
            PathBuf::from("/run/rm/netns/task-web.1")
        );
        assert_eq!(
            run.task("web.1").log(),
            PathBuf::from("/run/rm/tasks/web.1/log")
        );
        for path in [
            run.overlay_netns("app"),
            run.task_netns("web.1"),
            run.ingress_sbox_netns(),
        ] {
            assert_ne!(NetnsOwner::of(&netns_name(&path)), NetnsOwner::Unknown);
        }
        assert_eq!(NetnsOwner::of("task-web.1"), NetnsOwner::Task("web.1"));
        assert_eq!(NetnsOwner::of("ov-app"), NetnsOwner::Overlay("app"));
        assert_eq!(NetnsOwner::of("other"), NetnsOwner::Unknown);
    }
}
