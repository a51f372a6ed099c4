//! Bounded fuzzing of the IPVS reply path: datagrams -> `Exchange` (nlmsghdr, genlmsghdr,
//! acks, errors, dump ends) -> `decode` (nested attributes). Inputs are random bytes, reply
//! datagrams built with the crate's own encoder (services, destinations, timeouts, acks,
//! errors, `NLMSG_DONE`) and their mutations (flips, truncation, extension, splicing). See
//! `fuzz/driver.rs` for the driver and its settings.
//!
//! Properties: nothing panics (an out-of-bounds read would); every failure is a typed
//! `IpvsError::Kernel` (positive errno) or `IpvsError::Decode`; what is decoded keeps the
//! invariants of its type; an encoded service, destination or timeouts decodes back equal.

#![cfg(target_endian = "little")]

#[path = "../../fuzz/driver.rs"]
mod driver;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Unstructured;
use routemesh_ipvs::fuzzing::{self, Decoded, Entry, MULTI, SEQ};
use routemesh_ipvs::{
    Destination, DestinationEntry, Family, Forwarding, IpvsError, Proto, SchedName, Scheduler,
    Service, ServiceEntry, ServiceFlags, ServiceKey, Stats, Timeouts,
};

/// `IP_VS_SVC_F_HASHED`: kernel bookkeeping the decoder drops.
const HASHED: u32 = 0x2;

// ---- generators -------------------------------------------------------------------------

fn addr(u: &mut Unstructured, family: Family) -> arbitrary::Result<IpAddr> {
    Ok(match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?)),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?)),
    })
}

fn family(u: &mut Unstructured) -> arbitrary::Result<Family> {
    Ok(if u.arbitrary()? {
        Family::Inet
    } else {
        Family::Inet6
    })
}

fn key(u: &mut Unstructured) -> arbitrary::Result<ServiceKey> {
    let family = family(u)?;
    Ok(if u.arbitrary()? {
        ServiceKey::Fwmark {
            // 0 means "no fwmark" on the wire: an address service.
            mark: u.int_in_range(1..=u32::MAX)?,
            family,
        }
    } else {
        ServiceKey::Addr {
            addr: addr(u, family)?,
            port: u.arbitrary()?,
            proto: *u.choose(&[Proto::Tcp, Proto::Udp, Proto::Sctp])?,
        }
    })
}

fn scheduler(u: &mut Unstructured) -> arbitrary::Result<SchedName> {
    if u.ratio(4, 5)? {
        return Ok(SchedName::Known(*u.choose(&Scheduler::ALL)?));
    }
    // A scheduler routemesh does not know: up to 15 bytes, no NUL (IP_VS_SCHEDNAME_MAXLEN).
    let len = u.int_in_range(1..=15)?;
    let name: String = (0..len)
        .map(|_| u.int_in_range(b'a'..=b'z').map(char::from))
        .collect::<arbitrary::Result<_>>()?;
    Ok(SchedName::from_name(&name))
}

fn service(u: &mut Unstructured) -> arbitrary::Result<Service> {
    let key = key(u)?;
    let mut service = Service::new(key, scheduler(u)?);
    service.flags = ServiceFlags(u.arbitrary::<u32>()? & !HASHED);
    service.timeout = u.arbitrary()?;
    if u.arbitrary()? {
        service.netmask = u.arbitrary()?;
    }
    Ok(service)
}

fn destination(u: &mut Unstructured, family: Family) -> arbitrary::Result<Destination> {
    let mut dest = Destination::new(addr(u, family)?, u.arbitrary()?);
    dest.weight = u.arbitrary()?;
    dest.fwd = *u.choose(&[
        Forwarding::Masq,
        Forwarding::Local,
        Forwarding::Tunnel,
        Forwarding::Route,
    ])?;
    dest.upper_threshold = u.arbitrary()?;
    dest.lower_threshold = u.arbitrary()?;
    Ok(dest)
}

fn timeouts(u: &mut Unstructured) -> arbitrary::Result<Timeouts> {
    Ok(Timeouts {
        tcp: u.arbitrary()?,
        tcp_fin: u.arbitrary()?,
        udp: u.arbitrary()?,
    })
}

/// A bare `nlmsghdr` with `payload`, written by hand (not by the code under test).
fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&(16 + payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&4242u32.to_le_bytes());
    out.extend_from_slice(payload);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

/// `NLMSG_ERROR` with `code` (0 is an acknowledgement) and the request's header.
fn error_message(code: i32, seq: u32) -> Vec<u8> {
    let mut payload = code.to_le_bytes().to_vec();
    payload.extend_from_slice(&nlmsg(fuzzing::FAMILY_ID, 5, seq, &[])[..16]);
    nlmsg(2, 0, seq, &payload)
}

fn done_message(code: i32) -> Vec<u8> {
    nlmsg(3, MULTI, SEQ, &code.to_le_bytes())
}

/// An `nlattr` written by hand, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len() + 3);
    out.extend_from_slice(&(4 + value.len() as u16).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

/// Statistics as the kernel nests them: some counters, as u32 or u64.
fn stats_attr(u: &mut Unstructured, kind: u16, wide: bool) -> arbitrary::Result<Vec<u8>> {
    let mut inner = Vec::new();
    for counter in 1..=u.int_in_range(0..=7)? {
        let value = if wide {
            u.arbitrary::<u64>()?.to_le_bytes().to_vec()
        } else {
            u.arbitrary::<u32>()?.to_le_bytes().to_vec()
        };
        inner.extend(nla(counter, &value));
    }
    Ok(nla(kind | 0x8000, &inner))
}

/// A dump entry the encoder never writes: a service or destination with statistics and
/// connection counters, or the version reply, built attribute by attribute.
fn kernel_entry(u: &mut Unstructured, flags: u16) -> arbitrary::Result<Vec<u8>> {
    let (cmd, attrs) = match u.int_in_range(0..=2)? {
        0 => {
            let mut svc = vec![
                nla(1, &u.choose(&[2u16, 10, 0])?.to_le_bytes()),
                nla(5, &u.int_in_range(0u32..=3)?.to_le_bytes()), // FWMARK, 0 = none
                nla(2, &u.choose(&[6u16, 17, 132, 1])?.to_le_bytes()),
                nla(3, u.bytes(16)?),
                nla(4, u.bytes(2)?),
                nla(6, b"wrr\0"),
                nla(7, u.bytes(8)?),
            ];
            if u.arbitrary()? {
                svc.push(stats_attr(u, 10, false)?);
            }
            if u.arbitrary()? {
                svc.push(stats_attr(u, 12, true)?);
            }
            (1u8, nla(1 | 0x8000, &svc.concat()))
        }
        1 => {
            let mut dest = vec![
                nla(1, u.bytes(16)?),
                nla(2, u.bytes(2)?),
                nla(3, &u.int_in_range(0u32..=4)?.to_le_bytes()),
                nla(4, &u.arbitrary::<u32>()?.to_le_bytes()),
            ];
            for counter in 7..=9u16 {
                if u.arbitrary()? {
                    dest.push(nla(counter, &u.arbitrary::<u32>()?.to_le_bytes()));
                }
            }
            if u.arbitrary()? {
                dest.push(nla(11, &u.choose(&[2u16, 10, 7])?.to_le_bytes()));
            }
            if u.arbitrary()? {
                dest.push(stats_attr(u, 10, false)?);
            }
            if u.arbitrary()? {
                dest.push(stats_attr(u, 12, true)?);
            }
            (5u8, nla(2 | 0x8000, &dest.concat()))
        }
        _ => (
            14u8,
            [
                nla(1, &u.arbitrary::<u32>()?.to_le_bytes()),
                nla(2, &u.arbitrary::<u32>()?.to_le_bytes()),
            ]
            .concat(),
        ),
    };
    let mut payload = vec![cmd, 1, 0, 0];
    payload.extend(attrs);
    Ok(nlmsg(fuzzing::FAMILY_ID, flags, SEQ, &payload))
}

/// One datagram of one to four messages, as the kernel could send them.
fn datagram(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let flags = if u.arbitrary()? { MULTI } else { 0 };
        let message = match u.int_in_range(0..=9)? {
            0..=2 => fuzzing::service_message(&service(u)?, flags),
            3..=5 => {
                let key = key(u)?;
                let dest = destination(u, key.family())?;
                fuzzing::destination_message(&key, &dest, flags)
            }
            6 => fuzzing::timeouts_message(&timeouts(u)?, flags),
            7 if u.arbitrary()? => kernel_entry(u, flags)?,
            7 => done_message(*u.choose(&[0, 0, -1, -95, i32::MIN])?),
            8 => error_message(*u.choose(&[0, 0, -2, -17, i32::MIN])?, SEQ),
            // A late answer to an earlier request: skipped.
            _ => error_message(-1, SEQ.wrapping_sub(1)),
        };
        out.extend(message);
    }
    Ok(out)
}

// ---- properties ---------------------------------------------------------------------------

/// What the types cannot say: invariants of a decoded service.
fn check_entry(entry: &Entry) {
    if let Entry::Service(ServiceEntry { service, .. }) = entry {
        assert_eq!(service.flags.0 & HASHED, 0, "HASHED not dropped");
        if let ServiceKey::Fwmark { mark, .. } = service.key {
            assert_ne!(mark, 0, "fwmark 0 decoded as a fwmark service");
        }
        assert!(
            !service.scheduler.name().contains('\0'),
            "NUL in a scheduler name"
        );
    }
}

fn check_datagram(bytes: &[u8]) {
    for dump in [false, true] {
        for family in [Family::Inet, Family::Inet6] {
            match fuzzing::decode_datagram(bytes, dump, family) {
                Ok(Decoded { entries, .. }) => {
                    for entry in &entries {
                        check_entry(entry);
                    }
                }
                Err(IpvsError::Kernel { errno, .. }) => {
                    assert!(errno > 0, "errno {errno} is not positive")
                }
                Err(IpvsError::Decode { detail, .. }) => {
                    assert!(!detail.is_empty(), "a decode error that says nothing")
                }
                Err(other) => panic!("untyped failure for a datagram: {other:?}"),
            }
        }
    }
}

#[test]
fn fuzz_ipvs_reply_datagrams() {
    let report = driver::run(&driver::Target {
        name: "ipvs-reply",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &datagram,
        check: &check_datagram,
    });
    assert!(report.replayed > 0, "the ipvs-reply corpus is missing");
}

/// The input drives the choice of one service, destination and timeouts; each, encoded as
/// the kernel answers it, decodes back to itself.
fn check_roundtrip(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let Ok(service) = service(&mut u) else { return };
    let decoded =
        fuzzing::decode_datagram(&fuzzing::service_message(&service, 0), false, Family::Inet)
            .unwrap_or_else(|e| panic!("{service:?} does not decode: {e}"));
    let expected = Entry::Service(ServiceEntry {
        service: service.clone(),
        stats: Stats::default(),
    });
    assert_eq!(decoded.entries, vec![expected], "service roundtrip");

    let Ok(dest) = destination(&mut u, service.key.family()) else {
        return;
    };
    // A reply without the address family attribute uses the service's.
    let decoded = fuzzing::decode_datagram(
        &fuzzing::destination_message(&service.key, &dest, 0),
        false,
        Family::Inet,
    )
    .unwrap_or_else(|e| panic!("{dest:?} does not decode: {e}"));
    let expected = Entry::Destination(DestinationEntry {
        destination: dest,
        active_conns: 0,
        inactive_conns: 0,
        persistent_conns: 0,
        stats: Stats::default(),
    });
    assert_eq!(decoded.entries, vec![expected], "destination roundtrip");

    let Ok(timeouts) = timeouts(&mut u) else {
        return;
    };
    let mut datagram = fuzzing::timeouts_message(&timeouts, 0);
    datagram.extend(error_message(0, SEQ));
    let decoded = fuzzing::decode_datagram(&datagram, false, Family::Inet)
        .unwrap_or_else(|e| panic!("{timeouts:?} does not decode: {e}"));
    assert!(decoded.complete, "the acknowledgement ends the exchange");
    assert_eq!(decoded.entries, vec![Entry::Timeouts(timeouts)]);
}

#[test]
fn fuzz_ipvs_roundtrip() {
    let report = driver::run(&driver::Target {
        name: "ipvs-roundtrip",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &|u| Ok(u.bytes(u.len().min(128))?.to_vec()),
        check: &check_roundtrip,
    });
    assert!(report.replayed > 0, "the ipvs-roundtrip corpus is missing");
}

/// Seeds written as the kernel lays them out decode to what they say.
#[test]
fn kernel_layout_seeds_decode() {
    let dir = driver::corpus_root(env!("CARGO_MANIFEST_DIR")).join("ipvs-reply");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let dump =
        fuzzing::decode_datagram(&read("kernel-fwmark-with-stats"), true, Family::Inet).unwrap();
    assert!(dump.complete);
    let [Entry::Service(entry)] = &dump.entries[..] else {
        panic!("{dump:?}");
    };
    assert_eq!(
        entry.service.key,
        ServiceKey::Fwmark {
            mark: 260,
            family: Family::Inet
        }
    );
    assert_eq!((entry.stats.conns, entry.stats.in_bytes), (5, 1 << 32));
    let info = fuzzing::decode_datagram(&read("info"), false, Family::Inet).unwrap();
    let [Entry::Info(info)] = &info.entries[..] else {
        panic!("{info:?}");
    };
    assert_eq!((info.version, info.conn_tab_size), ((1, 2, 6), 4096));
}

/// The generated datagrams are mostly well formed (else only the error paths get fuzzed):
/// most decode, and decoding yields entries of every kind.
#[test]
fn generated_datagrams_decode() {
    let mut rng = driver::Rng::new(11);
    let (mut ok, mut services, mut dests, mut total) = (0, 0, 0, 0);
    let (mut with_stats, mut infos) = (0, 0);
    for _ in 0..300 {
        let raw = rng.bytes(512);
        let Ok(bytes) = datagram(&mut Unstructured::new(&raw)) else {
            continue;
        };
        total += 1;
        if let Ok(decoded) = fuzzing::decode_datagram(&bytes, true, Family::Inet) {
            ok += 1;
            for entry in decoded.entries {
                match entry {
                    Entry::Service(e) => {
                        services += 1;
                        with_stats += usize::from(e.stats != Stats::default());
                    }
                    Entry::Destination(e) => {
                        dests += 1;
                        with_stats += usize::from(e.stats != Stats::default());
                    }
                    Entry::Info(_) => infos += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(ok * 2 > total, "{ok} of {total} generated datagrams decode");
    assert!(
        services > 20 && dests > 20 && with_stats > 0 && infos > 0,
        "{services} services, {dests} destinations, {with_stats} with statistics, {infos} infos"
    );
}

/// Writes the seed corpus (one valid datagram per file) from the encoder:
/// `cargo test -p routemesh-ipvs --test fuzz -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = driver::corpus_root(env!("CARGO_MANIFEST_DIR")).join("ipvs-reply");
    std::fs::create_dir_all(&dir).unwrap();
    let fwmark = ServiceKey::Fwmark {
        mark: 260,
        family: Family::Inet,
    };
    let tcp6 = ServiceKey::Addr {
        addr: "fd00::1".parse().unwrap(),
        port: 443,
        proto: Proto::Tcp,
    };
    let mut dump = fuzzing::service_message(&Service::new(fwmark, Scheduler::Rr), MULTI);
    dump.extend(fuzzing::service_message(
        &Service::new(tcp6, Scheduler::Mh),
        MULTI,
    ));
    dump.extend(done_message(0));
    let dest = Destination::new([10, 0, 1, 5].into(), 80);
    let mut dests = fuzzing::destination_message(&fwmark, &dest, MULTI);
    dests.extend(done_message(0));
    let mut timeouts_reply = fuzzing::timeouts_message(
        &Timeouts {
            tcp: 86400,
            tcp_fin: 120,
            udp: 300,
        },
        0,
    );
    timeouts_reply.extend(error_message(0, SEQ));
    let seeds: [(&str, Vec<u8>); 6] = [
        ("services-dump", dump),
        ("destinations-dump", dests),
        ("timeouts-acked", timeouts_reply),
        ("ack", error_message(0, SEQ)),
        ("error-eexist", error_message(-17, SEQ)),
        ("done-error", done_message(-95)),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let dir = driver::corpus_root(env!("CARGO_MANIFEST_DIR")).join("ipvs-roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = driver::Rng::new(1);
    for i in 0..3 {
        std::fs::write(dir.join(format!("random-{i}")), rng.bytes(128)).unwrap();
    }
}
