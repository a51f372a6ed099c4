//! Task containers: run each task's container through the OCI runtime, notice at once when its
//! process ends (pidfd), restart it with back-off, stop it on request. A container outlives the
//! daemon; a restarted daemon adopts it from the runtime's state and restarts none.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routemesh_runtime::bundle::{ContainerConfig, Limits as CgroupLimits, ProcessUser};
use routemesh_runtime::container::{self, ContainerDirs, RootSource};
use routemesh_runtime::image::{resolve_user, ImageStore};
use routemesh_runtime::oci::OciRuntime;
use routemesh_runtime::oci_spec::runtime::LinuxSeccomp;
use routemesh_runtime::RuntimeError;
use tokio::sync::{mpsc, watch};

use super::exit::{wait_exit, ExitStatus};
use crate::model::{now_secs, Limits, TaskState, TaskStatus};

/// First restart delay (Docker's default is 5 s): long enough that a crashing task visibly
/// leaves the load balancers before it comes back.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long is considered healthy: its next failure starts back-off anew.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);
/// PATH inside an image that sets none (Docker's).
const IMAGE_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What `task ls` says of a task the kernel's OOM killer ended.
pub const OUT_OF_MEMORY: &str = "out of memory";

/// A task's container as planned: pure data, compared to tell whether it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The task's name, also the container's id.
    pub task: String,
    pub image: Option<String>,
    /// The service's command: the whole command without an image, the image's Cmd's
    /// replacement with one (empty: the image's Cmd).
    pub command: Vec<String>,
    /// routemesh's variables and the service's (which win); the image's come under both.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub limits: Limits,
    pub hostname: String,
    pub netns: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub log: PathBuf,
    pub dirs: ContainerDirs,
}

/// What every task container of this node shares: the runtime, the image store, the
/// security profile and what must stay hidden from tasks.
pub struct TaskRuntime {
    pub oci: OciRuntime,
    pub images: Arc<ImageStore>,
    pub seccomp: LinuxSeccomp,
    /// The node's own directories (run dir, state dir), masked in every task.
    pub hidden: Vec<PathBuf>,
    /// cgroup of this node's tasks, e.g. `/routemesh/node1-1a2b3c4d`.
    pub cgroup_parent: String,
}

/// Why a task's container could not start; the message goes into the task's status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("image {image:?}: {source}")]
    Image {
        image: String,
        #[source]
        source: routemesh_runtime::image::ImageError,
    },
    #[error("user {user:?}: {source}")]
    User {
        user: String,
        #[source]
        source: routemesh_runtime::image::ImageError,
    },
    #[error("no command: the image {image:?} has neither Entrypoint nor Cmd; give one after `--`")]
    NoCommand { image: String },
    #[error("empty command")]
    EmptyCommand,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl TaskRuntime {
    fn cgroups_path(&self, task: &str) -> String {
        format!("{}/{task}", self.cgroup_parent)
    }

    /// The container's plain config and root, from the plan and the image.
    fn resolve(&self, spec: &ContainerSpec) -> Result<(ContainerConfig, RootSource), StartError> {
        let (source, image_cfg, roots) = match &spec.image {
            Some(name) => {
                let img = self.images.get(name).map_err(|source| StartError::Image {
                    image: name.clone(),
                    source,
                })?;
                (
                    RootSource::Image(img.layers.clone()),
                    Some(img.config),
                    img.layers,
                )
            }
            None => (RootSource::Host, None, vec![PathBuf::from("/")]),
        };
        let mut env: Vec<(String, String)> = image_cfg
            .iter()
            .flat_map(|c| c.env.iter())
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        for (k, v) in &spec.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".into(), IMAGE_DEFAULT_PATH.into()));
        }
        let args = match &image_cfg {
            Some(c) => {
                let mut a = c.entrypoint.clone();
                a.extend(if spec.command.is_empty() {
                    c.cmd.clone()
                } else {
                    spec.command.clone()
                });
                if a.is_empty() {
                    return Err(StartError::NoCommand {
                        image: spec.image.clone().unwrap_or_default(),
                    });
                }
                a
            }
            None if spec.command.is_empty() => return Err(StartError::EmptyCommand),
            None => spec.command.clone(),
        };
        let user_spec = spec
            .user
            .clone()
            .or_else(|| image_cfg.as_ref().and_then(|c| c.user.clone()))
            .filter(|u| !u.is_empty());
        let user = match user_spec {
            None => ProcessUser::default(),
            Some(u) => {
                let r = resolve_user(&u, &roots).map_err(|source| StartError::User {
                    user: u.clone(),
                    source,
                })?;
                ProcessUser {
                    uid: r.uid,
                    gid: r.gid,
                    additional_gids: r.additional_gids,
                }
            }
        };
        let cwd = image_cfg
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|d| d.starts_with('/'))
            .unwrap_or_else(|| "/".into());
        let root = match source {
            RootSource::Image(_) => routemesh_runtime::bundle::RootKind::Image,
            RootSource::Host => spec.dirs.host_root(),
        };
        let cfg = ContainerConfig {
            hostname: spec.hostname.clone(),
            netns: spec.netns.clone(),
            resolv_conf: spec.resolv_conf.clone(),
            hosts: spec.hosts.clone(),
            root,
            args,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd,
            user,
            limits: CgroupLimits {
                memory_bytes: spec.limits.memory_bytes,
                cpu_millis: spec.limits.cpu_millis,
                pids: spec.limits.pids,
            },
            cgroups_path: self.cgroups_path(&spec.task),
            hidden: self.hidden.clone(),
            programs: Vec::new(),
        };
        let mut cfg = cfg;
        if matches!(source, RootSource::Host) {
            cfg.programs = hidden_program(&cfg.args, &cfg.env).into_iter().collect();
        }
        Ok((cfg, source))
    }

    async fn start(&self, spec: &ContainerSpec) -> Result<u32, StartError> {
        let (cfg, source) = self.resolve(spec)?;
        Ok(container::start(
            &self.oci,
            &spec.task,
            &spec.dirs,
            &source,
            &cfg,
            self.seccomp.clone(),
            &spec.log,
        )
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_under_tmp_is_bound_into_the_task() {
        let dir = tempfile::Builder::new()
            .prefix("rm-prog")
            .tempdir_in("/tmp")
            .unwrap();
        let prog = dir.path().join("tool");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("PATH={}:/usr/bin:/bin", dir.path().display());
        let args = |a: &str| vec![a.to_string()];
        assert_eq!(
            hidden_program(&args("tool"), std::slice::from_ref(&path)),
            Some(prog.clone())
        );
        assert_eq!(
            hidden_program(&args(&prog.display().to_string()), &[]),
            Some(prog.clone())
        );
        // Visible programs need nothing: the host's root is the task's.
        assert_eq!(
            hidden_program(&args("sh"), std::slice::from_ref(&path)),
            None
        );
        assert_eq!(hidden_program(&args("/bin/sh"), &[]), None);
        assert_eq!(hidden_program(&args("no-such-tool"), &[path]), None);
    }
}

#[derive(Clone, Debug)]
pub struct StatusEvent {
    pub task: String,
    pub status: TaskStatus,
}

struct Supervised {
    spec: ContainerSpec,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

pub struct Runner {
    procs: HashMap<String, Supervised>,
    events: mpsc::UnboundedSender<StatusEvent>,
    rt: Arc<TaskRuntime>,
}

impl Runner {
    pub fn new(events: mpsc::UnboundedSender<StatusEvent>, rt: Arc<TaskRuntime>) -> Runner {
        Runner {
            procs: HashMap::new(),
            events,
            rt,
        }
    }

    pub fn runtime(&self) -> &Arc<TaskRuntime> {
        &self.rt
    }

    /// Makes sure `spec` is supervised; a changed spec replaces the container.
    pub async fn ensure(&mut self, spec: ContainerSpec) {
        if let Some(cur) = self.procs.get(&spec.task) {
            if cur.spec == spec && !cur.done.is_finished() {
                return;
            }
            self.stop(&spec.task.clone()).await;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let events = self.events.clone();
        let s = spec.clone();
        let rt = self.rt.clone();
        let done = tokio::spawn(async move { supervise(rt, s, stop_rx, events).await });
        self.procs.insert(
            spec.task.clone(),
            Supervised {
                spec,
                stop: stop_tx,
                done,
            },
        );
    }

    /// Stops the task's container (TERM, then KILL after a grace period) and waits for it.
    pub async fn stop(&mut self, task: &str) {
        if let Some(p) = self.procs.remove(task) {
            let _ = p.stop.send(true);
            let _ = p.done.await;
        }
    }

    /// Stops several tasks concurrently and waits for all of them.
    pub async fn stop_all(&mut self, tasks: &[String]) {
        let mut waiting = Vec::new();
        for t in tasks {
            if let Some(p) = self.procs.remove(t) {
                let _ = p.stop.send(true);
                waiting.push(p.done);
            }
        }
        futures::future::join_all(waiting).await;
    }

    pub fn supervised(&self) -> Vec<String> {
        self.procs.keys().cloned().collect()
    }

    /// Removes the container of a task this daemon does not supervise (left from a task that
    /// no longer exists): killed, deleted, its root unmounted.
    pub async fn remove_orphan(
        &self,
        task: &str,
        dirs: &ContainerDirs,
    ) -> Result<(), RuntimeError> {
        container::remove(&self.rt.oci, task, dirs).await
    }

    /// The containers the runtime holds for this node.
    pub async fn containers(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .rt
            .oci
            .list()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }
}

fn status(
    state: TaskState,
    pid: Option<u32>,
    message: String,
    restarts: u32,
    ever_ran: bool,
) -> TaskStatus {
    TaskStatus {
        state,
        pid,
        message,
        restarts,
        ever_ran,
        updated_at: now_secs(),
    }
}

/// The running container's pid when the runtime already runs it (a daemon restart).
async fn adoptable(rt: &TaskRuntime, task: &str) -> Option<u32> {
    match rt.oci.state(task).await {
        Ok(Some(s)) if s.is_running() => Some(s.pid),
        _ => None,
    }
}

async fn supervise(
    rt: Arc<TaskRuntime>,
    spec: ContainerSpec,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<StatusEvent>,
) {
    let report = |st: TaskStatus| {
        let _ = events.send(StatusEvent {
            task: spec.task.clone(),
            status: st,
        });
    };
    let mut backoff = BACKOFF_FIRST;
    let mut restarts = 0u32;
    let mut ever_ran = false;
    loop {
        let started = match adoptable(&rt, &spec.task).await {
            Some(pid) => {
                tracing::info!(task = %spec.task, pid, "adopted running task container");
                Ok(pid)
            }
            None => rt.start(&spec).await.inspect(|pid| {
                tracing::info!(task = %spec.task, pid, runtime = rt.oci.name(), "task container started");
            }),
        };
        match started {
            Ok(pid) => {
                ever_ran = true;
                report(status(
                    TaskState::Running,
                    Some(pid),
                    String::new(),
                    restarts,
                    true,
                ));
                let since = Instant::now();
                tokio::select! {
                    exit = wait_exit(pid) => {
                        let message = if routemesh_runtime::cgroup::oom_killed(&rt.cgroups_path(&spec.task)) {
                            OUT_OF_MEMORY.to_string()
                        } else {
                            format!("process {exit}")
                        };
                        tracing::warn!(task = %spec.task, pid, "task container ended: {message}");
                        if since.elapsed() > HEALTHY_AFTER {
                            backoff = BACKOFF_FIRST;
                        }
                        // Said at once: a task that ends right after it started must not look
                        // running while the runtime cleans up.
                        report(status(TaskState::Failed, None, message, restarts, true));
                        // The cgroup and the runtime's record go; the root and its writable
                        // layer stay for the restart, as a Docker container's do.
                        if let Err(e) = rt.oci.delete(&spec.task).await {
                            tracing::warn!(task = %spec.task, error = %e, "deleting ended container");
                        }
                    }
                    _ = stopped(&mut stop) => {
                        let r = container::stop(&rt.oci, &spec.task, &spec.dirs, STOP_GRACE, async {
                            let _: ExitStatus = wait_exit(pid).await;
                        }).await;
                        match r {
                            Ok(()) => tracing::info!(task = %spec.task, pid, "task container stopped"),
                            Err(e) => tracing::warn!(task = %spec.task, error = %e, "stopping task container"),
                        }
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(task = %spec.task, error = %e, "task cannot start");
                report(status(
                    TaskState::Failed,
                    None,
                    e.to_string(),
                    restarts,
                    ever_ran,
                ));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => {
                let _ = container::remove(&rt.oci, &spec.task, &spec.dirs).await;
                return;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        restarts += 1;
    }
}

/// Directories a task on the host's root does not see: its `/tmp` and `/run` are its own.
const PRIVATE_DIRS: [&str; 2] = ["/tmp", "/run"];

/// The program `args[0]` names, found as the task would find it (its PATH), when it lives in
/// a directory the task's private `/tmp` or `/run` hides (a build tree under /tmp): it is
/// then bound into the task read-only at the same path. Only that file, not its directory.
fn hidden_program(args: &[String], env: &[String]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let prog = args.first()?;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let hidden = |p: &std::path::Path| PRIVATE_DIRS.iter().any(|d| p.starts_with(d));
    let found = if prog.contains('/') {
        Some(PathBuf::from(prog)).filter(|p| p.is_absolute() && executable(p))
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or_default();
        // The first PATH entry the task itself would find it in, if any, wins; else the
        // first hidden one.
        let candidates: Vec<PathBuf> = path
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| std::path::Path::new(d).join(prog))
            .filter(|p| executable(p))
            .collect();
        match candidates.iter().find(|p| !hidden(p)) {
            Some(_) => None,
            None => candidates.into_iter().next(),
        }
    }?;
    hidden(&found).then_some(found)
}

/// Resolves once a stop was asked for (or the runner is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
