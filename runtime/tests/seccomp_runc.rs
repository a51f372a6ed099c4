//! Runs a busybox container under `runc` with routemesh's defaults (Docker's capabilities,
//! masked and read-only paths, `noNewPrivileges`, the default seccomp profile) and checks from
//! inside what it may and may not do.
//!
//! Needs root, `runc` on `PATH` and a static `/bin/busybox`; skips (loudly) otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use routemesh_runtime::defaults::{
    default_cap_eff_mask, default_process_capabilities, MASKED_PATHS, READONLY_PATHS,
};
use routemesh_runtime::seccomp::default_profile;

const BUSYBOX: &str = "/bin/busybox";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the container runs: one `KEY=value` line per check. `$?` after `x=$(cmd)` is `cmd`'s
/// exit status.
const SCRIPT: &str = r#"
bb=/bin/busybox
out=$($bb unshare -n true 2>&1); echo "UNSHARE_NET=$? $out"
out=$($bb unshare -U true 2>&1); echo "UNSHARE_USER=$? $out"
out=$($bb mount -t tmpfs x /tmp 2>&1); echo "MOUNT=$? $out"
out=$($bb ls / 2>&1); echo "LS=$? $(echo $out)"
out=$($bb chroot / /bin/busybox true 2>&1); echo "CHROOT=$? $out"
out=$($bb linux32 /bin/busybox true 2>&1); echo "LINUX32=$? $out"
echo "FORK=$($bb sh -c 'echo ok')"
$bb grep -E '^(CapEff|CapBnd|CapPrm|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | $bb sed 's/:[[:space:]]*/=/'
echo DONE=1
"#;

/// The control run, without seccomp.
const CONTROL_SCRIPT: &str = r#"
bb=/bin/busybox
out=$($bb unshare -U true 2>&1); echo "UNSHARE_USER=$? $out"
$bb grep -E '^Seccomp:' /proc/self/status | $bb sed 's/:[[:space:]]*/=/'
"#;

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `runc delete -f` on drop, whatever happened to the container.
struct ContainerGuard {
    runc: PathBuf,
    state_root: PathBuf,
    id: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let status = Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state_root)
            .args(["delete", "-f", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = status {
            eprintln!("runc delete -f {}: {e}", self.id);
        }
    }
}

fn build_rootfs(rootfs: &Path) -> std::io::Result<()> {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin)?;
    for dir in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    std::os::unix::fs::symlink("busybox", bin.join("sh"))?;
    Ok(())
}

/// The bundle's config: routemesh's defaults, running `script`; with the default seccomp
/// profile, or with none at all for the control run.
fn build_spec(script: &str, with_seccomp: bool) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("routemesh-seccomp-test".to_string()));
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script.to_string(),
        ]));
        process.set_env(Some(vec!["PATH=/bin".to_string()]));
        process.set_no_new_privileges(Some(true));
        process.set_capabilities(Some(default_process_capabilities()));
    }
    let profile = if with_seccomp {
        match default_profile() {
            Ok(p) => Some(p),
            Err(e) => panic!("default seccomp profile: {e}"),
        }
    } else {
        None
    };
    if let Some(linux) = spec.linux_mut() {
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
        ]
        .into_iter()
        .map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(typ);
            ns
        })
        .collect();
        linux.set_namespaces(Some(namespaces));
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_seccomp(profile);
    }
    spec
}

/// Runs `cmd` to completion, or gives up after `timeout` (the guard then kills the container).
fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start runc: {e}"),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("waiting for runc: {e}"),
        Err(_) => panic!("runc run did not finish within {timeout:?}"),
    }
}

fn parse_lines(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The exit status at the start of a `KEY=<status> <message>` value.
fn status_of(results: &HashMap<String, String>, key: &str) -> i32 {
    let Some(value) = results.get(key) else {
        panic!("no {key} line in the container's output: {results:?}");
    };
    match value.split_whitespace().next().map(str::parse::<i32>) {
        Some(Ok(status)) => status,
        _ => panic!("{key}={value}: no exit status"),
    }
}

fn hex_mask(results: &HashMap<String, String>, key: &str) -> u64 {
    let Some(value) = results.get(key) else {
        panic!("no {key} line in the container's output: {results:?}");
    };
    match u64::from_str_radix(value, 16) {
        Ok(mask) => mask,
        Err(e) => panic!("{key}={value}: {e}"),
    }
}

/// Builds a bundle in a fresh tempdir, runs it with `runc run` and returns the container's
/// stdout once runc exited successfully; `runc delete -f` follows in any case.
fn run_container(runc: &Path, name: &str, script: &str, with_seccomp: bool) -> String {
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => panic!("tempdir: {e}"),
    };
    let bundle = tmp.path().join("bundle");
    let state_root = tmp.path().join("state");
    if let Err(e) = build_rootfs(&bundle.join("rootfs")) {
        panic!("building the rootfs: {e}");
    }
    if let Err(e) = std::fs::create_dir_all(&state_root) {
        panic!("creating {}: {e}", state_root.display());
    }
    if let Err(e) = build_spec(script, with_seccomp).save(bundle.join("config.json")) {
        panic!("writing config.json: {e}");
    }

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = format!("routemesh-{name}-{}-{nanos}", std::process::id());
    let _guard = ContainerGuard {
        runc: runc.to_path_buf(),
        state_root: state_root.clone(),
        id: id.clone(),
    };

    let mut cmd = Command::new(runc);
    cmd.arg("--root")
        .arg(&state_root)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id);
    let out = output_within(cmd, RUN_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "runc run {id}: {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "runc run {id} failed: {stderr}");
    stdout
}

#[test]
fn busybox_under_runc_with_default_profile() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: busybox_under_runc_with_default_profile needs root");
        return;
    }
    let Some(runc) = find_on_path("runc") else {
        eprintln!("SKIP: busybox_under_runc_with_default_profile: runc is not on PATH");
        return;
    };
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("SKIP: busybox_under_runc_with_default_profile: no {BUSYBOX}");
        return;
    }

    let stdout = run_container(&runc, "seccomp", SCRIPT, true);
    let results = parse_lines(&stdout);
    assert_eq!(results.get("DONE").map(String::as_str), Some("1"));

    // The filter is in place, and privileges cannot grow.
    assert_eq!(results.get("Seccomp").map(String::as_str), Some("2"));
    assert_eq!(results.get("NoNewPrivs").map(String::as_str), Some("1"));

    // No new namespace: unshare -U needs no capability, so only seccomp stops it.
    assert_ne!(status_of(&results, "UNSHARE_NET"), 0, "unshare -n worked");
    assert_ne!(status_of(&results, "UNSHARE_USER"), 0, "unshare -U worked");
    assert_ne!(status_of(&results, "MOUNT"), 0, "mount worked");
    for key in ["UNSHARE_NET", "UNSHARE_USER"] {
        let value = results.get(key).map(String::as_str).unwrap_or_default();
        assert!(
            value.contains("Operation not permitted"),
            "{key}={value}: expected EPERM"
        );
    }
    // busybox reports mount(2)'s EPERM as "permission denied (are you root?)".
    let mount = results.get("MOUNT").map(String::as_str).unwrap_or_default();
    assert!(
        mount.contains("permission denied") || mount.contains("Operation not permitted"),
        "MOUNT={mount}: expected EPERM"
    );

    // Ordinary work goes on.
    assert_eq!(status_of(&results, "LS"), 0);
    let ls = results.get("LS").map(String::as_str).unwrap_or_default();
    assert!(ls.contains("bin") && ls.contains("proc"), "ls / gave {ls}");
    assert_eq!(results.get("FORK").map(String::as_str), Some("ok"));
    assert_eq!(status_of(&results, "CHROOT"), 0, "chroot (CAP_SYS_CHROOT)");
    assert_eq!(
        status_of(&results, "LINUX32"),
        0,
        "personality(PER_LINUX32)"
    );

    // Exactly Docker's default capabilities.
    let mask = default_cap_eff_mask();
    assert_eq!(hex_mask(&results, "CapEff"), mask);
    assert_eq!(hex_mask(&results, "CapPrm"), mask);
    assert_eq!(hex_mask(&results, "CapBnd"), mask);
    assert_eq!(hex_mask(&results, "CapInh"), 0);
    assert_eq!(hex_mask(&results, "CapAmb"), 0);

    // Control: the same container without the profile may create a user namespace, so it is
    // the profile, not the missing capabilities, that stopped `unshare -U` above. Some hosts
    // forbid user namespaces altogether; then the control proves nothing and is only reported.
    let control = run_container(&runc, "noseccomp", CONTROL_SCRIPT, false);
    let control = parse_lines(&control);
    assert_eq!(control.get("Seccomp").map(String::as_str), Some("0"));
    if status_of(&control, "UNSHARE_USER") != 0 {
        eprintln!(
            "NOTE: this host forbids user namespaces even without seccomp: {:?}",
            control.get("UNSHARE_USER")
        );
    }
}
