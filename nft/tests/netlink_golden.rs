//! The netlink element executor against nft and the kernel (root; skipped loudly otherwise).
//!
//! Golden: for every element shape routemesh uses, one transaction is rendered for
//! `nft --debug=netlink -f -` (which prints every element message it sends, key and data
//! words in hex) and encoded by [`routemesh_nft::netlink::encode`]; the decoded bytes of our
//! batch must print exactly as nft's. Kernel: the batch applies, lists, deletes; a refusal
//! names table, set and operation and leaves everything as it was.

use std::net::Ipv4Addr;

use routemesh_nft::netlink::encode::{self, SetElements, Verdict};
use routemesh_nft::netlink::{ElementOp, Refusal, Route};
use routemesh_nft::*;
use routemesh_testsupport::{root_or_skip, unique, Netns};
use routemesh_types::Proto;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const TABLE: &str = "rm_nl";

/// A table with every set and map shape routemesh's tables use (lb's nftables backend, the
/// IPVS marking table, the node firewall), declared by our renderer.
fn shapes_table() -> Table {
    use Expr::*;
    let mut t = Table::new(TABLE);
    let ty = |types: Vec<DataType>| KeyDecl::Type(types);
    let of = |exprs: Vec<Expr>| KeyDecl::Typeof(exprs);
    t.collections = vec![
        Collection::set("addr", ty(vec![DataType::Ipv4Addr])),
        Collection::set(
            "proto_port",
            ty(vec![DataType::InetProto, DataType::InetService]),
        ),
        Collection::set(
            "addr_proto_port",
            ty(vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ]),
        ),
        Collection::map(
            "vip_be",
            of(vec![IpDaddr, L4proto, Dport, Numgen(3)]),
            of(vec![IpDaddr, Dport]),
        ),
        Collection::map("vipa_be", of(vec![IpDaddr, Numgen(3)]), of(vec![IpDaddr])),
        Collection::map(
            "pub_be",
            of(vec![L4proto, Dport, Numgen(64)]),
            of(vec![IpDaddr, Dport]),
        ),
        Collection::map("addr_mark", of(vec![IpDaddr]), of(vec![Mark])),
        Collection::map(
            "vip_mark",
            of(vec![IpDaddr, L4proto, Dport]),
            of(vec![Mark]),
        ),
        Collection::set("marks", of(vec![Mark])),
    ];
    t.chains = vec![Chain::regular("target", vec![])];
    t
}

fn elements_txn() -> Transaction {
    let a = |s: &str| Value::Addr(ip(s));
    let tcp = Value::Proto(Proto::Tcp);
    let udp = Value::Proto(Proto::Udp);
    let add = |set: &str, elements: Vec<Element>| Op::AddElements {
        table: TABLE.into(),
        collection: set.into(),
        elements,
    };
    let del = |set: &str, keys: Vec<Vec<Value>>| Op::DeleteElements {
        table: TABLE.into(),
        collection: set.into(),
        keys,
    };
    Transaction {
        ops: vec![
            add(
                "addr",
                vec![
                    Element::key(vec![a("10.0.0.1")]),
                    Element::key(vec![a("192.168.255.254")]),
                ],
            ),
            add(
                "proto_port",
                vec![Element::key(vec![tcp.clone(), Value::Port(8080)])],
            ),
            add(
                "addr_proto_port",
                vec![Element::key(vec![
                    a("10.0.0.2"),
                    udp.clone(),
                    Value::Port(53),
                ])],
            ),
            add(
                "vip_be",
                vec![
                    Element::mapping(
                        vec![a("10.0.0.2"), tcp.clone(), Value::Port(80), Value::Int(2)],
                        vec![a("10.1.0.4"), Value::Port(8080)],
                    ),
                    Element::mapping(
                        vec![a("10.0.0.2"), tcp.clone(), Value::Port(80), Value::Int(0)],
                        vec![a("10.1.0.5"), Value::Port(65535)],
                    ),
                ],
            ),
            add(
                "vipa_be",
                vec![Element::mapping(
                    vec![a("10.0.0.9"), Value::Int(1)],
                    vec![a("10.1.0.4")],
                )],
            ),
            add(
                "pub_be",
                vec![Element::mapping(
                    vec![udp.clone(), Value::Port(30000), Value::Int(63)],
                    vec![a("10.255.0.7"), Value::Port(53)],
                )],
            ),
            add(
                "addr_mark",
                vec![Element::mapping(
                    vec![a("10.0.0.9")],
                    vec![Value::Mark(0x100)],
                )],
            ),
            add(
                "vip_mark",
                vec![Element::mapping(
                    vec![a("10.0.0.3"), tcp.clone(), Value::Port(443)],
                    vec![Value::Mark(0xdead_beef)],
                )],
            ),
            add("marks", vec![Element::key(vec![Value::Mark(0x101)])]),
            del(
                "vip_be",
                vec![vec![
                    a("10.0.0.2"),
                    tcp.clone(),
                    Value::Port(80),
                    Value::Int(2),
                ]],
            ),
            del("addr", vec![vec![a("192.168.255.254")]]),
        ],
    }
}

type Messages = Vec<(String, String, Vec<String>)>;

/// nft's `--debug=netlink` output: a `SET TABLE ID` line before each element message's
/// elements (tab-separated on the next line).
fn parse_debug(out: &str) -> Messages {
    let mut msgs: Messages = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix('\t') {
            if let Some(last) = msgs.last_mut() {
                last.2.extend(
                    rest.split('\t')
                        .filter(|e| e.starts_with("element"))
                        .map(str::to_string),
                );
            }
        } else {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() == 3 {
                msgs.push((words[0].to_string(), words[1].to_string(), Vec::new()));
            }
        }
    }
    msgs
}

fn nft_debug(ns: &Netns, script: &str) -> Messages {
    let out = ns.sh_ok(&format!("nft --debug=netlink -f - <<'EOF'\n{script}EOF"));
    parse_debug(&out)
}

fn ours(parts: &[SetElements<'_>]) -> Messages {
    encode::debug_netlink(&encode::batch(parts, 1).bytes)
}

fn scratch(label: &str) -> (Netns, NftNetlink) {
    let ns = Netns::new(&unique(label)).unwrap();
    NftCmd::in_netns(ns.path())
        .apply(&Transaction::replace(shapes_table()))
        .unwrap();
    let exec = NftNetlink::in_netns(ns.path());
    (ns, exec)
}

#[test]
fn every_shape_encodes_as_nft_does() {
    if !root_or_skip("every_shape_encodes_as_nft_does") {
        return;
    }
    let (ns, _) = scratch("nlg");
    let txn = elements_txn();
    let theirs = nft_debug(&ns, &txn.render());
    let parts = encode::transaction_parts(&txn).unwrap().unwrap();
    let mine = ours(&parts);
    assert_eq!(theirs.len(), txn.ops.len(), "nft printed {theirs:#?}");
    assert!(theirs.iter().all(|(_, _, e)| !e.is_empty()), "{theirs:#?}");
    // One spot check of the format (10.0.0.2 . tcp . 80 . 2 : 10.1.0.4 . 8080 on x86).
    if cfg!(target_endian = "little") {
        assert!(theirs[3].2.contains(
            &"element 0200000a 00000006 00005000 00000002  : 0400010a 0000901f 0 [end]".to_string()
        ));
    }
    assert_eq!(mine, theirs);
}

#[test]
fn verdict_data_encodes_as_nft_does() {
    if !root_or_skip("verdict_data_encodes_as_nft_does") {
        return;
    }
    let ns = Netns::new(&unique("nlv")).unwrap();
    ns.sh_ok(
        "nft -f - <<'EOF'\ntable ip rm_nl {\n map vm { type ipv4_addr : verdict; }\n chain c {}\n}\nEOF",
    );
    let theirs = nft_debug(
        &ns,
        "add element ip rm_nl vm { 10.0.0.1 : goto c, 10.0.0.3 : jump c, 10.0.0.4 : drop, 10.0.0.5 : accept }\n",
    );
    let key = |s: &str| vec![Value::Addr(ip(s))];
    let elements = vec![
        encode::verdict_element(&key("10.0.0.1"), Verdict::Goto("c".into())).unwrap(),
        encode::verdict_element(&key("10.0.0.3"), Verdict::Jump("c".into())).unwrap(),
        encode::verdict_element(&key("10.0.0.4"), Verdict::Drop).unwrap(),
        encode::verdict_element(&key("10.0.0.5"), Verdict::Accept).unwrap(),
    ];
    let parts = [SetElements {
        op: ElementOp::Add,
        table: TABLE,
        set: "vm",
        elements,
    }];
    assert_eq!(ours(&parts), theirs);
    // And the kernel takes them (after deleting what nft added).
    ns.sh_ok("nft flush map ip rm_nl vm");
    NftNetlink::in_netns(ns.path()).send_parts(&parts).unwrap();
    let listed = ns.exec("nft", &["list", "map", "ip", TABLE, "vm"]).unwrap();
    for want in [
        "10.0.0.1 : goto c",
        "10.0.0.3 : jump c",
        "10.0.0.4 : drop",
        "10.0.0.5 : accept",
    ] {
        assert!(listed.contains(want), "{want:?} not in\n{listed}");
    }
}

fn list(ns: &Netns, kind: &str, set: &str) -> String {
    ns.exec("nft", &["list", kind, "ip", TABLE, set]).unwrap()
}

#[test]
fn elements_apply_list_and_delete_in_the_kernel() {
    if !root_or_skip("elements_apply_list_and_delete_in_the_kernel") {
        return;
    }
    let (ns, exec) = scratch("nlk");
    let txn = elements_txn();
    assert_eq!(exec.apply_routed(&txn).unwrap(), Route::Netlink);
    let be = list(&ns, "map", "vip_be");
    assert!(
        be.contains("10.0.0.2 . tcp . 80 . 0 : 10.1.0.5 . 65535"),
        "{be}"
    );
    assert!(!be.contains(". 2 :"), "deleted in the same batch:\n{be}");
    let checks = [
        ("set", "addr", "elements = { 10.0.0.1 }"),
        ("set", "proto_port", "tcp . 8080"),
        ("set", "addr_proto_port", "10.0.0.2 . udp . 53"),
        ("map", "vipa_be", "10.0.0.9 . 1 : 10.1.0.4"),
        ("map", "pub_be", "udp . 30000 . 63 : 10.255.0.7 . 53"),
        ("map", "addr_mark", "10.0.0.9 : 0x00000100"),
        ("map", "vip_mark", "10.0.0.3 . tcp . 443 : 0xdeadbeef"),
        ("set", "marks", "0x00000101"),
    ];
    for (kind, set, want) in checks {
        let got = list(&ns, kind, set);
        assert!(got.contains(want), "{want:?} not in\n{got}");
    }
    // Delete everything that is left, over netlink too.
    let a = |s: &str| Value::Addr(ip(s));
    let tcp = Value::Proto(Proto::Tcp);
    let del = Transaction {
        ops: vec![
            Op::DeleteElements {
                table: TABLE.into(),
                collection: "vip_be".into(),
                keys: vec![vec![
                    a("10.0.0.2"),
                    tcp.clone(),
                    Value::Port(80),
                    Value::Int(0),
                ]],
            },
            Op::DeleteElements {
                table: TABLE.into(),
                collection: "addr".into(),
                keys: vec![vec![a("10.0.0.1")]],
            },
        ],
    };
    exec.apply_elements(&del).unwrap();
    assert!(!list(&ns, "map", "vip_be").contains("10.0.0.2"));
    assert!(!list(&ns, "set", "addr").contains("10.0.0.1"));
}

#[test]
fn a_refused_batch_names_its_set_and_changes_nothing() {
    if !root_or_skip("a_refused_batch_names_its_set_and_changes_nothing") {
        return;
    }
    let (ns, exec) = scratch("nle");
    let before = ns.exec("nft", &["list", "table", "ip", TABLE]).unwrap();
    let good = Op::AddElements {
        table: TABLE.into(),
        collection: "addr".into(),
        elements: vec![Element::key(vec![Value::Addr(ip("10.9.9.9"))])],
    };
    // A missing set.
    let txn = Transaction {
        ops: vec![
            good.clone(),
            Op::AddElements {
                table: TABLE.into(),
                collection: "no_such_set".into(),
                elements: vec![Element::key(vec![Value::Addr(ip("10.0.0.1"))])],
            },
        ],
    };
    let err = exec.apply(&txn).unwrap_err();
    assert!(err.is_rejection(), "{err}");
    match err.netlink() {
        Some(NetlinkError::Refused(r)) => {
            assert_eq!((r.table.as_str(), r.set.as_str()), (TABLE, "no_such_set"));
            assert_eq!((r.op, r.reason), (ElementOp::Add, Refusal::NotFound));
        }
        other => panic!("not a typed refusal: {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("adding elements to set ip rm_nl no_such_set"),
        "{text}"
    );
    assert_eq!(
        ns.exec("nft", &["list", "table", "ip", TABLE]).unwrap(),
        before
    );

    // A missing element among present ones: the kernel points at it.
    let txn = Transaction {
        ops: vec![
            good,
            Op::DeleteElements {
                table: TABLE.into(),
                collection: "addr_mark".into(),
                keys: vec![vec![Value::Addr(ip("10.7.7.7"))]],
            },
        ],
    };
    let err = exec.apply(&txn).unwrap_err();
    match err.netlink() {
        Some(NetlinkError::Refused(r)) => {
            assert_eq!(r.set, "addr_mark");
            assert_eq!((r.op, r.reason), (ElementOp::Delete, Refusal::NotFound));
            assert_eq!(r.element.as_deref(), Some("10.7.7.7"), "{err}");
        }
        other => panic!("not a typed refusal: {other:?}"),
    }
    assert_eq!(
        ns.exec("nft", &["list", "table", "ip", TABLE]).unwrap(),
        before
    );

    // A key of the wrong shape for its set.
    let txn = Transaction {
        ops: vec![Op::AddElements {
            table: TABLE.into(),
            collection: "addr".into(),
            elements: vec![Element::key(vec![Value::Proto(Proto::Tcp), Value::Port(1)])],
        }],
    };
    match exec.apply(&txn).unwrap_err().netlink() {
        Some(NetlinkError::Refused(r)) => {
            assert_eq!(r.reason, Refusal::Invalid)
        }
        other => panic!("not a typed refusal: {other:?}"),
    }
    assert_eq!(
        ns.exec("nft", &["list", "table", "ip", TABLE]).unwrap(),
        before
    );
}

#[test]
fn structural_and_unencodable_changes_go_through_nft() {
    if !root_or_skip("structural_and_unencodable_changes_go_through_nft") {
        return;
    }
    let (ns, exec) = scratch("nls");
    let txn = Transaction {
        ops: vec![Op::AddChain {
            table: TABLE.into(),
            chain: "extra".into(),
        }],
    };
    assert_eq!(exec.apply_routed(&txn).unwrap(), Route::Text);
    ns.exec("nft", &["list", "chain", "ip", TABLE, "extra"])
        .unwrap();
    // An interval element has no netlink encoding here: nft -f sends it (and refuses it,
    // the set having no interval flag), with nft's own error.
    let txn = Transaction {
        ops: vec![Op::AddElements {
            table: TABLE.into(),
            collection: "addr".into(),
            elements: vec![Element::key(vec![Value::Net(
                "10.0.0.0/24".parse().unwrap(),
            )])],
        }],
    };
    assert!(matches!(
        routemesh_nft::netlink::encode::transaction_parts(&txn),
        Err(NetlinkError::Unsupported { .. })
    ));
    let err = exec.apply(&txn).unwrap_err();
    assert!(matches!(err, NftError::Rejected { .. }), "{err:?}");
}

#[test]
fn a_namespace_made_again_at_the_same_path_gets_a_new_socket() {
    if !root_or_skip("a_namespace_made_again_at_the_same_path_gets_a_new_socket") {
        return;
    }
    let name = unique("nlr");
    let ns = Netns::new(&name).unwrap();
    let exec = NftNetlink::in_netns(ns.path());
    let table = || Transaction::replace(shapes_table());
    exec.apply(&table()).unwrap();
    let add = |addr: &str| Transaction {
        ops: vec![Op::AddElements {
            table: TABLE.into(),
            collection: "addr".into(),
            elements: vec![Element::key(vec![Value::Addr(ip(addr))])],
        }],
    };
    exec.apply(&add("10.0.0.1")).unwrap();
    drop(ns);
    let ns = Netns::new(&name).unwrap();
    exec.apply(&table()).unwrap();
    exec.apply(&add("10.0.0.2")).unwrap();
    let listed = list(&ns, "set", "addr");
    assert!(listed.contains("10.0.0.2"), "{listed}");
    assert!(!listed.contains("10.0.0.1"), "{listed}");
}

/// The batch nft sends, from `strace -e write=all` hex dumps of its `sendmsg` calls: the
/// bytes of the call that carries element messages.
fn nft_sent_bytes(ns: &Netns, script: &str) -> Option<Vec<u8>> {
    let dump = format!("/tmp/{}.strace", unique("nlst"));
    let out = ns.sh(&format!(
        "strace -e trace=sendmsg -e write=all -o {dump} nft -f - <<'EOF'\n{script}EOF"
    ));
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&dump).ok()?;
    let _ = std::fs::remove_file(&dump);
    let mut calls: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.contains("sendmsg(") {
            calls.push(Vec::new());
        } else if let Some(rest) = line.trim_start().strip_prefix("| ") {
            // ` | 00010  00 00 00 0a 5c 00 ...  ascii |`: offset, 16 hex bytes, ascii.
            let hex = rest.get(7..55).unwrap_or("");
            let bytes = hex
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap());
            calls.last_mut()?.extend(bytes);
        }
    }
    calls
        .into_iter()
        .find(|c| nl_messages(c).iter().any(|m| is_setelem(m)))
}

fn nl_messages(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push(buf[at..at + len].to_vec());
        at += len.next_multiple_of(4);
    }
    out
}

fn is_setelem(m: &[u8]) -> bool {
    let kind = u16::from_ne_bytes([m[4], m[5]]);
    kind == (10 << 8) | 12 || kind == (10 << 8) | 14
}

/// An element message with what legitimately differs taken out: the sequence number, our
/// `NLM_F_ACK` (we ask for an answer per message, nft for none), and nft's
/// `NFTA_SET_ELEM_LIST_SET_ID` (type 4: for a set made in the same batch; we never do that).
fn normalized(m: &[u8]) -> Vec<u8> {
    let mut body = m[16..20].to_vec();
    let mut at = 20;
    while at + 4 <= m.len() {
        let len = u16::from_ne_bytes([m[at], m[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([m[at + 2], m[at + 3]]) & 0x3fff;
        let end = (at + len.next_multiple_of(4)).min(m.len());
        if kind != 4 {
            body.extend_from_slice(&m[at..end]);
        }
        at = end;
    }
    let flags = u16::from_ne_bytes([m[6], m[7]]) & !0x4;
    let mut out = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(&m[4..6]);
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend(body);
    out
}

#[test]
fn element_messages_are_byte_for_byte_nfts() {
    if !root_or_skip("element_messages_are_byte_for_byte_nfts") {
        return;
    }
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED element_messages_are_byte_for_byte_nfts: no strace");
        return;
    }
    let (ns, _) = scratch("nlb");
    let txn = elements_txn();
    let sent = nft_sent_bytes(&ns, &txn.render()).expect("nft's batch in the strace dump");
    let theirs: Vec<Vec<u8>> = nl_messages(&sent)
        .iter()
        .filter(|m| is_setelem(m))
        .map(|m| normalized(m))
        .collect();
    let parts = encode::transaction_parts(&txn).unwrap().unwrap();
    let ours: Vec<Vec<u8>> = nl_messages(&encode::batch(&parts, 1).bytes)
        .iter()
        .filter(|m| is_setelem(m))
        .map(|m| normalized(m))
        .collect();
    assert_eq!(theirs.len(), txn.ops.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "element message {i} ({:?})", txn.ops[i]);
    }
}

#[test]
fn a_big_batch_goes_in_one_piece() {
    if !root_or_skip("a_big_batch_goes_in_one_piece") {
        return;
    }
    let (ns, exec) = scratch("nlbig");
    let n = 20_000u32;
    let elements: Vec<Element> = (0..n)
        .map(|i| {
            Element::mapping(
                vec![
                    Value::Addr(Ipv4Addr::from(0x0a64_0000 + i)),
                    Value::Proto(Proto::Tcp),
                    Value::Port(80),
                    Value::Int(i % 3),
                ],
                vec![Value::Addr(ip("10.1.0.1")), Value::Port(80)],
            )
        })
        .collect();
    let txn = Transaction {
        ops: vec![Op::AddElements {
            table: TABLE.into(),
            collection: "vip_be".into(),
            elements,
        }],
    };
    assert_eq!(exec.apply_routed(&txn).unwrap(), Route::Netlink);
    let listed = list(&ns, "map", "vip_be");
    assert_eq!(listed.matches(" : 10.1.0.1 . 80").count(), n as usize);
}

/// A flush and the elements added back, as a resync sends them.
fn flush_txn() -> Transaction {
    let a = |s: &str| Value::Addr(ip(s));
    Transaction {
        ops: vec![
            Op::FlushCollection {
                table: TABLE.into(),
                kind: CollectionKind::Set,
                name: "addr".into(),
            },
            Op::AddElements {
                table: TABLE.into(),
                collection: "addr".into(),
                elements: vec![Element::key(vec![a("10.0.0.7")])],
            },
            Op::FlushCollection {
                table: TABLE.into(),
                kind: CollectionKind::Map,
                name: "vipa_be".into(),
            },
        ],
    }
}

#[test]
fn a_flush_is_nfts_flush_and_empties_the_set_in_the_same_batch() {
    if !root_or_skip("a_flush_is_nfts_flush_and_empties_the_set_in_the_same_batch") {
        return;
    }
    let (ns, exec) = scratch("nlf");
    let txn = flush_txn();
    assert_eq!(
        txn.render(),
        "flush set ip rm_nl addr\nadd element ip rm_nl addr { 10.0.0.7 }\nflush map ip rm_nl vipa_be\n"
    );
    let parts = encode::transaction_parts(&txn).unwrap().unwrap();
    let theirs = nft_debug(&ns, &txn.render());
    assert_eq!(theirs.len(), 3, "nft printed {theirs:#?}");
    assert!(
        theirs[0].2.is_empty() && theirs[2].2.is_empty(),
        "{theirs:#?}"
    );
    assert_eq!(ours(&parts), theirs);
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok()
    {
        let sent = nft_sent_bytes(&ns, &txn.render()).expect("nft's batch in the strace dump");
        let theirs: Vec<Vec<u8>> = nl_messages(&sent)
            .iter()
            .filter(|m| is_setelem(m))
            .map(|m| normalized(m))
            .collect();
        let mine: Vec<Vec<u8>> = nl_messages(&encode::batch(&parts, 1).bytes)
            .iter()
            .filter(|m| is_setelem(m))
            .map(|m| normalized(m))
            .collect();
        assert_eq!(mine, theirs);
    } else {
        eprintln!("no strace: byte-for-byte flush check SKIPPED");
    }
    // In the kernel: what was there goes, what the batch adds stays.
    ns.sh_ok("nft add element ip rm_nl addr '{ 10.0.0.1, 10.0.0.2 }'");
    ns.sh_ok("nft add element ip rm_nl vipa_be '{ 10.0.0.9 . 1 : 10.1.0.4 }'");
    assert_eq!(exec.apply_routed(&txn).unwrap(), Route::Netlink);
    let addr = list(&ns, "set", "addr");
    assert!(addr.contains("elements = { 10.0.0.7 }"), "{addr}");
    assert!(!list(&ns, "map", "vipa_be").contains("elements"));
    // Flushing a set that is not there refuses the batch and names it.
    let err = exec
        .apply_elements(&Transaction {
            ops: vec![Op::FlushCollection {
                table: TABLE.into(),
                kind: CollectionKind::Set,
                name: "nope".into(),
            }],
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("flushing set ip rm_nl nope"),
        "{err}"
    );
    assert!(list(&ns, "set", "addr").contains("10.0.0.7"));

    // Contents set over what is there: a changed mapping, a stray, a missing one, one kept.
    ns.sh_ok("nft add element ip rm_nl vipa_be '{ 10.0.0.9 . 1 : 10.1.0.4, 10.0.0.9 . 2 : 10.1.0.5, 10.0.0.8 . 0 : 10.1.0.1 }'");
    let a = |s: &str| Value::Addr(ip(s));
    let txn = Transaction {
        ops: vec![
            Op::FlushCollection {
                table: TABLE.into(),
                kind: CollectionKind::Map,
                name: "vipa_be".into(),
            },
            Op::AddElements {
                table: TABLE.into(),
                collection: "vipa_be".into(),
                elements: vec![
                    Element::mapping(vec![a("10.0.0.9"), Value::Int(1)], vec![a("10.1.0.4")]),
                    Element::mapping(vec![a("10.0.0.9"), Value::Int(2)], vec![a("10.1.0.6")]),
                    Element::mapping(vec![a("10.0.0.7"), Value::Int(0)], vec![a("10.1.0.2")]),
                ],
            },
            Op::FlushCollection {
                table: TABLE.into(),
                kind: CollectionKind::Set,
                name: "addr".into(),
            },
        ],
    };
    assert_eq!(exec.apply_routed(&txn).unwrap(), Route::Netlink);
    let got = list(&ns, "map", "vipa_be");
    for want in [
        "10.0.0.9 . 1 : 10.1.0.4",
        "10.0.0.9 . 2 : 10.1.0.6",
        "10.0.0.7 . 0 : 10.1.0.2",
    ] {
        assert!(got.contains(want), "{want:?} not in\n{got}");
    }
    assert!(
        !got.contains("10.0.0.8") && !got.contains("10.1.0.5"),
        "{got}"
    );
    assert!(!list(&ns, "set", "addr").contains("elements"));
    // A set that is not there: the flush is sent as it is, and refused.
    let mut missing = txn.clone();
    missing.ops.push(Op::FlushCollection {
        table: TABLE.into(),
        kind: CollectionKind::Set,
        name: "nope".into(),
    });
    let err = exec.apply(&missing).unwrap_err();
    assert!(
        err.to_string().contains("flushing set ip rm_nl nope"),
        "{err}"
    );
}
