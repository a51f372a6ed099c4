#!/usr/bin/env bash
# Boot Debian's cloud kernel under qemu (software emulation) with an initramfs holding busybox,
# ip/nft/ipvsadm/curl/runc, the netfilter, IPVS and overlayfs modules, the given FILES, and TESTSCRIPT; run
# TESTSCRIPT as the VM's only job and exit with its exit code.
#
#   vm/run.sh TESTSCRIPT [FILES...]
#
# FILES (executables, other files or directories) land in /files/ inside the VM, which is first
# on PATH; shared libraries of executables come along. See vm/README.md.
#
# Environment: VM_TIMEOUT (seconds, default 600), VM_MEM (MiB, default 1024), VM_SMP (default 2),
# VM_MODULES (extra kernel modules), VM_KEEP=1 (keep the work directory), VM_KERNEL (a
# /boot/vmlinuz-* to use instead of the newest *-cloud-amd64).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 TESTSCRIPT [FILES...]" >&2
    exit 2
fi
test_script=$1
shift
if [[ ! -f $test_script ]]; then
    echo "vm/run.sh: test script $test_script not found" >&2
    exit 2
fi

VM_TIMEOUT=${VM_TIMEOUT:-600}
VM_MEM=${VM_MEM:-1024}
VM_SMP=${VM_SMP:-2}
MARKER=ROUTEMESH-VM-TEST-EXIT-CODE

# Modules the routing mesh and its tests use; their dependencies come along.
MODULES="ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_sh ip_vs_mh
    veth bridge vxlan dummy overlay
    nf_conntrack nf_nat nf_tables nft_nat nft_numgen nft_ct nft_chain_nat nft_masq nft_redir
    nft_fib_ipv4 nft_fib_ipv6 nft_fib_inet nft_reject_ipv4 nft_reject_inet nft_hash nft_limit
    ${VM_MODULES:-}"

log() { echo "vm/run.sh: $*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# --- (a) what the host needs ---------------------------------------------------------------
need_packages=()
command -v qemu-system-x86_64 >/dev/null || need_packages+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || need_packages+=(linux-image-cloud-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need_packages+=(busybox-static)
[[ -x /usr/sbin/ipvsadm ]] || need_packages+=(ipvsadm)
[[ -x /usr/sbin/nft ]] || need_packages+=(nftables)
[[ -x /usr/bin/ip || -x /bin/ip ]] || need_packages+=(iproute2)
command -v cpio >/dev/null || need_packages+=(cpio)
command -v modprobe >/dev/null || need_packages+=(kmod)
[[ -x /usr/bin/curl ]] || need_packages+=(curl)
[[ -x /usr/sbin/runc ]] || need_packages+=(runc)
if [[ ${#need_packages[@]} -gt 0 ]]; then
    log "installing ${need_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${need_packages[@]}" >&2
fi

kernel=${VM_KERNEL:-$(ls /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -n 1)}
kver=${kernel#/boot/vmlinuz-}
if [[ ! -r $kernel || ! -d /lib/modules/$kver ]]; then
    log "kernel $kernel or its modules /lib/modules/$kver missing"
    exit 1
fi

# --- (b) the initramfs ----------------------------------------------------------------------
started=$(now_ms)
work=$(mktemp -d /tmp/routemesh-vm.XXXXXX)
if [[ ${VM_KEEP:-0} == 1 ]]; then
    log "keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,files,lib/modules}

# Copies a host file to the same path in the image (following symlinks).
copy_host() {
    local src=$1 dst=${2:-$1}
    mkdir -p "$root$(dirname "$dst")"
    cp -L "$src" "$root$dst"
}

# Copies the shared libraries (and the loader) an ELF executable needs.
copy_libs() {
    local exe=$1 lib
    # ldd fails on static executables and non-ELF files: nothing to copy then.
    for lib in $(ldd "$exe" 2>/dev/null | grep -o '/[^ ]*' || true); do
        [[ -e $root$lib ]] || copy_host "$lib"
    done
}

cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done

# The real tools, by full path (busybox's sh runs its own applets before PATH).
ip_bin=$(command -v ip)
for tool in "$ip_bin:/usr/sbin/ip" /usr/sbin/nft:/usr/sbin/nft \
    /usr/sbin/ipvsadm:/usr/sbin/ipvsadm /usr/bin/curl:/usr/bin/curl \
    /usr/sbin/runc:/usr/sbin/runc; do
    copy_host "${tool%%:*}" "${tool##*:}"
    copy_libs "${tool%%:*}"
done
ln -s ../sbin/ip "$root/usr/bin/ip"
for f in /etc/protocols /etc/services /etc/ethertypes; do
    [[ -e $f ]] && copy_host "$f"
done
mkdir -p "$root/etc/iproute2" "$root/var/run/netns"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

for f in "$@"; do
    if [[ -d $f ]]; then
        cp -a "$f" "$root/files/"
    elif [[ -f $f ]]; then
        cp -L "$f" "$root/files/"
        [[ -x $f ]] && copy_libs "$f"
    else
        log "file $f not found"
        exit 2
    fi
done
cp "$test_script" "$root/test.sh"
chmod +x "$root/test.sh"

# Kernel modules with their dependencies, in load order; busybox's depmod indexes them inside.
modules_dir=/lib/modules/$kver
mkdir -p "$root$modules_dir"
for f in modules.order modules.builtin modules.builtin.modinfo; do
    [[ -e $modules_dir/$f ]] && cp "$modules_dir/$f" "$root$modules_dir/"
done
for module in $MODULES; do
    if ! deps=$(modprobe --show-depends -S "$kver" "$module" 2>&1); then
        log "kernel $kver has no module $module: $deps"
        exit 1
    fi
    while read -r kind path _; do
        [[ $kind == insmod && ! -e $root$path ]] && copy_host "$path"
    done <<<"$deps"
done
# One module per line, with its options: no dummy0 appearing out of nowhere.
echo "$MODULES" | tr -s ' \n' '\n' | sed -e '/^$/d' -e 's/^dummy$/dummy numdummies=0/' \
    >"$root/etc/vm-modules"

cat >"$root/init" <<INIT
#!/bin/sh
export PATH=/files:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
/bin/depmod -a
while read -r module options; do
    /bin/modprobe \$module \$options || echo "vm init: modprobe \$module failed"
done </etc/vm-modules
/usr/sbin/ip link set lo up
echo "vm init: kernel \$(uname -r), modules loaded, running the test at \$(cut -d' ' -f1 /proc/uptime)s"
cd /root
/bin/sh /test.sh
rc=\$?
echo "$MARKER: \$rc"
sync
/bin/poweroff -f
echo o >/proc/sysrq-trigger
INIT
chmod +x "$root/init"

initrd=$work/initrd.cpio
(cd "$root" && find . | cpio -o -H newc --quiet >"$initrd")
built=$(now_ms)
log "initramfs $(du -h "$initrd" | cut -f1) built in $(seconds $((built - started)))s; booting $kernel"

# --- (c) boot ---------------------------------------------------------------------------------
console=$work/console.log
# Under software emulation with two vCPUs, the guest kernel has been seen to lock up with both
# vCPUs spinning (`watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [runc:340]` on both, for
# minutes), an emulator hazard rather than the test's failure. The console is watched: after
# a lockup of 50 s the VM is stopped and booted once more; a second one fails the run.
watch_console() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        printf '%s\n' "$line"
        printf '%s\n' "$line" >>"$console"
        if [[ $line =~ soft\ lockup\ -\ CPU#[0-9]+\ stuck\ for\ ([0-9]+)s ]] &&
            ((BASH_REMATCH[1] >= 50)); then
            : >"$work/lockup"
            pkill -f -- "-initrd $initrd" || true
        fi
    done
}
boot() {
    : >"$console"
    rm -f "$work/lockup"
    set +e
    timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 \
        -machine accel=tcg -cpu max -smp "$VM_SMP" -m "$VM_MEM" \
        -nographic -nic none -no-reboot \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1" </dev/null 2>&1 |
        stdbuf -o0 tr -d '\r' | watch_console
    qemu_rc=${PIPESTATUS[0]}
    set -e
    finished=$(now_ms)
    log "VM ran $(seconds $((finished - built)))s (qemu exit $qemu_rc)"
}
boot
if [[ -e $work/lockup ]] && ! grep -aq "^$MARKER: " "$console"; then
    log "the emulated kernel locked up (soft lockup on the console); booting once more"
    built=$(now_ms)
    boot
fi

rc_line=$(grep -a "^$MARKER: " "$console" | tail -n 1 || true)
if [[ -z $rc_line ]]; then
    if [[ -e $work/lockup ]]; then
        log "FAIL: the emulated kernel locked up again (soft lockup on the console)"
    elif [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
        log "FAIL: the VM timed out after ${VM_TIMEOUT}s before the test reported"
    else
        log "FAIL: the VM stopped without the test reporting (boot failure?)"
    fi
    exit 1
fi
rc=${rc_line#"$MARKER: "}
if [[ $rc == 0 ]]; then
    log "test $test_script passed in the VM"
else
    log "FAIL: test $test_script exited $rc in the VM"
fi
exit "$rc"
