//! The few parts of resolv.conf(5) the forwarder needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Our own listener address: never forward to it (that would loop).
const EMBEDDED_DNS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines in order, port 53, without 127.0.0.11.
    pub nameservers: Vec<SocketAddr>,
    /// `options timeout:N`.
    pub timeout: Option<Duration>,
}

/// Parses resolv.conf text; unknown lines and unparsable addresses are ignored, as libc does.
pub fn parse(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // Zone ids (`fe80::1%eth0`) are not supported by SocketAddr; skip those.
                if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
                    if ip != EMBEDDED_DNS {
                        conf.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
            }
            Some("options") => {
                for option in words {
                    if let Some(secs) = option.strip_prefix("timeout:") {
                        if let Ok(secs) = secs.parse::<u64>() {
                            conf.timeout = Some(Duration::from_secs(secs.clamp(1, 30)));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_without_ourselves() {
        let conf = parse(
            "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver 127.0.0.11\n\
             nameserver  2001:db8::1 # v6\nnameserver bogus\noptions ndots:2 timeout:3\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse::<SocketAddr>().unwrap(),
            ]
        );
        assert_eq!(conf.timeout, Some(Duration::from_secs(3)));
    }
}
