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

/// The generated datagrams are mostly well formed (else only the error paths get fuzzed):
/// most decode, and decoding yields entries of every kind.
#[test]
fn generated_datagrams_decode() {
    let mut rng = driver::Rng::new(11);
    let (mut ok, mut services, mut dests, mut total) = (0, 0, 0, 0);
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
                    Entry::Service(_) => services += 1,
                    Entry::Destination(_) => dests += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(ok * 2 > total, "{ok} of {total} generated datagrams decode");
    assert!(
        services > 20 && dests > 20,
        "{services} services, {dests} destinations"
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
