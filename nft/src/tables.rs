//! Every nftables table routemesh owns, one per owner, all of family `ip`. routemesh reads and
//! writes only these; a table of another name is never looked at.

/// The address family of every table: routemesh programs IPv4.
pub const FAMILY: &str = "ip";

/// The node namespace's table: published-port DNAT to the ingress sandbox, host-mode ports,
/// egress masquerade (`netdev::firewall`).
pub const NODE: &str = "routemesh";
/// A load-balancing namespace's table with the nftables dataplane (`lb::nftables`).
pub const LB: &str = "routemesh_lb";
/// A load-balancing namespace's marking table with the IPVS dataplane (`lb::ipvs`).
pub const IPVS_MARKS: &str = "routemesh_ipvs";
/// A sandbox's redirect of 127.0.0.11:53 to the embedded DNS (`netdev::dns_redirect`).
pub const DNS_REDIRECT: &str = "routemesh_dns";

/// Every table above.
pub const ALL: [&str; 4] = [NODE, LB, IPVS_MARKS, DNS_REDIRECT];
