//! Named network namespaces: files bind-mounted over `/proc/thread-self/ns/net`, as `ip netns`
//! does, but in a directory the daemon chooses. Entering a namespace happens only on a
//! dedicated std thread that exits afterwards, so no tokio worker ever changes namespace.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::error::{Error, Result};

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Makes `dir` a shared mount point holding namespace files (mkdir -p, bind onto itself if it
/// is not a mount point yet, then MS_SHARED). Shared, so that when we unmount a namespace file
/// the unmount propagates into the mount namespaces of tasks (cloned with slave propagation)
/// instead of their private copies pinning the namespace. Idempotent.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating netns dir", dir, e))?;
    let dir = fs::canonicalize(dir).map_err(|e| Error::io("resolving netns dir", dir, e))?;
    if !is_mount_point(&dir)? {
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind-mounting netns dir onto itself", &dir, e))?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("making netns dir shared", &dir, e))
}

/// Creates the named namespace `path` (an empty file bind-mounted over a fresh netns).
/// Adopts an existing namespace mount; replaces a stale plain file left after a reboot.
pub fn create(path: &Path) -> Result<()> {
    if is_mounted(path) {
        return Ok(());
    }
    if path.exists() {
        remove(path)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("creating netns file", path, e))?;
    let target = path.to_path_buf();
    let mounted = on_thread("creating netns", path, move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("unsharing netns for", &target, e))?;
        mount(
            Some(THREAD_NETNS),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind-mounting netns onto", &target, e))
    })
    .and_then(|r| r);
    if mounted.is_err() {
        let _ = fs::remove_file(path);
    }
    mounted
}

/// Unmounts (lazily) and unlinks the namespace file; Ok if it is already gone.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys("unmounting netns", path, e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing netns file", path, e)),
    }
}

/// True if `path` is a mounted network namespace (its filesystem is nsfs).
pub fn is_mounted(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Names of the entries in a namespace directory, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing netns dir", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing netns dir", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Runs `f` on a dedicated thread that has entered the network namespace `path`.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = open(path)?;
    let target = path.to_path_buf();
    on_thread("entering netns", path, move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("entering netns", &target, e))?;
        Ok(f())
    })?
}

/// Writes `/proc/sys/<key>` (e.g. `net/ipv4/ip_forward`) inside `netns` (None: ours).
pub fn set_sysctl(netns: Option<&Path>, key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(Error::Invalid {
            what: "sysctl key".into(),
            detail: format!("{key:?}"),
        });
    }
    let file = PathBuf::from("/proc/sys").join(key);
    let value = value.to_string();
    let write = move || {
        fs::write(&file, value.as_bytes()).map_err(|e| Error::io("writing sysctl", &file, e))
    };
    match netns {
        Some(ns) => run_in(ns, write)?,
        None => write(),
    }
}

/// Opens a namespace file for setns or IFLA_NET_NS_FD.
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("opening netns", path, e))
}

fn on_thread<T: Send + 'static>(
    op: &str,
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let thread = std::thread::Builder::new()
        .name("rm-netns".into())
        .spawn(f)
        .map_err(|e| Error::io(format!("{op}: spawning thread for"), path, e))?;
    thread.join().map_err(|_| Error::ThreadPanicked {
        op: format!("{op} {}", path.display()),
    })
}

fn is_mount_point(dir: &Path) -> Result<bool> {
    let mountinfo = "/proc/self/mountinfo";
    let text = fs::read_to_string(mountinfo).map_err(|e| Error::io("reading", mountinfo, e))?;
    let found = mount_points(&text).any(|m| Path::new(&m) == dir);
    Ok(found)
}

/// The mount points (5th field, octal escapes decoded) of a mountinfo text.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills (SIGKILL) every process whose network namespace is the one bound at `ns`, but the
/// caller: what is left in a namespace that is about to go (a test's, a demo node's).
pub fn kill_processes_in(ns: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(ns).map(|m| m.ino()) else {
        return;
    };
    let want = format!("net:[{ino}]");
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|l| l.to_string_lossy() == want)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:4 / /run/routemesh/netns rw shared:5 - tmpfs tmpfs rw\n";
        let points: Vec<String> = mount_points(text).collect();
        assert_eq!(points, vec!["/mnt/with space", "/run/routemesh/netns"]);
    }

    #[test]
    fn sysctl_key_must_stay_under_proc_sys() {
        assert!(set_sysctl(None, "../etc/passwd", "1").is_err());
        assert!(set_sysctl(None, "/etc/passwd", "1").is_err());
    }
}
