//! Kernel tests of the daemon's hardening, checked from outside: the API refuses what the CLI
//! refuses; the state is private and has one daemon; hostile records written straight into
//! the store are skipped and logged while a good service still converges and answers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `curl` against the node's API socket: (HTTP status, body).
fn api(node: &Node, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-X", method, "--unix-socket"])
        .arg(node.socket())
        .args([
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ]);
    if !body.is_empty() {
        cmd.args(["--data", body]);
    }
    cmd.arg(format!("http://localhost{path}"));
    let out = text(&run(&mut cmd));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_api_refuses_what_the_cli_refuses_with_400_and_changes_nothing() {
    if !root_or_skip("the_api_refuses_what_the_cli_refuses_with_400_and_changes_nothing") {
        return;
    }
    let node = Node::start("hapi");
    node.ok(&["network", "create", "app"]);
    node.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--network",
        "app",
        "--",
        "routemesh",
        "whoami",
    ]);
    let before = (
        node.ok(&["service", "ls", "--format", "json"]),
        node.ok(&["network", "ls", "--format", "json"]),
    );
    let cli = node.fails(&[
        "service",
        "create",
        "--name",
        "zero",
        "-p",
        "0:80",
        "--",
        "routemesh",
        "whoami",
    ]);
    let cases: &[(&str, &str, &str, &str)] = &[
        // The CLI's own words, from the same check.
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["routemesh","whoami"],"publish":["0:80"]}"#,
            "published port \"0\" must be 1-65535",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["true"],"publish":["published=0,target=80"]}"#,
            "published port \"0\" must be 1-65535",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["true"],"publish":["8080:70000"]}"#,
            "target port \"70000\" must be 1-65535",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"../x","command":["true"]}"#,
            "invalid service name",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["true"],"replicas":-1}"#,
            "invalid replicas -1",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["true"],"limit_pids":0}"#,
            "invalid --limit-pids 0",
        ),
        // Types and ranges the JSON decoder refuses: 400 too, with the usual body.
        (
            "POST",
            "/v1/services",
            r#"{"name":"zero","command":["true"],"replicas":"many"}"#,
            "invalid request body",
        ),
        (
            "POST",
            "/v1/networks",
            r#"{"name":"n2","vni":-1}"#,
            "invalid request body",
        ),
        (
            "POST",
            "/v1/networks",
            r#"{"name":"n2","vni":0}"#,
            "invalid VNI 0",
        ),
        (
            "POST",
            "/v1/services/web/update",
            r#"{"publish_add":["0:80"]}"#,
            "published port \"0\" must be 1-65535",
        ),
        (
            "POST",
            "/v1/services/web/scale",
            r#"{"replicas":100000}"#,
            "invalid replicas 100000",
        ),
        (
            "POST",
            "/v1/services/web/scale",
            "{not json",
            "invalid request body",
        ),
    ];
    for (method, path, body, want) in cases {
        let (code, answer) = api(&node, method, path, body);
        assert_eq!(code, 400, "{method} {path} {body}: {answer}");
        let message = serde_json::from_str::<serde_json::Value>(&answer)
            .unwrap_or_else(|e| panic!("{path} {body}: not JSON ({e}): {answer}"))["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(want), "{path} {body}: {message}");
    }
    assert!(
        cli.contains("published port \"0\" must be 1-65535"),
        "{cli}"
    );
    let after = (
        node.ok(&["service", "ls", "--format", "json"]),
        node.ok(&["network", "ls", "--format", "json"]),
    );
    assert_eq!(before, after, "a refused request changed the state");
}

#[test]
fn state_is_private_has_one_daemon_and_its_dirs_are_checked() {
    if !root_or_skip("state_is_private_has_one_daemon_and_its_dirs_are_checked") {
        return;
    }
    let node = Node::start("hlock");
    let state = node.dir.join("state");
    assert_eq!(mode(&state.join("state.json")), 0o600, "state.json");
    // The store's log beside it (every write since the last snapshot) is as private.
    assert_eq!(mode(&state.join("state.log")), 0o600, "state.log");
    assert_eq!(mode(&state), 0o700, "state dir");
    let pid = node.daemon.as_ref().map(|d| d.id()).unwrap_or_default();
    let daemon = |state_dir: &Path, run_dir: &Path| {
        run(node
            .ns
            .cmd(bin().to_str().unwrap_or("routemesh"))
            .args(["daemon", "--node-name", "second", "--state-dir"])
            .arg(state_dir)
            .arg("--run-dir")
            .arg(run_dir)
            .env("PATH", path_with_bin()))
    };
    // A second daemon on the same state dir (its own run dir) exits, naming both.
    let out = daemon(&state, &node.dir.join("run2"));
    assert!(!out.status.success(), "a second daemon started");
    let err = errtext(&out);
    let want = format!(
        "another routemesh daemon (pid {pid}) is using state dir {}",
        state.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!node.dir.join("run2/routemesh.sock").exists());
    // A symlinked state dir and a run dir others can write are refused before any use.
    let real = node.dir.join("real-state");
    std::fs::create_dir_all(&real).expect("dir");
    let link = node.dir.join("link-state");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let err = errtext(&daemon(&link, &node.dir.join("run3")));
    assert!(
        err.contains(&format!(
            "refusing state dir {}: it is a symlink",
            link.display()
        )),
        "{err}"
    );
    let open_run = node.dir.join("open-run");
    std::fs::create_dir_all(&open_run).expect("dir");
    std::fs::set_permissions(&open_run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = errtext(&daemon(&node.dir.join("state3"), &open_run));
    assert!(
        err.contains(&format!(
            "refusing run dir {}: other users can write it (mode 0777)",
            open_run.display()
        )),
        "{err}"
    );
    assert!(!open_run.join("routemesh.sock").exists());
    // The first daemon is unaffected.
    node.ok(&["node", "ls"]);
}

/// Adds `records` (key, JSON value) to the local store's file, as a damaged or hostile
/// writer would (the daemon is stopped).
/// Writes `records` straight into the node's local store (the daemon is stopped), past every
/// check the API makes: what a damaged file or a hostile writer would leave.
fn inject(state_json: &Path, records: &[(String, serde_json::Value)]) {
    use routemesh::store::{local::LocalStore, Store, Txn};
    let store = LocalStore::open(state_json).expect("opening the local store");
    let mut txn = Txn::new();
    for (key, value) in records {
        txn = txn.put(key.as_str(), value.to_string().into_bytes());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let out = rt.block_on(store.txn(txn)).expect("writing the records");
    assert!(out.succeeded);
}

#[test]
fn hostile_store_records_are_skipped_and_logged_while_a_good_service_converges() {
    if !root_or_skip("hostile_store_records_are_skipped_and_logged_while_a_good_service_converges")
    {
        return;
    }
    let mut node = Node::start("hrec");
    node.ok(&["network", "create", "app"]);
    node.stop_daemon();
    let task = |name: &str, service: &str| {
        serde_json::json!({
            "name": name, "service": service, "slot": 1, "node": "node1",
            "attachments": [{"network": "app", "address": "10.0.0.200/24"}],
            "gateway_address": "172.18.0.200/16", "created_at": 0
        })
    };
    let service = |name: &str| {
        serde_json::json!({
            "name": name, "id": "0123456789ab", "replicas": 1, "networks": ["app"],
            "env": [], "command": ["routemesh", "whoami"], "created_at": 0, "updated_at": 0
        })
    };
    let long = "a".repeat(300);
    let hostile: Vec<(String, serde_json::Value)> = vec![
        ("/routemesh/tasks/../x".into(), task("../x", "web")),
        ("/routemesh/tasks/evil.1".into(), task("../../etc", "evil")),
        (format!("/routemesh/services/{long}"), service(&long)),
        ("/routemesh/services/a\nb".into(), service("a\nb")),
        (
            "/routemesh/networks/future".into(),
            serde_json::json!({
                "name": "future", "id": "0123456789ab", "driver": "quantum",
                "subnet": "10.77.0.0/24", "gateway": "10.77.0.1", "vni": 4999, "created_at": 0
            }),
        ),
    ];
    // A value only a newer version knows, in a field that has a safe meaning: tolerated.
    let newer = (
        "/routemesh/nodes/node9".to_string(),
        serde_json::json!({
            "name": "node9", "advertise_addr": null, "state": "draining",
            "api_socket": "/run/node9/routemesh.sock", "run_dir": "/run/node9", "updated_at": 0
        }),
    );
    let mut records = hostile.clone();
    records.push(newer);
    inject(&node.dir.join("state/state.json"), &records);
    node.start_daemon();

    node.ok(&[
        "service",
        "create",
        "--name",
        "good",
        "--network",
        "app",
        "-p",
        "8080:80",
        "--",
        "routemesh",
        "whoami",
        "--port",
        "80",
    ]);
    wait_for("good.1 answering on 8080", Duration::from_secs(10), || {
        let body = text(&node.ns.sh("curl -s --max-time 2 http://127.0.0.1:8080/"));
        body.contains("Task: good.1").then_some(())
    });
    // Every hostile record is counted and named; the newer node is kept (down).
    let (code, body) = api(&node, "GET", "/v1/info", "");
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("info JSON");
    let mut skipped: Vec<String> = info["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .collect();
    skipped.sort();
    let mut want: Vec<String> = hostile.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(skipped, want);
    assert_eq!(info["skipped_records"], hostile.len());
    let shown = node.ok(&["node", "info"]);
    assert!(
        shown.contains(&format!("skipped store records: {}", hostile.len()))
            && shown.contains("\"/routemesh/services/a\\nb\""),
        "{shown}"
    );
    let nodes = node.ok(&["node", "ls"]);
    assert!(nodes.contains("node9"), "{nodes}");
    let services = node.ok(&["service", "ls"]);
    assert!(
        !services.contains(&long) && services.contains("good"),
        "{services}"
    );
    // Logged as a warning, with the key, once.
    let log = node.daemon_log();
    let warned = log
        .lines()
        .filter(|l| l.contains("store: record skipped"))
        .collect::<Vec<_>>();
    assert!(
        warned.iter().any(|l| l.contains("/routemesh/tasks/../x")),
        "{}",
        tail(&log, 40)
    );
    assert_eq!(
        warned
            .iter()
            .filter(|l| l.contains("/routemesh/tasks/../x"))
            .count(),
        1,
        "logged once"
    );
    // Nothing was made from the hostile names: no task dir or namespace outside its place.
    let run = node.run_dir();
    assert!(!run.join("x").exists() && !run.join("tasks/x").exists());
    let netns: Vec<String> = std::fs::read_dir(node.netns_dir())
        .expect("netns dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        netns
            .iter()
            .all(|n| !n.contains("..") && !n.contains("evil")),
        "{netns:?}"
    );
    assert!(
        node.daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none()),
        "the daemon is still running"
    );
}

#[test]
fn plaintext_etcd_on_another_machine_is_warned_about_loudly() {
    if !root_or_skip("plaintext_etcd_on_another_machine_is_warned_about_loudly") {
        return;
    }
    let ns = Netns::new(&unique("hplain")).unwrap_or_else(|e| panic!("{e}"));
    // Removed with `tmp`, even when an assertion fails.
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("ca");
    let daemon = |extra: &[&str]| {
        let out = run(ns
            .cmd(bin().to_str().unwrap_or("routemesh"))
            .args(["daemon", "--run-dir"])
            .arg(tmp.path().join("run"))
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .args(extra)
            .env("PATH", path_with_bin()));
        // Nothing routes anywhere in this fresh namespace: every start fails, after the check.
        assert!(!out.status.success(), "{extra:?} started");
        format!("{}{}", text(&out), errtext(&out))
    };
    // TEST-NET-1: not loopback, and unreachable from here.
    let remote = daemon(&["--store", "etcd://192.0.2.1:2379"]);
    assert!(
        remote.contains("INSECURE")
            && remote.contains("PLAINTEXT")
            && remote.contains("192.0.2.1:2379"),
        "{remote}"
    );
    let local = daemon(&["--store", "etcd://127.0.0.1:2379"]);
    assert!(!local.contains("INSECURE"), "{local}");
    let ca = ca.to_str().unwrap_or_default();
    let tls = daemon(&["--store", "etcd://192.0.2.1:2379", "--etcd-cacert", ca]);
    assert!(!tls.contains("INSECURE"), "{tls}");
}
