//! Drives `routemesh_netdev::xfrm` against a kernel with ESP (the VM of vm/xfrm-test.sh), inside
//! the named network namespace NETNS (a path such as /run/netns/x; never the caller's own), so
//! that `vm/tests/xfrm.sh` can check the result with `ip -n x xfrm` in between.
//!
//! ```text
//! xfrm_smoke apply NETNS    esp_supported must be true; sync 2 SAs + 1 policy; read back equal
//! xfrm_smoke all NETNS      apply, then rotate one SA's SPI and key (the kernel's own SA
//!                           notifications must show the new SA added before the old one
//!                           deleted), read back, flush, read back empty
//! xfrm_smoke traffic A B    A and B are namespaces joined by a veth, 10.51.0.1/24 in A and
//!                           10.51.0.2/24 in B: SAs both ways in both, the policy A→B in A and
//!                           B→A in B (mark 0xe110002); a UDP datagram to B:4789 with the mark
//!                           and one without both arrive (vm/tests/xfrm.sh then checks with
//!                           `ip -s xfrm state` that exactly one went through ESP)
//! ```
//!
//! Prints one line per check and `xfrm-smoke: N passed, M failed`; exits non-zero on any failure.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use routemesh_netdev::xfrm::{EspSa, IpsecSpec, VxlanPolicy, Xfrm};

const NETLINK_XFRM: libc::c_int = 6;
const XFRMNLGRP_SA: u32 = 3;
const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_DELSA: u16 = 0x11;

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
            println!("ok: {what}");
        } else {
            self.failed += 1;
            println!("FAIL: {what}: {}", detail());
        }
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: &T, want: &T) {
        self.check(what, got == want, || {
            format!("\n  got  {got:?}\n  want {want:?}")
        });
    }
}

fn addr(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn initial() -> IpsecSpec {
    IpsecSpec {
        sas: vec![
            EspSa {
                src: addr(10, 50, 0, 1),
                dst: addr(10, 50, 0, 2),
                spi: 0x0000_1001,
                key: std::array::from_fn(|i| i as u8),
            },
            EspSa {
                src: addr(10, 50, 0, 2),
                dst: addr(10, 50, 0, 1),
                spi: 0x0000_2001,
                key: std::array::from_fn(|i| 0xa0 + i as u8),
            },
        ],
        policies: vec![VxlanPolicy {
            src: addr(10, 50, 0, 1),
            dst: addr(10, 50, 0, 2),
            mark: 0x0e11_0001,
        }],
    }
}

fn rotated() -> IpsecSpec {
    let mut spec = initial();
    spec.sas[0].spi = 0x0000_1002;
    spec.sas[0].key = [0x42; 20];
    spec.sas.sort();
    spec
}

/// A NETLINK_XFRM socket in `netns` subscribed to the kernel's SA notifications (XFRMNLGRP_SA).
fn sa_monitor(netns: &Path) -> Result<OwnedFd, String> {
    routemesh_netdev::netns::run_in(netns, sa_monitor_here).map_err(|e| e.to_string())?
}

fn sa_monitor_here() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2), checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            NETLINK_XFRM,
        )
    };
    if raw < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero sockaddr_nl is valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = 1 << (XFRMNLGRP_SA - 1);
    // SAFETY: valid sockaddr_nl and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The SA notifications queued on `fd`, as "add 0x…" / "del 0x…" in kernel order.
fn sa_events(fd: &OwnedFd) -> Vec<String> {
    let mut events = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is valid and writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return events;
        }
        let mut data = &buf[..n as usize];
        while data.len() >= 16 {
            let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let ty = u16::from_ne_bytes([data[4], data[5]]);
            if len < 16 || len > data.len() {
                break;
            }
            let payload = &data[16..len];
            // NEWSA: xfrm_usersa_info, spi at 56+16; DELSA: xfrm_usersa_id, spi at 16.
            let spi_at = match ty {
                XFRM_MSG_NEWSA => Some(("add", 72)),
                XFRM_MSG_DELSA => Some(("del", 16)),
                _ => None,
            };
            if let Some((what, off)) = spi_at {
                if let Some(b) = payload.get(off..off + 4) {
                    let spi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    events.push(format!("{what} {spi:#010x}"));
                }
            }
            data = &data[(len.div_ceil(4) * 4).min(data.len())..];
        }
    }
}

fn apply(x: &Xfrm, c: &mut Checks) -> Result<(), String> {
    let esp = x.esp_supported().map_err(|e| e.to_string())?;
    c.check("esp_supported() is true", esp, || {
        "the kernel has no esp4 / rfc4106(gcm(aes))".into()
    });
    let want = initial();
    x.sync(&want).map_err(|e| format!("sync: {e}"))?;
    let got = x.read().map_err(|e| format!("read: {e}"))?;
    c.equal("read back 2 SAs + 1 policy", &got, &want);
    Ok(())
}

fn all(x: &Xfrm, netns: &Path, c: &mut Checks) -> Result<(), String> {
    apply(x, c)?;
    let monitor = sa_monitor(netns)?;
    let want = rotated();
    x.sync(&want).map_err(|e| format!("sync rotated: {e}"))?;
    let events = sa_events(&monitor);
    println!("SA notifications during the rotation: {events:?}");
    let added = events.iter().position(|e| e == "add 0x00001002");
    let deleted = events.iter().position(|e| e == "del 0x00001001");
    c.check(
        "rotation adds the new SA before deleting the old one",
        matches!((added, deleted), (Some(a), Some(d)) if a < d),
        || format!("{events:?}"),
    );
    c.equal(
        "rotation touches only the rotated SA",
        &events.len(),
        &2usize,
    );
    let got = x.read().map_err(|e| format!("read: {e}"))?;
    c.equal("read back after rotation", &got, &want);
    x.sync(&want).map_err(|e| format!("sync again: {e}"))?;
    c.equal(
        "a second sync changes nothing",
        &sa_events(&monitor),
        &Vec::<String>::new(),
    );
    x.flush().map_err(|e| format!("flush: {e}"))?;
    let got = x.read().map_err(|e| format!("read: {e}"))?;
    c.equal("read back empty after flush", &got, &IpsecSpec::default());
    Ok(())
}

const TRAFFIC_MARK: u32 = 0x0e11_0002;

fn traffic(a_ns: &Path, b_ns: &Path, c: &mut Checks) -> Result<(), String> {
    let a = addr(10, 51, 0, 1);
    let b = addr(10, 51, 0, 2);
    let ab = EspSa {
        src: a,
        dst: b,
        spi: 0x0000_3001,
        key: [0x33; 20],
    };
    let ba = EspSa {
        src: b,
        dst: a,
        spi: 0x0000_3002,
        key: [0x44; 20],
    };
    for (ns, src, dst) in [(a_ns, a, b), (b_ns, b, a)] {
        let x = Xfrm::open(Some(ns)).map_err(|e| e.to_string())?;
        let spec = IpsecSpec {
            sas: vec![ab.clone(), ba.clone()],
            policies: vec![VxlanPolicy {
                src,
                dst,
                mark: TRAFFIC_MARK,
            }],
        };
        x.sync(&spec).map_err(|e| format!("sync: {e}"))?;
    }
    let bind_in = |ns: &Path, ip: Ipv4Addr, port: u16| -> Result<UdpSocket, String> {
        let sock = routemesh_netdev::netns::run_in(ns, move || UdpSocket::bind((ip, port)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind {ip}:{port}: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        Ok(sock)
    };
    let rx = bind_in(b_ns, b, 4789)?;
    let marked = bind_in(a_ns, a, 0)?;
    let mark = TRAFFIC_MARK;
    // SAFETY: SO_MARK takes a u32; pointer and length describe `mark`.
    let rc = unsafe {
        libc::setsockopt(
            marked.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(format!("SO_MARK: {}", std::io::Error::last_os_error()));
    }
    let plain = bind_in(a_ns, a, 0)?;
    for (sock, payload) in [
        (&marked, &b"through ESP"[..]),
        (&plain, &b"in the clear"[..]),
    ] {
        sock.send_to(payload, (b, 4789))
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        let got = rx
            .recv_from(&mut buf)
            .map(|(n, from)| (buf[..n].to_vec(), from));
        let what = format!("{:?} arrives at {b}:4789", String::from_utf8_lossy(payload));
        match got {
            Ok((data, from)) => {
                c.equal(&what, &data, &payload.to_vec());
                c.equal("from A", &from.ip(), &std::net::IpAddr::V4(a));
            }
            Err(e) => c.check(&what, false, || e.to_string()),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(step), Some(netns)) = (args.first(), args.get(1)) else {
        eprintln!("usage: xfrm_smoke apply|all NETNS_PATH | traffic NETNS_A NETNS_B");
        return ExitCode::from(2);
    };
    let netns = PathBuf::from(netns);
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };
    let result = Xfrm::open(Some(&netns))
        .map_err(|e| e.to_string())
        .and_then(|x| match step.as_str() {
            "apply" => apply(&x, &mut c),
            "all" => all(&x, &netns, &mut c),
            "traffic" => match args.get(2) {
                Some(b) => traffic(&netns, Path::new(b), &mut c),
                None => Err("traffic needs two namespaces".into()),
            },
            other => Err(format!("unknown step {other:?} (apply | all | traffic)")),
        });
    if let Err(e) = result {
        println!("FAIL: {e}");
        c.failed += 1;
    }
    println!("xfrm-smoke: {} passed, {} failed", c.passed, c.failed);
    if c.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
