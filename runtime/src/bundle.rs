//! A task's OCI bundle: the `config.json` an OCI runtime runs, built from a plain, already
//! validated [`ContainerConfig`]. Pure: no I/O, so the whole spec is pinned down by tests.
//!
//! What every task gets, whatever its root: new pid, ipc, uts, mount and cgroup namespaces; the
//! network namespace routemesh prepared (by path); the embedded DNS's `resolv.conf` and `hosts`;
//! Docker's default capabilities, `noNewPrivileges`, the default seccomp profile, Docker's
//! masked and read-only `/proc` paths; the node's own directories masked; cgroup limits.

use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::defaults;
use crate::error::RuntimeError;

/// CFS period used to express a CPU limit (Docker's too).
pub const CPU_PERIOD_US: u64 = 100_000;

/// What the task's root filesystem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// An image's layers under a writable layer of the task's own, mounted at the bundle's
    /// `rootfs` before the runtime starts (as containerd's snapshotter does).
    Image,
    /// The host's root, read-only, with a private `/tmp` and `/run` (tmpfs) and a private
    /// copy-on-write `/var` whose writes go to `var_upper`.
    Host {
        var_upper: PathBuf,
        var_work: PathBuf,
    },
}

/// cgroup limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPUs in thousandths (`--limit-cpu 0.5` is 500).
    pub cpu_millis: Option<u64>,
    pub pids: Option<i64>,
}

/// The user a task's process runs as, resolved to numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Everything a task's bundle says, in plain values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    pub hostname: String,
    /// The sandbox routemesh prepared.
    pub netns: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub root: RootKind,
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub limits: Limits,
    /// Relative to the cgroup hierarchies' roots, e.g. `/routemesh/node1-1a2b/web.1`.
    pub cgroups_path: String,
    /// Paths of the node (run dir, state dir) masked inside the task, wherever they are.
    pub hidden: Vec<PathBuf>,
    /// Host files bound read-only (and executable) at the same path: a program a task
    /// without an image runs from a directory its private `/tmp` or `/run` hides.
    pub programs: Vec<PathBuf>,
}

fn spec_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> RuntimeError {
    move |source| RuntimeError::Spec {
        what,
        message: source.to_string(),
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, RuntimeError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err("mount"))
}

fn bind(dest: &str, source: &std::path::Path, ro: bool) -> Result<Mount, RuntimeError> {
    let mut opts = vec!["rbind", "nosuid", "nodev", "noexec"];
    if ro {
        opts.push("ro");
    }
    mount(dest, "bind", &source.to_string_lossy(), &opts)
}

/// The kernel file systems every container gets (as runc's and Docker's defaults).
fn system_mounts() -> Result<Vec<Mount>, RuntimeError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

/// The bundle's `config.json` for `cfg`, with `seccomp` as its filter.
pub fn spec(cfg: &ContainerConfig, seccomp: LinuxSeccomp) -> Result<Spec, RuntimeError> {
    let user = UserBuilder::default()
        .uid(cfg.user.uid)
        .gid(cfg.user.gid)
        .additional_gids(cfg.user.additional_gids.clone())
        .build()
        .map_err(spec_err("user"))?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(cfg.args.clone())
        .env(cfg.env.clone())
        .cwd(&cfg.cwd)
        .capabilities(defaults::default_process_capabilities())
        .no_new_privileges(true)
        .build()
        .map_err(spec_err("process"))?;

    let mut mounts = Vec::new();
    // The private /var goes first: on the host's root it must be mounted before /run and /tmp
    // become tmpfs, in case its layer lives there.
    if let RootKind::Host {
        var_upper,
        var_work,
    } = &cfg.root
    {
        let opts = format!(
            "lowerdir=/var,upperdir={},workdir={}",
            var_upper.display(),
            var_work.display()
        );
        mounts.push(mount("/var", "overlay", "overlay", &[&opts])?);
    }
    mounts.extend(system_mounts()?);
    if matches!(cfg.root, RootKind::Host { .. }) {
        for dir in ["/tmp", "/run"] {
            mounts.push(mount(
                dir,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777"],
            )?);
        }
    }
    for p in &cfg.programs {
        let path = p.to_string_lossy();
        mounts.push(mount(
            &path,
            "bind",
            &path,
            &["rbind", "ro", "nosuid", "nodev"],
        )?);
    }
    mounts.push(bind("/etc/resolv.conf", &cfg.resolv_conf, true)?);
    mounts.push(bind("/etc/hosts", &cfg.hosts, true)?);

    let namespaces = [
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Cgroup, None),
        (LinuxNamespaceType::Network, Some(cfg.netns.clone())),
    ]
    .into_iter()
    .map(|(typ, path)| {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().map_err(spec_err("namespace"))
    })
    .collect::<Result<Vec<_>, _>>()?;

    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(spec_err("device rule"))?]);
    if let Some(bytes) = cfg.limits.memory_bytes {
        let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
        // Swap counted with memory and capped at the same value: no swap beyond the limit.
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(spec_err("memory limit"))?,
        );
    }
    if let Some(millis) = cfg.limits.cpu_millis {
        let quota = i64::try_from(millis * CPU_PERIOD_US / 1000).unwrap_or(i64::MAX);
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(CPU_PERIOD_US)
                .quota(quota)
                .build()
                .map_err(spec_err("cpu limit"))?,
        );
    }
    if let Some(pids) = cfg.limits.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .map_err(spec_err("pids limit"))?,
        );
    }

    let mut masked: Vec<String> = defaults::MASKED_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    masked.extend(cfg.hidden.iter().map(|p| p.to_string_lossy().into_owned()));
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(spec_err("resources"))?)
        .cgroups_path(PathBuf::from(&cfg.cgroups_path))
        .masked_paths(masked)
        .readonly_paths(
            defaults::READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .seccomp(seccomp)
        .build()
        .map_err(spec_err("linux"))?;

    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(matches!(cfg.root, RootKind::Host { .. }))
        .build()
        .map_err(spec_err("root"))?;

    SpecBuilder::default()
        .version("1.0.2")
        .hostname(&cfg.hostname)
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err("spec"))
}

#[cfg(test)]
mod tests;
