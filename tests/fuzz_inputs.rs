//! Bounded fuzzing of the root crate's input parsers: the `--publish` / `--publish-rm` specs
//! (`validate::publish`, `validate::published_port`) and the store's record decoder
//! (`store::state::decode`) for every model type. See `fuzz/driver.rs` for the driver and its
//! settings (`ROUTEMESH_FUZZ_SECS`, `ROUTEMESH_FUZZ_SEED`).
//!
//! Properties: nothing panics; an accepted spec has ports 1-65535 and renders (short and long
//! form) to a spec that parses to the same value; a record that decodes re-encodes to a record
//! that decodes equal; every valid record roundtrips (serialize -> decode gives it back).
//!
//! Bugs found here in the root crate are not fixed by the fuzzing work: their inputs go to
//! `fuzz/corpus/<target>/known-bugs/`, replayed by the `#[ignore]`d `known_bugs_*` tests.

#[path = "../fuzz/driver.rs"]
mod driver;

use std::net::Ipv4Addr;

use arbitrary::Unstructured;
use ipnet::Ipv4Net;
use routemesh::model::{
    DesiredState, Driver, EndpointMode, Limits, Network, Node, NodeAddress, NodeState, Pending,
    PortConfig, Proto, PublishMode, Scheduler, Service, ServiceVip, Task, TaskAttachment,
    TaskState, TaskStatus,
};
use routemesh::store::state::decode;
use routemesh::store::KeyValue;
use routemesh::validate::{publish, published_port};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn corpus_root() -> std::path::PathBuf {
    driver::corpus_root(env!("CARGO_MANIFEST_DIR"))
}

// ---- publish specs ----------------------------------------------------------------------

/// The short form `[mode=M,]PUBLISHED:TARGET/PROTO`.
fn short_form(p: &PortConfig) -> String {
    let mode = match p.mode {
        PublishMode::Host => "mode=host,",
        PublishMode::Ingress => "",
    };
    format!("{mode}{}:{}/{}", p.published, p.target, p.proto)
}

fn long_form(p: &PortConfig) -> String {
    format!(
        "published={},target={},protocol={},mode={}",
        p.published, p.target, p.proto, p.mode
    )
}

fn check_publish(bytes: &[u8]) {
    let spec = String::from_utf8_lossy(bytes);
    if let Ok(p) = publish(&spec) {
        assert!(p.published >= 1 && p.target >= 1, "{spec:?} gave {p:?}");
        assert!(
            matches!(p.proto, Proto::Tcp | Proto::Udp),
            "{spec:?} gave {p:?}"
        );
        for rendered in [short_form(&p), long_form(&p)] {
            match publish(&rendered) {
                Ok(again) => assert_eq!(again, p, "{spec:?} -> {rendered:?}"),
                Err(e) => panic!("{spec:?} gave {p:?}, but {rendered:?} fails: {e}"),
            }
        }
    }
    if let Ok((port, proto)) = published_port(&spec) {
        assert!(port >= 1, "{spec:?} gave port 0");
        let rendered = format!("{port}/{proto}");
        assert_eq!(
            published_port(&rendered).ok(),
            Some((port, proto)),
            "{spec:?} -> {rendered:?}"
        );
    }
}

const PUBLISH_PIECES: &[&str] = &[
    "mode=",
    "published=",
    "target=",
    "protocol=",
    "host",
    "ingress",
    "tcp",
    "udp",
    "sctp",
    ":",
    "/",
    ",",
    "=",
    "0",
    "1",
    "80",
    "8080",
    "65535",
    "65536",
    "99999999999999999999",
    "-1",
    "+8",
    " ",
    "",
    "é",
];

fn port_text(u: &mut Unstructured) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => u.choose(PUBLISH_PIECES)?.to_string(),
        1 => u.arbitrary::<u16>()?.to_string(),
        2 => format!("0{}", u.int_in_range(1u16..=9999)?),
        _ => u.int_in_range(1u16..=9999)?.to_string(),
    })
}

fn word_text(u: &mut Unstructured, words: &[&str]) -> arbitrary::Result<String> {
    Ok(if u.ratio(1, 6)? {
        u.choose(PUBLISH_PIECES)?.to_string()
    } else {
        u.choose(words)?.to_string()
    })
}

/// Specs built from the grammar (short and long parts, joined by commas), sometimes with a
/// piece or a character inserted anywhere.
fn publish_spec(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut parts = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        parts.push(match u.int_in_range(0..=5)? {
            0 | 1 => {
                let mut part = format!("{}:{}", port_text(u)?, port_text(u)?);
                if u.arbitrary()? {
                    part.push('/');
                    part.push_str(&word_text(u, &["tcp", "udp"])?);
                }
                part
            }
            2 => format!("published={}", port_text(u)?),
            3 => format!("target={}", port_text(u)?),
            4 => format!("protocol={}", word_text(u, &["tcp", "udp"])?),
            _ => format!("mode={}", word_text(u, &["host", "ingress"])?),
        });
    }
    let mut spec = parts.join(",");
    if u.ratio(1, 4)? {
        let mut at = u.int_in_range(0..=spec.len())?;
        while !spec.is_char_boundary(at) {
            at -= 1;
        }
        if u.arbitrary()? {
            spec.insert_str(at, u.choose(PUBLISH_PIECES)?);
        } else {
            spec.insert(at, u.arbitrary()?);
        }
    }
    Ok(spec.into_bytes())
}

#[test]
fn fuzz_publish_spec() {
    let report = driver::run(&driver::Target {
        name: "publish-spec",
        corpus_root: corpus_root(),
        generate: &publish_spec,
        check: &check_publish,
    });
    assert!(report.replayed > 0, "the publish-spec corpus is missing");
}

/// The grammar pieces make accepted specs often enough to test the roundtrip.
#[test]
fn generated_publish_specs_are_accepted_sometimes() {
    let mut rng = driver::Rng::new(3);
    let accepted = (0..2000)
        .filter_map(|_| {
            let raw = rng.bytes(256);
            publish_spec(&mut Unstructured::new(&raw)).ok()
        })
        .filter(|spec| publish(&String::from_utf8_lossy(spec)).is_ok())
        .count();
    assert!(
        accepted > 200,
        "{accepted} of 2000 generated specs accepted"
    );
}

// ---- store records ------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "web", "app", "ingress", "node1", "web.1", "", "a b", "ü", "\"", "\\", "\u{0}", "🦀",
];

fn text(u: &mut Unstructured) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok(u.choose(WORDS)?.to_string())
    } else {
        u.arbitrary()
    }
}

fn texts(u: &mut Unstructured) -> arbitrary::Result<Vec<String>> {
    (0..u.int_in_range(0..=3)?).map(|_| text(u)).collect()
}

fn net(u: &mut Unstructured) -> arbitrary::Result<Ipv4Net> {
    let addr = Ipv4Addr::from(u.arbitrary::<u32>()?);
    Ipv4Net::new(addr, u.int_in_range(0..=32)?).map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn network(u: &mut Unstructured) -> arbitrary::Result<Network> {
    Ok(Network {
        name: text(u)?,
        id: text(u)?,
        driver: *u.choose(&[Driver::Bridge, Driver::Overlay, Driver::Macvlan])?,
        subnet: net(u)?,
        gateway: Ipv4Addr::from(u.arbitrary::<u32>()?),
        vni: u.arbitrary()?,
        created_at: u.arbitrary()?,
        ingress: u.arbitrary()?,
        parent: if u.arbitrary()? { Some(text(u)?) } else { None },
        encrypted: u.arbitrary()?,
    })
}

fn port_config(u: &mut Unstructured) -> arbitrary::Result<PortConfig> {
    Ok(PortConfig {
        published: u.arbitrary()?,
        target: u.arbitrary()?,
        proto: *u.choose(&[Proto::Tcp, Proto::Udp, Proto::Sctp])?,
        mode: *u.choose(&[PublishMode::Ingress, PublishMode::Host])?,
    })
}

fn service(u: &mut Unstructured) -> arbitrary::Result<Service> {
    Ok(Service {
        name: text(u)?,
        id: text(u)?,
        replicas: u.arbitrary()?,
        networks: texts(u)?,
        env: (0..u.int_in_range(0..=2)?)
            .map(|_| Ok((text(u)?, text(u)?)))
            .collect::<arbitrary::Result<_>>()?,
        command: texts(u)?,
        created_at: u.arbitrary()?,
        updated_at: u.arbitrary()?,
        endpoint_mode: *u.choose(&[EndpointMode::Vip, EndpointMode::Dnsrr])?,
        ports: (0..u.int_in_range(0..=3)?)
            .map(|_| port_config(u))
            .collect::<arbitrary::Result<_>>()?,
        vips: (0..u.int_in_range(0..=2)?)
            .map(|_| {
                Ok(ServiceVip {
                    network: text(u)?,
                    address: net(u)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?,
        lb_scheduler: *u.choose(&Scheduler::ALL)?,
        image: if u.arbitrary()? { Some(text(u)?) } else { None },
        user: if u.arbitrary()? { Some(text(u)?) } else { None },
        limits: Limits {
            memory_bytes: u.arbitrary()?,
            cpu_millis: u.arbitrary()?,
            pids: u.arbitrary()?,
        },
    })
}

fn task(u: &mut Unstructured) -> arbitrary::Result<Task> {
    Ok(Task {
        name: text(u)?,
        service: text(u)?,
        slot: u.arbitrary()?,
        node: text(u)?,
        attachments: (0..u.int_in_range(0..=3)?)
            .map(|_| {
                Ok(TaskAttachment {
                    network: text(u)?,
                    address: net(u)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?,
        gateway_address: net(u)?,
        created_at: u.arbitrary()?,
        desired: *u.choose(&[DesiredState::Running, DesiredState::Shutdown])?,
    })
}

fn task_status(u: &mut Unstructured) -> arbitrary::Result<TaskStatus> {
    Ok(TaskStatus {
        state: *u.choose(&[
            TaskState::Starting,
            TaskState::Running,
            TaskState::Failed,
            TaskState::Pending,
        ])?,
        pid: u.arbitrary()?,
        message: text(u)?,
        restarts: u.arbitrary()?,
        ever_ran: u.arbitrary()?,
        updated_at: u.arbitrary()?,
    })
}

fn node(u: &mut Unstructured) -> arbitrary::Result<Node> {
    Ok(Node {
        name: text(u)?,
        advertise_addr: if u.arbitrary()? {
            Some(Ipv4Addr::from(u.arbitrary::<u32>()?))
        } else {
            None
        },
        state: *u.choose(&[NodeState::Ready, NodeState::Down])?,
        api_socket: text(u)?,
        run_dir: text(u)?,
        updated_at: u.arbitrary()?,
        images: texts(u)?,
    })
}

fn node_address(u: &mut Unstructured) -> arbitrary::Result<NodeAddress> {
    Ok(NodeAddress {
        network: text(u)?,
        node: text(u)?,
        address: net(u)?,
    })
}

fn pending(u: &mut Unstructured) -> arbitrary::Result<Pending> {
    Ok(Pending {
        service: text(u)?,
        slots: (0..u.int_in_range(0..=4)?)
            .map(|_| u.arbitrary())
            .collect::<arbitrary::Result<_>>()?,
        reason: text(u)?,
    })
}

fn kv(value: &[u8]) -> KeyValue {
    KeyValue {
        key: "/routemesh/fuzz/record".to_string(),
        value: value.to_vec(),
        mod_revision: 1,
    }
}

/// Whatever `bytes` decodes to as a `T` re-encodes to bytes that decode to the same `T`.
fn reencodes<T>(bytes: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode::<T>(&kv(bytes)) {
        let again = serde_json::to_vec(&value).unwrap();
        match decode::<T>(&kv(&again)) {
            Ok(back) => assert_eq!(
                back,
                value,
                "re-encoded {}",
                String::from_utf8_lossy(&again)
            ),
            Err(e) => panic!(
                "{} decoded as {value:?} but its re-encoding fails: {e}",
                std::any::type_name::<T>()
            ),
        }
    }
}

fn check_record(bytes: &[u8]) {
    reencodes::<Network>(bytes);
    reencodes::<Service>(bytes);
    reencodes::<Task>(bytes);
    reencodes::<TaskStatus>(bytes);
    reencodes::<Node>(bytes);
    reencodes::<NodeAddress>(bytes);
    reencodes::<Pending>(bytes);
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// One field of a JSON object replaced by a value of another shape, or removed, or added.
fn mutate_json(u: &mut Unstructured, value: &mut serde_json::Value) -> arbitrary::Result<()> {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return Ok(());
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    if keys.is_empty() {
        return Ok(());
    }
    let key = u.choose(&keys)?.clone();
    let replacement = match u.int_in_range(0..=9)? {
        0 => {
            map.remove(&key);
            return Ok(());
        }
        1 => Value::Null,
        2 => Value::from(-1),
        3 => Value::from(u64::MAX),
        4 => Value::from(1.5),
        5 => Value::from(text(u)?),
        6 => Value::from("10.0.0.0/33"),
        7 => Value::Array(vec![Value::from(1), Value::Null]),
        8 => {
            map.insert(text(u)?, Value::from(true));
            return Ok(());
        }
        _ => Value::from(u128::from(u64::MAX) as f64 * 2.0),
    };
    map.insert(key, replacement);
    Ok(())
}

/// A valid record of a random type, as JSON bytes, sometimes with one field changed.
fn record(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut value = match u.int_in_range(0..=6)? {
        0 => json(&network(u)?),
        1 => json(&service(u)?),
        2 => json(&task(u)?),
        3 => json(&task_status(u)?),
        4 => json(&node(u)?),
        5 => json(&node_address(u)?),
        _ => json(&pending(u)?),
    };
    if u.ratio(1, 2)? {
        mutate_json(u, &mut value)?;
    }
    serde_json::to_vec(&value).map_err(|_| arbitrary::Error::IncorrectFormat)
}

#[test]
fn fuzz_store_record() {
    let report = driver::run(&driver::Target {
        name: "store-record",
        corpus_root: corpus_root(),
        generate: &record,
        check: &check_record,
    });
    assert!(report.replayed > 0, "the store-record corpus is missing");
}

fn roundtrips<T>(value: &T)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(value).unwrap();
    match decode::<T>(&kv(&bytes)) {
        Ok(back) => assert_eq!(&back, value, "{}", String::from_utf8_lossy(&bytes)),
        Err(e) => panic!("{value:?} does not decode: {e}"),
    }
}

/// The input drives the choice of one record of each type; each roundtrips.
fn check_roundtrip(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let _ = (|| -> arbitrary::Result<()> {
        roundtrips(&network(&mut u)?);
        roundtrips(&service(&mut u)?);
        roundtrips(&task(&mut u)?);
        roundtrips(&task_status(&mut u)?);
        roundtrips(&node(&mut u)?);
        roundtrips(&node_address(&mut u)?);
        roundtrips(&pending(&mut u)?);
        Ok(())
    })();
}

#[test]
fn fuzz_store_roundtrip() {
    let report = driver::run(&driver::Target {
        name: "store-roundtrip",
        corpus_root: corpus_root(),
        generate: &|u| Ok(u.bytes(u.len().min(512))?.to_vec()),
        check: &check_roundtrip,
    });
    assert!(report.replayed > 0, "the store-roundtrip corpus is missing");
}

/// Inputs of known, unfixed bugs in the root crate: `cargo test --test fuzz_inputs --
/// --ignored known_bugs` fails while any still reproduces.
#[test]
#[ignore]
fn known_bugs_still_fail() {
    type Check<'a> = &'a dyn Fn(&[u8]);
    let targets: [(&str, Check); 3] = [
        ("publish-spec", &check_publish),
        ("store-record", &check_record),
        ("store-roundtrip", &check_roundtrip),
    ];
    let mut failing = Vec::new();
    for (name, check) in targets {
        failing.extend(driver::replay_known_bugs(&driver::Target {
            name,
            corpus_root: corpus_root(),
            generate: &|_| Err(arbitrary::Error::NotEnoughData),
            check,
        }));
    }
    assert!(
        failing.is_empty(),
        "known bugs still reproduce: {failing:#?}"
    );
}
