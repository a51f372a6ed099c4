//! Address management as pure functions over what is taken: pool subnets, VNIs, host
//! addresses. Callers claim the result in the store with a compare-and-set transaction and try
//! again if someone else got there first, so these never need to lock anything.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub const DEFAULT_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_POOL_PREFIX: u8 = 24;
pub const DEFAULT_GWBRIDGE_SUBNET: &str = "172.18.0.0/16";
pub const VNI_FIRST: u32 = 4096;
pub const VNI_MAX: u32 = (1 << 24) - 1;

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first `prefix`-sized subnet of `pool` that overlaps none of `taken`.
pub fn next_pool_subnet(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let mut subnets = pool.subnets(prefix).ok()?;
    subnets.find(|s| !taken.iter().any(|t| overlaps(s, t)))
}

pub fn next_vni(used: &BTreeSet<u32>) -> Option<u32> {
    (VNI_FIRST..=VNI_MAX).find(|v| !used.contains(v))
}

/// The lowest usable host address of `subnet` that is not in `taken`. The network and
/// broadcast addresses are never handed out.
pub fn next_host(subnet: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    subnet.hosts().find(|ip| !taken.contains(ip))
}

/// The lowest usable host address of `subnet` that is neither in the sorted set `taken` nor
/// in `also`. O(log n) when the taken addresses are one block from the subnet's first host
/// (or all lie above a free one): the usual case, as addresses are handed out lowest first.
/// Otherwise walks `taken` in order with the hosts: O(addresses taken below the answer).
pub fn first_free(
    subnet: Ipv4Net,
    taken: &imbl::OrdSet<Ipv4Addr>,
    also: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    let mut hosts = subnet.hosts();
    let first = hosts.next()?;
    let last = hosts.next_back().unwrap_or(first);
    // The first address of `from..=to` not in `also`; `taken` holds none of them.
    let free_in = |from: u32, to: u32| {
        (from..=to)
            .map(Ipv4Addr::from)
            .find(|ip| !also.contains(ip))
    };
    match (taken.get_min(), taken.get_max()) {
        (None, _) | (_, None) => return free_in(first.into(), last.into()),
        (Some(&min), Some(_)) if min > first => {
            let below = (u32::from(min) - 1).min(last.into());
            if let Some(ip) = free_in(first.into(), below) {
                return Some(ip);
            }
        }
        (Some(&min), Some(&max))
            if min == first
                && max <= last
                && u64::from(u32::from(max) - u32::from(min)) + 1 == taken.len() as u64 =>
        {
            // Every host up to `max` is taken.
            return match u32::from(max).checked_add(1) {
                Some(next) if next <= u32::from(last) => free_in(next, last.into()),
                _ => None,
            };
        }
        _ => {}
    }
    let mut taken = taken.range(first..).peekable();
    for ip in subnet.hosts() {
        while taken.peek().is_some_and(|t| **t < ip) {
            taken.next();
        }
        if taken.peek().is_some_and(|t| **t == ip) || also.contains(&ip) {
            continue;
        }
        return Some(ip);
    }
    None
}

/// How many usable host addresses `subnet` has.
pub fn host_count(subnet: Ipv4Net) -> u64 {
    match subnet.prefix_len() {
        32 => 1,
        31 => 2,
        p => (1u64 << (32 - p)) - 2,
    }
}

/// The address of the node's `ingress_sbox` on the gateway bridge: its second host address.
pub fn ingress_sbox_gw_address(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().nth(1)
}

/// The default gateway of a subnet: its first host address.
pub fn default_gateway(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_walks_the_taken_addresses_in_order() {
        let subnet = net("10.0.0.0/29");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut taken = imbl::OrdSet::new();
        assert_eq!(first_free(subnet, &taken, &[]), Some(ip("10.0.0.1")));
        taken.insert(ip("10.0.0.2"));
        taken.insert(ip("10.0.0.3"));
        assert_eq!(
            first_free(subnet, &taken, &[ip("10.0.0.1")]),
            Some(ip("10.0.0.4"))
        );
        for i in 1..=6 {
            taken.insert(ip(&format!("10.0.0.{i}")));
        }
        assert_eq!(first_free(subnet, &taken, &[]), None);
        // Agrees with the plain scan.
        let plain: BTreeSet<Ipv4Addr> = [ip("10.0.0.1"), ip("10.0.0.5")].into();
        let set: imbl::OrdSet<Ipv4Addr> = plain.iter().copied().collect();
        assert_eq!(first_free(subnet, &set, &[]), next_host(subnet, &plain));
        assert_eq!(host_count(net("10.0.0.0/24")), 254);
        assert_eq!(host_count(net("10.0.0.0/30")), 2);
    }

    #[test]
    fn first_free_agrees_with_the_plain_scan_on_random_sets() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..2000 {
            let subnet =
                net(["10.0.0.0/28", "10.0.0.0/29", "10.0.0.8/30", "10.0.0.0/31"][next(4) as usize]);
            let hosts: Vec<Ipv4Addr> = subnet.hosts().collect();
            let mut plain = BTreeSet::new();
            // Often a block from the first host, sometimes holes, sometimes outside.
            let block = next(hosts.len() as u64 + 1) as usize;
            plain.extend(hosts.iter().take(block).copied());
            for _ in 0..next(3) {
                let i = next(hosts.len() as u64) as usize;
                if next(2) == 0 {
                    plain.remove(&hosts[i]);
                } else {
                    plain.insert(hosts[i]);
                }
            }
            let also: Vec<Ipv4Addr> = (0..next(3))
                .map(|_| hosts[next(hosts.len() as u64) as usize])
                .collect();
            let mut with_also = plain.clone();
            with_also.extend(also.iter().copied());
            let set: imbl::OrdSet<Ipv4Addr> = plain.iter().copied().collect();
            assert_eq!(
                first_free(subnet, &set, &also),
                next_host(subnet, &with_also),
                "{subnet} taken {plain:?} also {also:?}"
            );
        }
    }

    #[test]
    fn pool_skips_taken_and_overlapping() {
        let pool = net("10.0.0.0/8");
        assert_eq!(next_pool_subnet(pool, 24, &[]), Some(net("10.0.0.0/24")));
        let taken = [net("10.0.0.0/24"), net("10.0.1.128/25")];
        assert_eq!(next_pool_subnet(pool, 24, &taken), Some(net("10.0.2.0/24")));
        // A wide explicit subnet covers many pool entries.
        let taken = [net("10.0.0.0/16")];
        assert_eq!(next_pool_subnet(pool, 24, &taken), Some(net("10.1.0.0/24")));
    }

    #[test]
    fn pool_exhaustion_is_none() {
        let pool = net("10.9.0.0/23");
        let taken = [net("10.9.0.0/24"), net("10.9.1.0/24")];
        assert_eq!(next_pool_subnet(pool, 24, &taken), None);
    }

    #[test]
    fn vni_starts_at_4096_and_fills_gaps() {
        let mut used = BTreeSet::new();
        assert_eq!(next_vni(&used), Some(4096));
        used.extend([4096, 4097, 4099]);
        assert_eq!(next_vni(&used), Some(4098));
    }

    #[test]
    fn hosts_skip_network_broadcast_and_taken() {
        let s = net("10.0.0.0/30");
        let mut taken = BTreeSet::new();
        assert_eq!(next_host(s, &taken), Some("10.0.0.1".parse().unwrap()));
        taken.insert("10.0.0.1".parse().unwrap());
        assert_eq!(next_host(s, &taken), Some("10.0.0.2".parse().unwrap()));
        taken.insert("10.0.0.2".parse().unwrap());
        assert_eq!(
            next_host(s, &taken),
            None,
            "10.0.0.3 is the broadcast address"
        );
    }

    #[test]
    fn overlap_is_symmetric() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.2.0/24")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.2.0/24"), &net("10.1.3.0/24")));
    }
}
