//! routemesh's default seccomp profile.
//!
//! The profile is data, kept in `runtime/seccomp/default.json` in the shape of the OCI
//! runtime-spec `linux.seccomp` object, and compiled into the binary. It follows the behaviour of
//! Docker's default profile for a container that holds Docker's default capabilities (see
//! [`crate::defaults::default_capabilities`]) and nothing more, in particular not `CAP_SYS_ADMIN`:
//!
//! * Anything not listed fails with `EPERM` (`SCMP_ACT_ERRNO`, `defaultErrnoRet` 1).
//! * The ordinary syscalls are allowed, including the recent ones (`close_range`, `faccessat2`,
//!   `openat2`, `epoll_pwait2`, `rseq`, `statx`, `copy_file_range`, `pidfd_open`,
//!   `pidfd_send_signal`, `landlock_*`, `memfd_secret`, `futex_waitv`, `fchmodat2`, ...).
//!   `ptrace`, `process_vm_readv` and `process_vm_writev` are allowed, as Docker does on kernels
//!   4.8 and later; `chroot` is allowed because `CAP_SYS_CHROOT` is a default capability.
//!   `adjtimex` and `clock_adjtime` are allowed as in Docker: the kernel only lets them *change*
//!   the clock with `CAP_SYS_TIME`, which the default set does not hold.
//! * `clone` is allowed only when its flags (argument 0) hold no `CLONE_NEW*` bit; `clone3`,
//!   whose flags seccomp cannot see, fails with `ENOSYS` so that libc falls back to `clone`.
//! * `socket` is allowed for every address family except `AF_ALG` (38) and `AF_VSOCK` (40);
//!   `personality` only for `PER_LINUX`, `PER_LINUX32`, `UNAME26`, `PER_LINUX32 | UNAME26` and
//!   the query value `0xffffffff`.
//! * Blocked (not listed): `mount`, `umount`/`umount2`, the new mount API (`fsopen`, `fsmount`,
//!   `move_mount`, `open_tree`, ...), `unshare`, `setns`, `pivot_root`, `keyctl`/`add_key`/
//!   `request_key`, `bpf`, `perf_event_open`, `io_uring_*` (as in Docker 25 and later),
//!   `kexec_*`, `init_module`/`finit_module`/`delete_module`, `open_by_handle_at`/
//!   `name_to_handle_at`, `swapon`/`swapoff`, `reboot`, `acct`, `settimeofday`/`stime`/
//!   `clock_settime`, `userfaultfd`, `lookup_dcookie`, `vm86`, `quotactl`, `syslog`,
//!   `iopl`/`ioperm`, `sethostname`/`setdomainname`, `kcmp`, `pidfd_getfd`, `process_madvise`,
//!   the NUMA policy calls (`mbind`, `set_mempolicy`, `get_mempolicy`, `migrate_pages`,
//!   `move_pages`), `fanotify_init`, `vhangup` and the obsolete ones (`uselib`, `ustat`,
//!   `sysfs`, `_sysctl`, ...).
//!
//! Known limit, shared with Docker: on 32-bit x86 `socketcall` multiplexes `socket`, and seccomp
//! cannot read its address family, so the `AF_ALG`/`AF_VSOCK` filter only holds for `socket`.
//!
//! Syscall names the host's libseccomp does not know are skipped by the runtime, so the profile
//! can name syscalls newer than the host's libseccomp.

use oci_spec::runtime::{Arch, LinuxSeccomp};
use thiserror::Error;

/// The default profile as JSON, exactly as kept in `runtime/seccomp/default.json`.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../seccomp/default.json");

/// Why a seccomp profile could not be loaded.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The text is not a valid OCI `linux.seccomp` object.
    #[error("seccomp profile is not a valid OCI linux.seccomp object: {0}")]
    Parse(#[from] serde_json::Error),
}

/// Parses a seccomp profile written as an OCI runtime-spec `linux.seccomp` object.
pub fn parse_profile(json: &str) -> Result<LinuxSeccomp, SeccompError> {
    Ok(serde_json::from_str(json)?)
}

/// routemesh's default seccomp profile (see the module documentation), ready to be set as a
/// bundle's `linux.seccomp`, for the architectures of this machine's family only.
pub fn default_profile() -> Result<LinuxSeccomp, SeccompError> {
    let mut p = parse_profile(DEFAULT_PROFILE_JSON)?;
    let family = host_family(std::env::consts::ARCH);
    if let (Some(family), Some(arches)) = (family, p.architectures().clone()) {
        p.set_architectures(Some(
            arches.into_iter().filter(|a| family.contains(a)).collect(),
        ));
    }
    Ok(p)
}

/// The architectures a process of this machine can run in, as Docker's `archMap` picks them:
/// the runtime compiles the filter once per listed architecture (each adds about 5 ms to
/// every container start), and a foreign one never matches a syscall here.
fn host_family(arch: &str) -> Option<&'static [Arch]> {
    match arch {
        "x86_64" => Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]),
        "aarch64" => Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
    };

    /// Every namespace-creating `clone` flag: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
    /// NEWNET.
    const CLONE_NEW_MASK: u64 = (libc::CLONE_NEWNS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET) as u64;

    fn profile() -> LinuxSeccomp {
        match default_profile() {
            Ok(p) => p,
            Err(e) => panic!("default profile does not parse: {e}"),
        }
    }

    fn rules(p: &LinuxSeccomp) -> &[LinuxSyscall] {
        p.syscalls().as_deref().unwrap_or_default()
    }

    /// The rules that name `name`.
    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        rules(p)
            .iter()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    fn allowed_unconditionally(p: &LinuxSeccomp, name: &str) -> bool {
        rules_for(p, name).iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().as_ref().is_none_or(|a| a.is_empty())
        })
    }

    #[test]
    fn default_action_is_eperm() {
        let p = profile();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
    }

    #[test]
    fn a_container_gets_its_machines_family_only() {
        let p = default_profile().unwrap();
        let arches = p.architectures().clone().unwrap_or_default();
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                arches,
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
        }
        assert_eq!(
            host_family("aarch64"),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert_eq!(
            host_family("riscv64"),
            None,
            "unknown: every listed one stays"
        );
    }

    #[test]
    fn covers_x86_and_arm() {
        let p = match parse_profile(DEFAULT_PROFILE_JSON) {
            Ok(p) => p,
            Err(e) => panic!("default profile does not parse: {e}"),
        };
        let arches = p.architectures().as_deref().unwrap_or_default();
        for arch in [
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
        ] {
            assert!(arches.contains(&arch), "{arch:?} missing");
        }
    }

    #[test]
    fn allows_the_ordinary_syscalls() {
        let p = profile();
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "execve",
            "exit_group",
            "fork",
            "vfork",
            "wait4",
            "mmap",
            "futex",
            "rt_sigaction",
            "pipe2",
            "epoll_pwait2",
            "close_range",
            "faccessat2",
            "openat2",
            "rseq",
            "statx",
            "copy_file_range",
            "pidfd_open",
            "pidfd_send_signal",
            "landlock_create_ruleset",
            "chroot",
            "ptrace",
            "arch_prctl",
        ] {
            assert!(allowed_unconditionally(&p, name), "{name} not allowed");
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let p = profile();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1, "clone must have exactly one rule");
        let rule = clone[0];
        assert_eq!(rule.action(), LinuxSeccompAction::ScmpActAllow);
        let args: &[LinuxSeccompArg] = rule.args().as_deref().unwrap_or_default();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), CLONE_NEW_MASK);
        assert_eq!(args[0].value(), 0x7e02_0000);
        assert_eq!(args[0].value_two().unwrap_or(0), 0);
    }

    #[test]
    fn clone3_fails_with_enosys() {
        let p = profile();
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
    }

    #[test]
    fn dangerous_syscalls_are_in_no_allow_rule() {
        let p = profile();
        for name in [
            "mount",
            "umount",
            "umount2",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "unshare",
            "setns",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "name_to_handle_at",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "settimeofday",
            "clock_settime",
            "userfaultfd",
            "lookup_dcookie",
            "vm86",
            "quotactl",
            "syslog",
            "iopl",
            "ioperm",
            "pidfd_getfd",
            "kcmp",
            "sethostname",
        ] {
            let allowing = rules_for(&p, name)
                .into_iter()
                .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
                .count();
            assert_eq!(allowing, 0, "{name} is in an allow rule");
        }
    }

    #[test]
    fn personality_and_socket_are_argument_filtered() {
        let p = profile();
        for name in ["personality", "socket"] {
            let r = rules_for(&p, name);
            assert!(!r.is_empty(), "{name} has no rule");
            assert!(
                r.iter()
                    .all(|r| r.args().as_ref().is_some_and(|a| !a.is_empty())),
                "{name} has a rule without argument filter"
            );
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let p = profile();
        let json = match serde_json::to_string(&p) {
            Ok(j) => j,
            Err(e) => panic!("cannot serialize: {e}"),
        };
        match parse_profile(&json) {
            Ok(back) => assert_eq!(back, p),
            Err(e) => panic!("cannot parse serialized profile: {e}"),
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_profile("{\"defaultAction\": \"SCMP_ACT_NOPE\"}"),
            Err(SeccompError::Parse(_))
        ));
    }
}
