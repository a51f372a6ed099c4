//! Bounded fuzzing of the tracer's parser (`trace::Ruleset::parse` / `apply`) and of tracing
//! what it accepted: random text, and rendered scripts (`fuzz/corpus/nft-trace/`) with lines
//! dropped, duplicated or swapped and tokens replaced. See `fuzz/driver.rs` for the driver.
//!
//! Properties: nothing panics; a parse error names a line of the script; a script that fails
//! to apply leaves the ruleset as it was (one transaction); parsing is deterministic; tracing
//! packets through whatever parsed never panics.

#[path = "../../fuzz/driver.rs"]
mod driver;

use std::net::Ipv4Addr;

use arbitrary::Unstructured;
use routemesh_nft::trace::{Packet, Ruleset, TraceError};
use routemesh_types::Proto;

fn corpus() -> Vec<String> {
    let dir = driver::corpus_root(env!("CARGO_MANIFEST_DIR")).join("nft-trace");
    driver::corpus_files(&dir)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

fn packets() -> Vec<Packet> {
    let mut out = Vec::new();
    for (dst, dport, proto) in [
        ([10, 0, 0, 2], 80, Proto::Tcp),
        ([10, 0, 2, 10], 8080, Proto::Tcp),
        ([192, 0, 2, 1], 8080, Proto::Tcp),
        ([10, 255, 0, 2], 53, Proto::Udp),
    ] {
        for (dst_local, locally_generated) in [(true, false), (false, false), (false, true)] {
            out.push(Packet {
                src: Ipv4Addr::new(10, 9, 0, 1),
                dst: Ipv4Addr::from(dst),
                proto,
                dport,
                dst_local,
                locally_generated,
            });
        }
    }
    out
}

fn check(base: &Ruleset, packets: &[Packet], bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let parsed = Ruleset::parse(&text);
    assert_eq!(
        parsed,
        Ruleset::parse(&text),
        "parsing is not deterministic"
    );
    match parsed {
        Ok(ruleset) => {
            for packet in packets {
                // Ok or a typed error; a panic fails the case.
                let _ = ruleset.trace(packet);
            }
        }
        Err(TraceError::Parse { line, message }) => {
            assert!(!message.is_empty(), "a parse error that says nothing");
            assert!(
                line >= 1 && line <= text.lines().count().max(1),
                "line {line} of a {}-line script: {message}",
                text.lines().count()
            );
        }
        Err(other) => panic!("parsing failed with a non-parse error: {other}"),
    }
    let mut applied = base.clone();
    if applied.apply(&text).is_err() {
        assert_eq!(&applied, base, "a failed script changed the ruleset");
    }
}

const TOKENS: &[&str] = &[
    "table",
    "ip",
    "chain",
    "set",
    "map",
    "type",
    "hook",
    "priority",
    "policy",
    "accept",
    "drop",
    "elements",
    "=",
    "{",
    "}",
    ";",
    ",",
    ".",
    ":",
    "@ports",
    "add",
    "delete",
    "element",
    "flush",
    "dnat",
    "to",
    "snat",
    "masquerade",
    "numgen",
    "random",
    "mod",
    "vmap",
    "jump",
    "goto",
    "return",
    "meta",
    "l4proto",
    "th",
    "dport",
    "ip daddr",
    "ct",
    "status",
    "mark",
    "set",
    "fib",
    "daddr",
    "local",
    "nat",
    "filter",
    "prerouting",
    "postrouting",
    "output",
    "input",
    "-100",
    "100",
    "0",
    "1",
    "4294967295",
    "99999999999999",
    "10.0.0.2",
    "10.0.0.0/24",
    "10.0.0.300",
    "tcp",
    "udp",
    "inet_proto",
    "inet_service",
    "ipv4_addr",
    "mark",
    "\"lo\"",
    "!=",
    "interval",
    "flags",
    "reject",
    "with",
    "tcp reset",
    "\n",
    "",
];

/// A corpus script with one or two line or token edits.
fn script(seeds: &[String], u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    if seeds.is_empty() {
        return Err(arbitrary::Error::NotEnoughData);
    }
    let mut lines: Vec<String> = u.choose(seeds)?.lines().map(str::to_string).collect();
    for _ in 0..u.int_in_range(1..=2)? {
        if lines.is_empty() {
            break;
        }
        let i = u.choose_index(lines.len())?;
        match u.int_in_range(0..=4)? {
            0 => {
                lines.remove(i);
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(u.choose_index(lines.len())?, line);
            }
            2 => {
                let j = u.choose_index(lines.len())?;
                lines.swap(i, j);
            }
            _ => {
                let mut words: Vec<String> = lines[i].split(' ').map(str::to_string).collect();
                let w = u.choose_index(words.len())?;
                words[w] = u.choose(TOKENS)?.to_string();
                lines[i] = words.join(" ");
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text.into_bytes())
}

#[test]
fn fuzz_nft_trace_parser() {
    let seeds = corpus();
    assert!(seeds.len() >= 2, "the nft-trace corpus is missing");
    let base = Ruleset::parse(&seeds[0]).expect("the first seed parses");
    let packets = packets();
    driver::run(&driver::Target {
        name: "nft-trace",
        corpus_root: driver::corpus_root(env!("CARGO_MANIFEST_DIR")),
        generate: &|u| script(&seeds, u),
        check: &|bytes| check(&base, &packets, bytes),
    });
}

/// The seeds are what the renderer writes: each parses, and the edited scripts both parse
/// and fail often enough to reach past the first line.
#[test]
fn seeds_parse_and_edits_reach_both_outcomes() {
    let seeds = corpus();
    for seed in &seeds {
        Ruleset::parse(seed).unwrap_or_else(|e| panic!("seed does not parse: {e}\n{seed}"));
    }
    let mut rng = driver::Rng::new(5);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..300 {
        let raw = rng.bytes(64);
        let Ok(text) = script(&seeds, &mut Unstructured::new(&raw)) else {
            continue;
        };
        match Ruleset::parse(&String::from_utf8_lossy(&text)) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    assert!(
        ok > 10 && failed > 10,
        "{ok} edited scripts parsed, {failed} failed"
    );
}

/// Found by this fuzzing: a script that ends inside a chain block made the parser add empty
/// rules until memory ran out. It is an error now. The inputs it was found with are kept in
/// `fuzz/corpus/nft-trace/regressions/`; each is parsed on a thread given 5 s, so a regression
/// fails the test instead of hanging it.
#[test]
fn a_chain_left_open_is_an_error() {
    let dir = driver::corpus_root(env!("CARGO_MANIFEST_DIR"))
        .join("nft-trace")
        .join("regressions");
    let mut texts: Vec<String> = driver::corpus_files(&dir)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    assert!(texts.len() >= 2, "regression inputs in {}", dir.display());
    texts.extend([
        "table ip t {\n\tchain c {\n".to_string(),
        "table ip t {\n\tchain c {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            .to_string(),
        "table ip t {\n\tchain c {\n\t\taccept\n".to_string(),
    ]);
    for text in texts {
        let (done, wait) = std::sync::mpsc::channel();
        let input = text.clone();
        std::thread::spawn(move || {
            let _ = done.send(Ruleset::parse(&input).err().map(|e| e.to_string()));
        });
        let err = wait
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("the parser did not return on {text:?}"));
        assert!(
            err.as_ref().is_some_and(|e| e.contains("not closed")),
            "{text:?}: {err:?}"
        );
    }
}
