//! A task's root file system, mounted at its bundle's `rootfs` before the runtime starts (as
//! containerd's snapshotter does): an image's layers under the task's own writable layer
//! (overlayfs), or the host's root bound read-only. The runtime does every mount inside the
//! container; these are the only mounts routemesh makes, on the host, and they go with the task.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::RuntimeError;

/// Whether `path` is a mount point in our mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    // Field 5 is the mount point (spaces escaped as \040, which our paths do not contain).
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

fn mount_err(container: &str, path: &Path) -> impl FnOnce(nix::Error) -> RuntimeError {
    let (container, path) = (container.to_string(), path.to_path_buf());
    move |source| RuntimeError::Mount {
        container,
        path,
        source,
    }
}

fn mkdirs(dirs: &[&Path]) -> Result<(), RuntimeError> {
    for d in dirs {
        std::fs::create_dir_all(d).map_err(RuntimeError::io("creating", *d))?;
    }
    Ok(())
}

/// The host's root file system (only it, none of the mounts below it) read-only at `rootfs`;
/// and empty directories for the task's private `/var` layer.
pub fn mount_host(
    container: &str,
    rootfs: &Path,
    var_upper: &Path,
    var_work: &Path,
) -> Result<(), RuntimeError> {
    mkdirs(&[rootfs, var_upper, var_work])?;
    if is_mounted(rootfs) {
        return Ok(());
    }
    mount(
        Some("/"),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err(container, rootfs))?;
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, rootfs, None::<&str>, ro, None::<&str>) {
        let _ = umount2(rootfs, MntFlags::MNT_DETACH);
        return Err(mount_err(container, rootfs)(e));
    }
    Ok(())
}

/// `layers` (bottom first) under the writable `upper` at `rootfs`.
pub fn mount_image(
    container: &str,
    rootfs: &Path,
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), RuntimeError> {
    mkdirs(&[rootfs, upper, work])?;
    if is_mounted(rootfs) {
        return Ok(());
    }
    // overlayfs lists the top layer first.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(mount_err(container, rootfs))
}

/// Unmounts the task's root (lazily: a process still holding it does not block removal).
pub fn unmount(container: &str, rootfs: &Path) -> Result<(), RuntimeError> {
    while is_mounted(rootfs) {
        umount2(rootfs, MntFlags::MNT_DETACH).map_err(mount_err(container, rootfs))?;
    }
    Ok(())
}
