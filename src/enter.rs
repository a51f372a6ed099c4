//! Starting a process inside a task's sandbox: its network namespace, plus a fresh mount
//! namespace (slave of ours, so our unmounts still reach it) where the sandbox's resolv.conf
//! and hosts files are bind-mounted over /etc, and a UTS namespace carrying the task's name.
//! Used for the task's own command and for `routemesh exec`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnterSpec {
    pub netns: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname: String,
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Arranges for `cmd` to start inside the sandbox. `new_session` detaches it from our session
/// and process group (tasks must outlive a daemon restart and not get our signals).
pub fn enter_on_spawn(cmd: &mut Command, spec: &EnterSpec, new_session: bool) -> io::Result<()> {
    // Everything the child needs is prepared here: between fork and exec only raw syscalls run.
    let netns = File::open(&spec.netns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening sandbox namespace {}: {e}", spec.netns.display()),
        )
    })?;
    let resolv_src = cstring(&spec.resolv_conf)?;
    let hosts_src = cstring(&spec.hosts)?;
    let resolv_dst = cstring(Path::new("/etc/resolv.conf"))?;
    let hosts_dst = cstring(Path::new("/etc/hosts"))?;
    let root = cstring(Path::new("/"))?;
    let hostname = spec.hostname.clone().into_bytes();
    unsafe {
        cmd.pre_exec(move || {
            if new_session {
                check(libc::setsid())?;
            }
            check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, dst) in [(&resolv_src, &resolv_dst), (&hosts_src, &hosts_dst)] {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::sethostname(
                hostname.as_ptr() as *const libc::c_char,
                hostname.len(),
            ))?;
            Ok(())
        });
    }
    Ok(())
}
