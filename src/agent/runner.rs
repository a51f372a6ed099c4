//! Task processes: start a task's command in its sandbox, notice its exit at once (pidfd),
//! restart it with back-off, stop it on request. A process outlives the daemon (own session,
//! log written to a file, not a pipe); a restarted daemon adopts it from its pid file.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};

use crate::enter::{enter_on_spawn, EnterSpec};
use crate::model::{now_secs, TaskState, TaskStatus};

/// First restart delay (Docker's default is 5 s): long enough that a crashing task visibly
/// leaves the load balancers before it comes back.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long is considered healthy: its next failure starts back-off anew.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    pub task: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub enter: EnterSpec,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct StatusEvent {
    pub task: String,
    pub status: TaskStatus,
}

struct Supervised {
    spec: ProcessSpec,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

pub struct Runner {
    procs: HashMap<String, Supervised>,
    events: mpsc::UnboundedSender<StatusEvent>,
}

impl Runner {
    pub fn new(events: mpsc::UnboundedSender<StatusEvent>) -> Runner {
        Runner {
            procs: HashMap::new(),
            events,
        }
    }

    /// Makes sure `spec` is supervised; a changed spec restarts the process.
    pub async fn ensure(&mut self, spec: ProcessSpec) {
        if let Some(cur) = self.procs.get(&spec.task) {
            if cur.spec == spec && !cur.done.is_finished() {
                return;
            }
            self.stop(&spec.task.clone()).await;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let events = self.events.clone();
        let s = spec.clone();
        let done = tokio::spawn(async move { supervise(s, stop_rx, events).await });
        self.procs.insert(
            spec.task.clone(),
            Supervised {
                spec,
                stop: stop_tx,
                done,
            },
        );
    }

    /// Stops the task's process (TERM, then KILL after a grace period) and waits for it.
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
}

/// Kills a process this daemon does not supervise (left from a task that no longer exists),
/// found through its pid file.
pub async fn kill_orphan(pid_file: &std::path::Path) {
    if let Some(pid) = read_live_pid(pid_file) {
        tracing::info!(pid, file = %pid_file.display(), "stopping process of a removed task");
        terminate(pid).await;
    }
    let _ = std::fs::remove_file(pid_file);
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

async fn supervise(
    spec: ProcessSpec,
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
        let (pid, adopted) = match read_live_pid(&spec.pid_file) {
            Some(pid) => (Ok(pid), true),
            None => (spawn(&spec), false),
        };
        match pid {
            Ok(pid) => {
                if adopted {
                    tracing::info!(task = %spec.task, pid, "adopted running task process");
                } else {
                    tracing::info!(task = %spec.task, pid, "task process started");
                }
                ever_ran = true;
                report(status(
                    TaskState::Running,
                    Some(pid),
                    String::new(),
                    restarts,
                    true,
                ));
                let started = Instant::now();
                tokio::select! {
                    code = wait_exit(pid) => {
                        let _ = std::fs::remove_file(&spec.pid_file);
                        tracing::warn!(task = %spec.task, pid, "task process {code}");
                        if started.elapsed() > HEALTHY_AFTER {
                            backoff = BACKOFF_FIRST;
                        }
                        report(status(TaskState::Failed, None, format!("process {code}"), restarts, true));
                    }
                    _ = stopped(&mut stop) => {
                        terminate(pid).await;
                        let _ = std::fs::remove_file(&spec.pid_file);
                        tracing::info!(task = %spec.task, pid, "task process stopped");
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
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        restarts += 1;
    }
}

/// Resolves once a stop was asked for (or the runner is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Why a task's process could not be started; the message goes into the task's status.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("opening log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Preparing to enter the sandbox failed (its message names the namespace).
    #[error("{0}")]
    Enter(#[source] std::io::Error),
    #[error("starting {prog:?}: {source}")]
    Start {
        prog: String,
        #[source]
        source: std::io::Error,
    },
}

fn spawn(spec: &ProcessSpec) -> Result<u32, SpawnError> {
    let Some((prog, args)) = spec.argv.split_first() else {
        return Err(SpawnError::EmptyCommand);
    };
    let log_err = |source| SpawnError::Log {
        path: spec.log.clone(),
        source,
    };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(log_err)?;
    let log2 = log.try_clone().map_err(log_err)?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    enter_on_spawn(&mut cmd, &spec.enter, true).map_err(SpawnError::Enter)?;
    let child = cmd.spawn().map_err(|source| SpawnError::Start {
        prog: prog.clone(),
        source,
    })?;
    let pid = child.id();
    // The child is reaped in wait_exit; dropping the handle neither waits nor kills.
    drop(child);
    let start = proc_start_time(pid).unwrap_or(0);
    if let Err(e) = std::fs::write(&spec.pid_file, format!("{pid} {start}\n")) {
        tracing::warn!(task = %spec.task, error = %e, "cannot write pid file");
    }
    Ok(pid)
}

/// Field 22 of /proc/PID/stat: when the process started, to tell a reused pid apart.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The pid in `pid_file` if that process still runs (same start time, not a zombie).
fn read_live_pid(pid_file: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    (proc_start_time(pid)? == start).then_some(pid)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for `pid` to exit and describes how it ended.
async fn wait_exit(pid: u32) -> String {
    match pidfd_open(pid) {
        // SAFETY: the pidfd is owned by the AsyncFd and closed only when it is dropped.
        Ok(fd) => match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(afd) => {
                let _ = afd.readable().await;
            }
            Err(_) => poll_gone(pid).await,
        },
        Err(_) => poll_gone(pid).await,
    }
    reap(pid)
}

async fn poll_gone(pid: u32) {
    while proc_start_time(pid).is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collects the exit status if the process is our child (it is not after a daemon restart).
fn reap(pid: u32) -> String {
    let mut st: libc::c_int = 0;
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::WNOHANG) };
    if r == pid as libc::pid_t {
        if libc::WIFEXITED(st) {
            return format!("exited with status {}", libc::WEXITSTATUS(st));
        }
        if libc::WIFSIGNALED(st) {
            return format!("killed by signal {}", libc::WTERMSIG(st));
        }
    }
    "exited".to_string()
}

/// TERM to the process group, KILL after the grace period, then wait until it is gone.
async fn terminate(pid: u32) {
    let pgid = -(pid as libc::pid_t);
    unsafe { libc::kill(pgid, libc::SIGTERM) };
    let gone = tokio::time::timeout(STOP_GRACE, wait_exit(pid)).await;
    if gone.is_err() {
        unsafe { libc::kill(pgid, libc::SIGKILL) };
        let _ = tokio::time::timeout(STOP_GRACE, wait_exit(pid)).await;
    }
    // A group member that ignored TERM goes too.
    unsafe { libc::kill(pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_readable_and_stable() {
        let me = std::process::id();
        let a = proc_start_time(me).unwrap();
        assert_eq!(proc_start_time(me), Some(a));
    }

    #[test]
    fn stale_pid_file_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        let me = std::process::id();
        let start = proc_start_time(me).unwrap();
        std::fs::write(&f, format!("{me} {start}\n")).unwrap();
        assert_eq!(read_live_pid(&f), Some(me));
        std::fs::write(&f, format!("{me} {}\n", start + 1)).unwrap();
        assert_eq!(
            read_live_pid(&f),
            None,
            "a reused pid has another start time"
        );
        std::fs::write(&f, "garbage").unwrap();
        assert_eq!(read_live_pid(&f), None);
    }
}
