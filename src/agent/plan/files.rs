//! The contents of the per-task files a sandbox needs (their paths: `crate::layout`).

use std::net::Ipv4Addr;

/// Docker's embedded-DNS resolv.conf: the sandbox asks 127.0.0.11 and nothing else, and a
/// bare name is tried as is first (`ndots:0`), so service names resolve without search domains.
pub fn resolv_conf() -> String {
    "nameserver 127.0.0.11\noptions ndots:0\n".to_string()
}

pub fn hosts(task: &str, first_addr: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(ip) = first_addr {
        s.push_str(&format!("{ip}\t{task}\n"));
    }
    s
}
