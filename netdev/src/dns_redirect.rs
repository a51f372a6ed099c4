//! A sandbox's redirect of the embedded DNS address: `127.0.0.11:53` (UDP and TCP) goes to the
//! ports the resolver's sockets got inside that sandbox (Docker's trick), so a task may bind
//! port 53 itself, even on 0.0.0.0, without breaking its resolver.

use std::net::Ipv4Addr;

use routemesh_nft::{
    BaseChain, Chain, ChainType, Declare, Expr, Hook, Match, Priority, Rule, Stmt, Style, Table,
    Value,
};
use routemesh_types::Proto;

/// The table in each sandbox.
pub const TABLE: &str = routemesh_nft::tables::DNS_REDIRECT;
/// The address tasks send their queries to.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// nat hook output: the redirect of queries sent from inside the sandbox.
pub const CHAIN_OUTPUT: &str = "output";

/// The redirect table for a sandbox whose resolver sockets got these ports.
pub fn table(udp_port: u16, tcp_port: u16) -> Table {
    let redirect = |proto, port| {
        Rule::new(
            vec![
                Match::Eq(Expr::IpDaddr, Value::Addr(DNS_ADDR)),
                Match::Eq(Expr::L4proto, Value::Proto(proto)),
                Match::Eq(Expr::Dport, Value::Port(53)),
            ],
            vec![Stmt::DnatTo {
                addr: DNS_ADDR,
                port: Some(port),
            }],
        )
    };
    let mut t = Table::new(TABLE).with_style(Style {
        declare: Declare::EmptyBlock,
        ..Style::default()
    });
    t.chains.push(Chain::base(
        CHAIN_OUTPUT,
        // -100: dstnat's priority, which nft 1.0.6 names on prerouting only.
        BaseChain::new(ChainType::Nat, Hook::Output, Priority::Num(-100)),
        vec![
            redirect(Proto::Udp, udp_port),
            redirect(Proto::Tcp, tcp_port),
        ],
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_to_port_53_go_to_the_resolver_ports() {
        let script = table(40001, 40002).full_sync_script();
        assert_eq!(
            script,
            "table ip routemesh_dns {}\n\
             delete table ip routemesh_dns\n\
             table ip routemesh_dns {\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr 127.0.0.11 meta l4proto udp th dport 53 dnat ip to 127.0.0.11:40001\n\
             \t\tip daddr 127.0.0.11 meta l4proto tcp th dport 53 dnat ip to 127.0.0.11:40002\n\
             \t}\n\
             }\n"
        );
    }
}
