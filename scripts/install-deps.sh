#!/usr/bin/env bash
# Installs what routemesh's build, demo and tests need on a fresh Debian 12 machine.
# Idempotent; needs root. The Rust toolchain itself is expected on the machine (rustup).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (it uses apt-get)" >&2
  exit 1
fi
# runc runs the tasks (crun is selectable; Debian's 1.8.1 refuses hybrid cgroup hosts);
# busybox-static builds the tests' OCI image; skopeo and umoci check it with other tools;
# nginx-light is a real daemon the containment tests run three times side by side; strace lets
# the netlink golden test compare our nft element messages with nft's byte for byte.
pkgs=(nftables iproute2 curl dnsutils iputils-ping procps util-linux netcat-openbsd protobuf-compiler dnsmasq-base etcd-server python3 runc crun busybox-static skopeo umoci nginx-light openssl strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests run nginx inside tasks; the machine itself need not serve anything.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH"
  done
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust with rustup" >&2; exit 1; }
