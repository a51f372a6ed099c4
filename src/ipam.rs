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
/// in `also`. Walks `taken` in order with the hosts: O(addresses taken below the answer).
pub fn first_free(
    subnet: Ipv4Net,
    taken: &imbl::OrdSet<Ipv4Addr>,
    also: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    let first = subnet.hosts().next()?;
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
