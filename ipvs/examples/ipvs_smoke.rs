//! Drives the IPVS client against a real kernel, one step per invocation, so that
//! `vm/tests/ipvs-client.sh` can check every step with `ipvsadm` in between.
//!
//! ```text
//! ipvs_smoke add MARK            fwmark MARK rr with 10.0.0.5:80 and 10.0.0.6:80 (Masq, weight 1),
//!                                TCP 10.1.0.1:8080 wrr, UDP [fd00::1]:53 lc
//! ipvs_smoke add-again MARK      adding fwmark MARK again must fail with EEXIST
//! ipvs_smoke weight MARK IP:PORT W
//! ipvs_smoke timeouts TCP FIN UDP   set, then read back and compare
//! ipvs_smoke delete-dest MARK IP:PORT   delete, check the dump, delete again must be ENOENT
//! ipvs_smoke dump                one line per service and destination
//! ipvs_smoke netns PATH MARK     add fwmark MARK rr inside the namespace at PATH
//! ipvs_smoke many N              add N fwmark services (10000..) with 2 destinations each and
//!                                check that the (multi-datagram) dumps return them all
//! ipvs_smoke flush
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;

use routemesh_ipvs::{
    Destination, Family, Forwarding, IpvsClient, Proto, Scheduler, Service, ServiceKey, Timeouts,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn fwmark(arg: Option<&String>) -> Result<ServiceKey> {
    let mark = arg.ok_or("missing MARK")?.parse()?;
    Ok(ServiceKey::Fwmark {
        mark,
        family: Family::Inet,
    })
}

fn socket_addr(arg: Option<&String>) -> Result<SocketAddr> {
    Ok(arg.ok_or("missing IP:PORT")?.parse()?)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvs_smoke: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let step = args.first().map(String::as_str).unwrap_or("");
    match step {
        "add" => add(fwmark(args.get(1))?),
        "add-again" => add_again(fwmark(args.get(1))?),
        "weight" => {
            let key = fwmark(args.get(1))?;
            let addr = socket_addr(args.get(2))?;
            let weight = args.get(3).ok_or("missing W")?.parse()?;
            let mut dest = Destination::new(addr.ip(), addr.port());
            dest.weight = weight;
            IpvsClient::open()?.update_destination(&key, &dest)?;
            Ok(())
        }
        "timeouts" => {
            let number =
                |i: usize| -> Result<u32> { Ok(args.get(i).ok_or("missing timeout")?.parse()?) };
            let wanted = Timeouts {
                tcp: number(1)?,
                tcp_fin: number(2)?,
                udp: number(3)?,
            };
            let mut ipvs = IpvsClient::open()?;
            ipvs.set_timeouts(&wanted)?;
            let read = ipvs.timeouts()?;
            println!(
                "timeouts tcp={} tcp_fin={} udp={}",
                read.tcp, read.tcp_fin, read.udp
            );
            if read != wanted {
                return Err(format!("read back {read:?}, set {wanted:?}").into());
            }
            Ok(())
        }
        "delete-dest" => delete_dest(fwmark(args.get(1))?, socket_addr(args.get(2))?),
        "dump" => dump(&mut IpvsClient::open()?),
        "netns" => {
            let path = args.get(1).ok_or("missing PATH")?;
            let key = fwmark(args.get(2))?;
            let mut ipvs = IpvsClient::open_in_netns(Path::new(path))?;
            ipvs.add_service(&Service::new(key, Scheduler::Rr))?;
            dump(&mut ipvs)
        }
        "many" => {
            let count: u32 = args.get(1).ok_or("missing N")?.parse()?;
            many(count)
        }
        "flush" => {
            let mut ipvs = IpvsClient::open()?;
            ipvs.flush()?;
            let left = ipvs.services()?;
            if !left.is_empty() {
                return Err(format!("{} services left after flush", left.len()).into());
            }
            Ok(())
        }
        other => Err(format!("unknown step {other:?}; see the source for the steps").into()),
    }
}

fn add(key: ServiceKey) -> Result<()> {
    let mut ipvs = IpvsClient::open()?;
    let info = ipvs.info()?;
    println!(
        "IPVS {}.{}.{} (family id {}, {} connection buckets)",
        info.version.0,
        info.version.1,
        info.version.2,
        ipvs.family_id(),
        info.conn_tab_size
    );
    ipvs.add_service(&Service::new(key, Scheduler::Rr))?;
    for addr in ["10.0.0.5", "10.0.0.6"] {
        ipvs.add_destination(&key, &Destination::new(addr.parse()?, 80))?;
    }

    let tcp = ServiceKey::Addr {
        addr: "10.1.0.1".parse()?,
        port: 8080,
        proto: Proto::Tcp,
    };
    ipvs.add_service(&Service::new(tcp, Scheduler::Wrr))?;
    let mut dest = Destination::new("10.0.0.7".parse()?, 8080);
    dest.weight = 3;
    dest.upper_threshold = 100;
    dest.lower_threshold = 10;
    ipvs.add_destination(&tcp, &dest)?;

    let udp6 = ServiceKey::Addr {
        addr: "fd00::1".parse()?,
        port: 53,
        proto: Proto::Udp,
    };
    ipvs.add_service(&Service::new(udp6, Scheduler::Lc))?;
    let mut dest = Destination::new("fd00::5".parse()?, 5353);
    dest.fwd = Forwarding::Route;
    ipvs.add_destination(&udp6, &dest)?;
    // Changing the scheduler of an existing service.
    ipvs.update_service(&Service::new(udp6, Scheduler::Sh))?;

    let found = ipvs
        .service(&tcp)?
        .ok_or("TCP 10.1.0.1:8080 not found right after adding")?;
    if found.service != Service::new(tcp, Scheduler::Wrr) {
        return Err(format!("read back {:?}", found.service).into());
    }
    let missing = ServiceKey::Fwmark {
        mark: 999_999,
        family: Family::Inet,
    };
    if ipvs.service(&missing)?.is_some() {
        return Err("fwmark 999999 reported present".into());
    }
    dump(&mut ipvs)
}

fn add_again(key: ServiceKey) -> Result<()> {
    let mut ipvs = IpvsClient::open()?;
    match ipvs.add_service(&Service::new(key, Scheduler::Rr)) {
        Err(e) if e.is_exists() => {
            println!("expected error: {e}");
        }
        other => return Err(format!("adding {key} again gave {other:?}, not EEXIST").into()),
    }
    let dest = Destination::new("10.0.0.5".parse()?, 80);
    match ipvs.add_destination(&key, &dest) {
        Err(e) if e.is_exists() => println!("expected error: {e}"),
        other => return Err(format!("adding 10.0.0.5:80 again gave {other:?}").into()),
    }
    Ok(())
}

fn delete_dest(key: ServiceKey, addr: SocketAddr) -> Result<()> {
    let mut ipvs = IpvsClient::open()?;
    let before = ipvs.destinations(&key)?;
    ipvs.delete_destination(&key, addr.ip(), addr.port())?;
    let after = ipvs.destinations(&key)?;
    let expected: Vec<Destination> = before
        .iter()
        .map(|entry| entry.destination)
        .filter(|dest| dest.socket_addr() != addr)
        .collect();
    let got: Vec<Destination> = after.iter().map(|entry| entry.destination).collect();
    if got != expected || got.len() + 1 != before.len() {
        return Err(format!("after deleting {addr}: {got:?}, expected {expected:?}").into());
    }
    match ipvs.delete_destination(&key, addr.ip(), addr.port()) {
        Err(e) if e.is_not_found() => println!("expected error: {e}"),
        other => return Err(format!("deleting {addr} twice gave {other:?}").into()),
    }
    dump(&mut ipvs)
}

fn many(count: u32) -> Result<()> {
    let mut ipvs = IpvsClient::open()?;
    let before = ipvs.services()?.len();
    let mut last = None;
    for mark in 10_000..10_000 + count {
        let key = ServiceKey::Fwmark {
            mark,
            family: Family::Inet,
        };
        ipvs.add_service(&Service::new(key, Scheduler::Wrr))?;
        for host in [1u8, 2] {
            let addr = std::net::Ipv4Addr::new(10, 9, (mark % 250) as u8, host);
            ipvs.add_destination(&key, &Destination::new(addr.into(), 80))?;
        }
        last = Some(key);
    }
    let services = ipvs.services()?;
    let marks: std::collections::BTreeSet<u32> = services
        .iter()
        .filter_map(|entry| match entry.service.key {
            ServiceKey::Fwmark { mark, .. } if mark >= 10_000 => Some(mark),
            _ => None,
        })
        .collect();
    println!("dumped {} services ({} added)", services.len(), count);
    if services.len() != before + count as usize || marks.len() != count as usize {
        return Err(format!(
            "dump has {} services, expected {}",
            services.len(),
            before + count as usize
        )
        .into());
    }
    if let Some(key) = last {
        let dests = ipvs.destinations(&key)?;
        if dests.len() != 2 {
            return Err(format!("{key} has {} destinations, expected 2", dests.len()).into());
        }
    }
    Ok(())
}

fn dump(ipvs: &mut IpvsClient) -> Result<()> {
    for entry in ipvs.services()? {
        let svc = &entry.service;
        println!(
            "service {} {} flags={:#x} timeout={} netmask={:#x} conns={}",
            svc.key, svc.scheduler, svc.flags.0, svc.timeout, svc.netmask, entry.stats.conns
        );
        for dest in ipvs.destinations(&svc.key)? {
            let d = &dest.destination;
            println!(
                "  dest {} {:?} weight={} upper={} lower={} active={} inactive={}",
                SocketAddr::new(d.addr, d.port),
                d.fwd,
                d.weight,
                d.upper_threshold,
                d.lower_threshold,
                dest.active_conns,
                dest.inactive_conns
            );
        }
    }
    Ok(())
}
