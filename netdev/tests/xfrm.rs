//! Kernel tests of `netdev::xfrm`: need root. Each test makes its own namespace (name includes
//! the pid, removed on drop, also when the test panics) and never touches the machine's own.
//! Results are checked with `ip xfrm` (iproute2, an independent implementation).
//!
//! Policies work on any kernel with XFRM. SAs need esp4 and `rfc4106(gcm(aes))`: where
//! `esp_supported()` is false (the development machine) the SA test says so loudly and stops;
//! in the VM (vm/xfrm-test.sh, Debian's kernel) the smoke example covers them.

use std::net::Ipv4Addr;
use std::process::Command;

use routemesh_netdev::xfrm::{EspSa, IpsecSpec, VxlanPolicy, Xfrm, REQID};
use routemesh_netdev::Error;
use routemesh_testsupport::{errtext, output, root_or_skip, text, unique, Netns};

fn netns(label: &str) -> Netns {
    Netns::new(&unique(label)).unwrap_or_else(|e| panic!("{e}"))
}

fn open(ns: &Netns) -> Xfrm {
    Xfrm::open(Some(&ns.path())).unwrap_or_else(|e| panic!("open: {e}"))
}

/// `ip -n NS ARGS...`: whether it succeeded, and stdout then stderr.
fn ip_try(ns: &Netns, args: &[&str]) -> (bool, String) {
    let o = output(Command::new("ip").arg("-n").arg(&ns.name).args(args));
    (o.status.success(), format!("{}{}", text(&o), errtext(&o)))
}

fn ip(ns: &Netns, args: &[&str]) -> String {
    let (ok, out) = ip_try(ns, args);
    assert!(ok, "ip -n {} {args:?} failed: {out}", ns.name);
    out
}

/// The entries of `ip xfrm policy` / `ip xfrm state`, one string each (continuation lines
/// joined, whitespace collapsed), sorted.
fn entries(listing: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in listing.lines() {
        let words = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(&words);
            }
            _ => out.push(words),
        }
    }
    out.sort();
    out
}

fn policies(ns: &Netns) -> Vec<String> {
    entries(&ip(ns, &["xfrm", "policy", "list"]))
}

fn states(ns: &Netns) -> Vec<String> {
    entries(&ip(ns, &["xfrm", "state", "list"]))
}

fn ours(list: &[String]) -> Vec<String> {
    let tag = format!("reqid {REQID} ");
    list.iter().filter(|e| e.contains(&tag)).cloned().collect()
}

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// How `ip xfrm policy` prints a policy made from `p`.
fn policy_line(p: &VxlanPolicy) -> String {
    format!(
        "src {src}/32 dst {dst}/32 proto udp dport 4789 dir out priority 0 ptype main \
         mark {mark:#x}/0xffffffff tmpl src {src} dst {dst} proto esp reqid {REQID} mode transport",
        src = p.src,
        dst = p.dst,
        mark = p.mark
    )
}

fn key_hex(key: &[u8; 20]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

const TEST_KEY: &str = "0x000102030405060708090a0b0c0d0e0f10111213";

#[test]
fn esp_supported_agrees_with_ip_xfrm_state_add() {
    if !root_or_skip("esp_supported_agrees_with_ip_xfrm_state_add") {
        return;
    }
    let probe_ns = netns("xp");
    let supported = open(&probe_ns)
        .esp_supported()
        .unwrap_or_else(|e| panic!("esp_supported: {e}"));
    assert_eq!(
        states(&probe_ns),
        Vec::<String>::new(),
        "the probe SA is left behind"
    );

    // The oracle: iproute2 adding the same kind of SA in another scratch namespace.
    let oracle_ns = netns("xo");
    let (ok, out) = ip_try(
        &oracle_ns,
        &[
            "xfrm",
            "state",
            "add",
            "src",
            "192.0.2.2",
            "dst",
            "192.0.2.1",
            "proto",
            "esp",
            "spi",
            "0x1000",
            "mode",
            "transport",
            "aead",
            "rfc4106(gcm(aes))",
            TEST_KEY,
            "128",
        ],
    );
    eprintln!("esp_supported() = {supported}; ip xfrm state add: ok={ok} {out}");
    assert_eq!(
        supported, ok,
        "esp_supported() disagrees with ip xfrm: {out}"
    );
}

#[test]
fn policies_sync_read_and_flush() {
    if !root_or_skip("policies_sync_read_and_flush") {
        return;
    }
    let ns = netns("xpol");
    let x = open(&ns);
    let p1 = VxlanPolicy {
        src: a("10.1.0.1"),
        dst: a("10.1.0.2"),
        mark: 0x101,
    };
    let p2 = VxlanPolicy {
        src: a("10.1.0.1"),
        dst: a("10.1.0.3"),
        mark: 0x101,
    };
    let spec = IpsecSpec {
        sas: vec![],
        policies: vec![p2.clone(), p1.clone()],
    };
    x.sync(&spec).unwrap_or_else(|e| panic!("sync: {e}"));
    let mut want = vec![policy_line(&p1), policy_line(&p2)];
    want.sort();
    assert_eq!(policies(&ns), want);
    let read = x.read().unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(read.policies, vec![p1.clone(), p2.clone()]);
    assert_eq!(read.sas, vec![]);

    // Idempotent.
    x.sync(&spec).unwrap_or_else(|e| panic!("second sync: {e}"));
    assert_eq!(policies(&ns), want);

    // Someone else's policy (another reqid) on the same kind of traffic.
    ip(
        &ns,
        &[
            "xfrm",
            "policy",
            "add",
            "src",
            "10.9.0.1/32",
            "dst",
            "10.9.0.2/32",
            "proto",
            "udp",
            "dport",
            "4789",
            "dir",
            "out",
            "mark",
            "0x101",
            "mask",
            "0xffffffff",
            "tmpl",
            "src",
            "10.9.0.1",
            "dst",
            "10.9.0.2",
            "proto",
            "esp",
            "reqid",
            "7",
            "mode",
            "transport",
        ],
    );
    let foreign: Vec<String> = policies(&ns)
        .into_iter()
        .filter(|e| e.contains("reqid 7 "))
        .collect();
    assert_eq!(foreign.len(), 1, "{:?}", policies(&ns));

    // One changed: p2 gets another mark, p3 replaces p1.
    let p2b = VxlanPolicy {
        mark: 0x102,
        ..p2.clone()
    };
    let p3 = VxlanPolicy {
        src: a("10.1.0.1"),
        dst: a("10.1.0.4"),
        mark: 0x101,
    };
    let spec2 = IpsecSpec {
        sas: vec![],
        policies: vec![p2b.clone(), p3.clone()],
    };
    x.sync(&spec2)
        .unwrap_or_else(|e| panic!("sync changed: {e}"));
    let mut want2 = vec![policy_line(&p2b), policy_line(&p3)];
    want2.sort();
    let all = policies(&ns);
    assert_eq!(ours(&all), want2, "all: {all:?}");
    assert!(all.contains(&foreign[0]), "foreign policy gone: {all:?}");
    assert_eq!(all.len(), 3, "{all:?}");
    let read = x.read().unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(read.policies, vec![p2b, p3]);

    // Flush: none of ours left, the foreign one stays.
    x.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    assert_eq!(policies(&ns), foreign);
    assert_eq!(
        x.read().unwrap_or_else(|e| panic!("read: {e}")),
        IpsecSpec::default()
    );
    x.flush()
        .unwrap_or_else(|e| panic!("flush with nothing of ours: {e}"));
}

#[test]
fn a_policy_ours_by_reqid_but_not_our_shape_is_removed_by_sync() {
    if !root_or_skip("a_policy_ours_by_reqid_but_not_our_shape_is_removed_by_sync") {
        return;
    }
    let ns = netns("xodd");
    let reqid = REQID.to_string();
    ip(
        &ns,
        &[
            "xfrm",
            "policy",
            "add",
            "src",
            "10.2.0.0/24",
            "dst",
            "10.3.0.0/24",
            "dir",
            "out",
            "tmpl",
            "src",
            "10.2.0.1",
            "dst",
            "10.3.0.1",
            "proto",
            "esp",
            "reqid",
            &reqid,
            "mode",
            "transport",
        ],
    );
    let x = open(&ns);
    assert_eq!(
        x.read().unwrap_or_else(|e| panic!("read: {e}")),
        IpsecSpec::default()
    );
    x.sync(&IpsecSpec::default())
        .unwrap_or_else(|e| panic!("sync: {e}"));
    assert_eq!(policies(&ns), Vec::<String>::new());
}

#[test]
fn kernel_errors_name_operation_object_and_namespace() {
    if !root_or_skip("kernel_errors_name_operation_object_and_namespace") {
        return;
    }
    let ns = netns("xerr");
    let x = open(&ns);
    // Refused before any request: SPIs 0-255 are reserved.
    let bad = IpsecSpec {
        sas: vec![EspSa {
            src: a("10.1.0.1"),
            dst: a("10.1.0.2"),
            spi: 7,
            key: [1; 20],
        }],
        policies: vec![],
    };
    let e = x.sync(&bad).expect_err("SPI 7 is reserved");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("ESP SA 10.1.0.1→10.1.0.2 spi 0x00000007"),
        "{e}"
    );
    // Refused by a kernel without ESP: the error names the SA and the namespace.
    if !x
        .esp_supported()
        .unwrap_or_else(|e| panic!("esp_supported: {e}"))
    {
        let sa = EspSa {
            spi: 0x1000,
            ..bad.sas[0].clone()
        };
        let e = x
            .sync(&IpsecSpec {
                sas: vec![sa],
                policies: vec![],
            })
            .expect_err("no ESP here");
        let prefix = format!(
            "adding ESP SA 10.1.0.1→10.1.0.2 spi 0x00001000 in netns {}: xfrm: ",
            ns.path().display()
        );
        assert!(e.to_string().starts_with(&prefix), "{e}");
        assert!(e.errno().is_some(), "{e}");
    }
    let missing = std::env::temp_dir().join(unique("nons"));
    let e = Xfrm::open(Some(&missing)).expect_err("no such namespace");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn sas_sync_read_and_rotate_where_esp_exists() {
    if !root_or_skip("sas_sync_read_and_rotate_where_esp_exists") {
        return;
    }
    let ns = netns("xsa");
    let x = open(&ns);
    if !x
        .esp_supported()
        .unwrap_or_else(|e| panic!("esp_supported: {e}"))
    {
        eprintln!(
            "SKIPPED sas_sync_read_and_rotate_where_esp_exists: this kernel has no ESP \
             (esp4 or rfc4106(gcm(aes))); vm/xfrm-test.sh covers SAs"
        );
        return;
    }
    let sa1 = EspSa {
        src: a("10.1.0.1"),
        dst: a("10.1.0.2"),
        spi: 0x1001,
        key: std::array::from_fn(|i| i as u8),
    };
    let sa2 = EspSa {
        src: a("10.1.0.2"),
        dst: a("10.1.0.1"),
        spi: 0x2001,
        key: std::array::from_fn(|i| 0x80 + i as u8),
    };
    let pol = VxlanPolicy {
        src: a("10.1.0.1"),
        dst: a("10.1.0.2"),
        mark: 0x101,
    };
    let spec = IpsecSpec {
        sas: vec![sa1.clone(), sa2.clone()],
        policies: vec![pol.clone()],
    };
    x.sync(&spec).unwrap_or_else(|e| panic!("sync: {e}"));
    assert_eq!(x.read().unwrap_or_else(|e| panic!("read: {e}")), spec);
    let st = ours(&states(&ns));
    assert_eq!(st.len(), 2, "{st:?}");
    for sa in [&sa1, &sa2] {
        let line = st
            .iter()
            .find(|e| e.contains(&format!("spi {:#010x}", sa.spi)))
            .unwrap_or_else(|| panic!("no state with spi {:#x}: {st:?}", sa.spi));
        assert!(
            line.contains(&format!("src {} dst {}", sa.src, sa.dst)),
            "{line}"
        );
        assert!(line.contains("mode transport"), "{line}");
        assert!(
            line.contains(&format!(
                "aead rfc4106(gcm(aes)) 0x{} 128",
                key_hex(&sa.key)
            )),
            "{line}"
        );
    }

    // Rotation: new SPI and key for sa1, same SPI with a new key for sa2.
    let sa1b = EspSa {
        spi: 0x1002,
        key: [0x11; 20],
        ..sa1.clone()
    };
    let sa2b = EspSa {
        key: [0x22; 20],
        ..sa2.clone()
    };
    let spec2 = IpsecSpec {
        sas: vec![sa1b.clone(), sa2b.clone()],
        policies: vec![pol],
    };
    x.sync(&spec2)
        .unwrap_or_else(|e| panic!("sync rotated: {e}"));
    let mut want = spec2.clone();
    want.sas.sort();
    assert_eq!(x.read().unwrap_or_else(|e| panic!("read: {e}")), want);
    let st = ours(&states(&ns));
    assert_eq!(st.len(), 2, "{st:?}");
    assert!(!st.iter().any(|e| e.contains("spi 0x00001001")), "{st:?}");
    assert!(
        st.iter().any(|e| e.contains(&key_hex(&[0x22; 20]))),
        "{st:?}"
    );

    // A foreign SA stays through flush.
    ip(
        &ns,
        &[
            "xfrm",
            "state",
            "add",
            "src",
            "10.9.0.1",
            "dst",
            "10.9.0.2",
            "proto",
            "esp",
            "spi",
            "0x3000",
            "reqid",
            "7",
            "mode",
            "transport",
            "aead",
            "rfc4106(gcm(aes))",
            TEST_KEY,
            "128",
        ],
    );
    x.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    assert_eq!(
        x.read().unwrap_or_else(|e| panic!("read: {e}")),
        IpsecSpec::default()
    );
    let st = states(&ns);
    assert_eq!(st.len(), 1, "{st:?}");
    assert!(st[0].contains("spi 0x00003000"), "{st:?}");
    assert_eq!(policies(&ns), Vec::<String>::new());
}
