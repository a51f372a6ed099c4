//! The nftables side of the IPVS backend: one table of its own per namespace that marks the
//! packets of each frontend with its firewall mark (so IPVS's fwmark services pick them up),
//! rejects new connections to frontends without an active backend, and source-NATs what IPVS
//! forwarded. Rendered as a whole and replaced atomically (`add table; delete table; table {}`
//! in one `nft -f`) when its text changes.

use routemesh_nft::{
    AddrType, BaseChain, Chain, ChainType, Collection, CtState, Declare, Element, ElementLayout,
    Expr, Hook, KeyDecl, Match, Priority, Reject, Rule, Stmt, Style, Table, Value,
};

use crate::model::{Frontend, Proto, Snat};

use super::marks::{MARK_FIRST, MARK_LAST};

/// Default name of the table (family `ip`) the IPVS backend owns in its namespace.
pub const DEFAULT_TABLE: &str = routemesh_nft::tables::IPVS_MARKS;
/// `ip daddr : meta mark`, address-only VIPs.
pub const MAP_VIP_ADDR_MARKS: &str = "vip_addr_marks";
/// `ip daddr . meta l4proto . th dport : meta mark`, VIPs with a port.
pub const MAP_VIP_PORT_MARKS: &str = "vip_port_marks";
/// `meta l4proto . th dport : meta mark`, published ports (any local address).
pub const MAP_PUBLISHED_MARKS: &str = "published_marks";
/// Marks of frontends without an active backend: their new connections are refused.
pub const SET_NO_BACKEND_MARKS: &str = "no_backend_marks";
/// filter hook prerouting, priority mangle (-150): marks arriving packets.
pub const CHAIN_MARK_PREROUTING: &str = "mark_prerouting";
/// filter hook output, priority mangle (-150): marks packets generated in the namespace.
pub const CHAIN_MARK_OUTPUT: &str = "mark_output";
/// Regular chain both mark hooks jump to: the three map lookups.
pub const CHAIN_MARK: &str = "set_mark";
/// Regular chain: refuses a new connection whose mark is in `no_backend_marks`.
pub const CHAIN_CHECK_BACKEND: &str = "check_backend";
/// Regular chain: TCP reset, else ICMP port unreachable.
pub const CHAIN_REJECT: &str = "reject_no_backend";
/// nat hook postrouting (100): SNAT of marked connections after IPVS forwarded them.
pub const CHAIN_SNAT: &str = "snat_postrouting";
/// The mangle priority, before IPVS (LOCAL_IN / LOCAL_OUT) and before nat.
pub const PRIORITY_MARK: i32 = -150;
pub const PRIORITY_SRCNAT: i32 = 100;

/// One frontend as the marking table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedFrontend {
    pub frontend: Frontend,
    pub mark: u32,
    /// False when no backend takes new connections: they are refused at once.
    pub has_active_backend: bool,
}

/// The marking table. Pure; `frontends` in any order (elements are sorted by frontend).
pub fn marking_table(table: &str, snat: Snat, frontends: &[MarkedFrontend]) -> Table {
    let mut sorted = frontends.to_vec();
    sorted.sort_by_key(|f| f.frontend);
    let mut vip_addr = Vec::new();
    let mut vip_port = Vec::new();
    let mut published = Vec::new();
    let mut no_backend = Vec::new();
    for f in &sorted {
        let mark = Value::Mark(f.mark);
        match f.frontend {
            Frontend::VipAnyPort { addr } => vip_addr.push(Element::mapping(
                vec![Value::Addr(addr)],
                vec![mark.clone()],
            )),
            Frontend::Vip { addr, port, proto } => vip_port.push(Element::mapping(
                vec![Value::Addr(addr), Value::Proto(proto), Value::Port(port)],
                vec![mark.clone()],
            )),
            Frontend::Published { port, proto } => published.push(Element::mapping(
                vec![Value::Proto(proto), Value::Port(port)],
                vec![mark.clone()],
            )),
        }
        if !f.has_active_backend {
            no_backend.push(Element::key(vec![mark]));
        }
    }
    let to_mark = || KeyDecl::Typeof(vec![Expr::Mark]);
    let vip_key = vec![Expr::IpDaddr, Expr::L4proto, Expr::Dport];
    let published_key = vec![Expr::L4proto, Expr::Dport];
    let collections = vec![
        Collection::map(
            MAP_VIP_ADDR_MARKS,
            KeyDecl::Typeof(vec![Expr::IpDaddr]),
            to_mark(),
        )
        .with_elements(vip_addr),
        Collection::map(
            MAP_VIP_PORT_MARKS,
            KeyDecl::Typeof(vip_key.clone()),
            to_mark(),
        )
        .with_elements(vip_port),
        Collection::map(
            MAP_PUBLISHED_MARKS,
            KeyDecl::Typeof(published_key.clone()),
            to_mark(),
        )
        .with_elements(published),
        Collection::set(SET_NO_BACKEND_MARKS, to_mark()).with_elements(no_backend),
    ];
    let set_mark = |guard: Option<Match>, key: Vec<Expr>, map: &str| {
        Rule::new(
            guard.into_iter().collect(),
            vec![
                Stmt::SetMarkMap {
                    key,
                    map: map.to_string(),
                },
                Stmt::Goto(CHAIN_CHECK_BACKEND.to_string()),
            ],
        )
    };
    let local = Match::Eq(Expr::FibDaddrType, Value::AddrType(AddrType::Local));
    let jump_mark = vec![Rule::always(Stmt::Jump(CHAIN_MARK.to_string()))];
    let mark_base = |hook| BaseChain::new(ChainType::Filter, hook, Priority::Num(PRIORITY_MARK));
    let snat_stmt = match snat {
        Snat::Masquerade => Stmt::Masquerade,
        Snat::To(addr) => Stmt::SnatTo(addr),
    };
    let chains = vec![
        Chain::base(
            CHAIN_MARK_PREROUTING,
            mark_base(Hook::Prerouting),
            jump_mark.clone(),
        ),
        Chain::base(CHAIN_MARK_OUTPUT, mark_base(Hook::Output), jump_mark),
        Chain::regular(
            CHAIN_MARK,
            vec![
                set_mark(None, vip_key, MAP_VIP_PORT_MARKS),
                set_mark(None, vec![Expr::IpDaddr], MAP_VIP_ADDR_MARKS),
                set_mark(Some(local), published_key, MAP_PUBLISHED_MARKS),
            ],
        ),
        Chain::regular(
            CHAIN_CHECK_BACKEND,
            vec![Rule::new(
                vec![
                    Match::Eq(Expr::CtState, Value::CtState(CtState::New)),
                    Match::InSet(vec![Expr::Mark], SET_NO_BACKEND_MARKS.to_string()),
                ],
                vec![Stmt::Goto(CHAIN_REJECT.to_string())],
            )],
        ),
        Chain::regular(
            CHAIN_REJECT,
            vec![
                Rule::new(
                    vec![Match::Eq(Expr::L4proto, Value::Proto(Proto::Tcp))],
                    vec![Stmt::Reject(Reject::TcpReset)],
                ),
                Rule::always(Stmt::Reject(Reject::PortUnreachable)),
            ],
        ),
        Chain::base(
            CHAIN_SNAT,
            BaseChain::new(
                ChainType::Nat,
                Hook::Postrouting,
                Priority::Num(PRIORITY_SRCNAT),
            ),
            vec![Rule::new(
                vec![Match::Range(
                    Expr::Mark,
                    Value::Mark(MARK_FIRST),
                    Value::Mark(MARK_LAST),
                )],
                vec![snat_stmt],
            )],
        ),
    ];
    let mut t = Table::new(table).with_style(Style {
        declare: Declare::AddTable,
        elements: ElementLayout::OneLine,
    });
    t.collections = collections;
    t.chains = chains;
    t
}
