//! Waiting for a task's process to end, by pidfd (no polling), and saying how it ended. The
//! daemon is the child subreaper of its containers (as a containerd shim is), so the process
//! is its child and its exit status can be collected; an adopted one (after a daemon restart)
//! is not, and only its end is known.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How a process ended, as far as we can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Not our child: it ended, how is unknown.
    Unknown,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Unknown => f.write_str("exited"),
        }
    }
}

/// Makes this process the subreaper of its descendants: a container's process, orphaned when
/// the runtime's CLI exits, becomes our child.
pub fn become_subreaper() -> std::io::Result<()> {
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Field 3 of /proc/PID/stat is the state; a zombie has ended.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s.get(i + 2..i + 3))
            .is_some_and(|st| st != "Z")
    })
}

/// Waits for `pid` to end and says how.
pub async fn wait_exit(pid: u32) -> ExitStatus {
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
    while alive(pid) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collects the exit status if the process is our child.
fn reap(pid: u32) -> ExitStatus {
    let mut st: libc::c_int = 0;
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::WNOHANG) };
    if r == pid as libc::pid_t {
        if libc::WIFEXITED(st) {
            return ExitStatus::Code(libc::WEXITSTATUS(st));
        }
        if libc::WIFSIGNALED(st) {
            return ExitStatus::Signal(libc::WTERMSIG(st));
        }
    }
    ExitStatus::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    // wait_exit reaps the child itself (waitpid), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn a_childs_exit_status_is_collected() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit(child.id()).await, ExitStatus::Code(7));
        let child = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(wait_exit(child.id()).await, ExitStatus::Signal(9));
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by signal 9");
    }
}
