//! Docker's defaults for a container's privileges: its capability set, and the `/proc` and
//! `/sys` paths it masks or makes read-only.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// The capabilities Docker gives a container by default, in capability-number order.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::SysChroot,
    Capability::Mknod,
    Capability::AuditWrite,
    Capability::Setfcap,
];

/// Paths Docker masks: a read of one finds an empty file or directory.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker mounts read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub fn default_capabilities() -> Vec<Capability> {
    DEFAULT_CAPABILITIES.to_vec()
}

/// A process's capability sets as Docker sets them: the default capabilities bounding,
/// effective and permitted; no inheritable or ambient capability (Docker stopped setting
/// inheritable capabilities for CVE-2022-24769).
pub fn default_process_capabilities() -> LinuxCapabilities {
    let set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(None);
    caps.set_ambient(None);
    caps
}

/// The kernel's number for `cap` (`CAP_*` in `linux/capability.h`): its bit in the masks of
/// `/proc/<pid>/status`.
pub const fn capability_number(cap: Capability) -> u32 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// The bitmask `/proc/<pid>/status` shows for a capability set holding exactly `caps`.
pub fn capability_mask(caps: &[Capability]) -> u64 {
    caps.iter()
        .fold(0, |mask, &cap| mask | 1u64 << capability_number(cap))
}

/// The `CapEff` (and `CapBnd`, `CapPrm`) mask of a root process holding Docker's default
/// capabilities: `0x00000000a80425fb`.
pub fn default_cap_eff_mask() -> u64 {
    capability_mask(&DEFAULT_CAPABILITIES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn default_mask_is_dockers() {
        assert_eq!(default_cap_eff_mask(), 0x0000_0000_a804_25fb);
        assert_eq!(
            capability_mask(&default_capabilities()),
            default_cap_eff_mask()
        );
    }

    #[test]
    fn default_set_has_fourteen_distinct_capabilities() {
        let caps = default_capabilities();
        let distinct: HashSet<_> = caps.iter().collect();
        assert_eq!(caps.len(), 14);
        assert_eq!(distinct.len(), 14);
        assert!(!caps.contains(&Capability::SysAdmin));
        assert!(!caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::SysPtrace));
    }

    #[test]
    fn capability_numbers_match_the_kernel() {
        assert_eq!(capability_number(Capability::Chown), 0);
        assert_eq!(capability_number(Capability::SysAdmin), 21);
        assert_eq!(capability_number(Capability::Setfcap), 31);
        assert_eq!(capability_number(Capability::CheckpointRestore), 40);
        assert_eq!(capability_mask(&[]), 0);
    }

    #[test]
    fn process_capabilities_leave_inheritable_and_ambient_empty() {
        let caps = default_process_capabilities();
        let expected: Capabilities = default_capabilities().into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&expected));
        assert_eq!(caps.effective().as_ref(), Some(&expected));
        assert_eq!(caps.permitted().as_ref(), Some(&expected));
        assert!(caps.inheritable().is_none());
        assert!(caps.ambient().is_none());
    }

    #[test]
    fn paths_are_absolute_and_distinct() {
        for list in [MASKED_PATHS, READONLY_PATHS] {
            let distinct: HashSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), list.len());
            assert!(list.iter().all(|p| p.starts_with('/')));
        }
        assert!(MASKED_PATHS.contains(&"/sys/devices/virtual/powercap"));
        assert!(READONLY_PATHS.contains(&"/proc/sysrq-trigger"));
    }
}
