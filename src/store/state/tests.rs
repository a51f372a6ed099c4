use serde_json::json;

use super::*;
use crate::model::{DesiredState, TaskState};
use crate::store::local::LocalStore;
use crate::store::Txn;

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(&dir.path().join("state.json")).unwrap();
    (dir, s)
}

async fn put(s: &LocalStore, key: &str, value: serde_json::Value) {
    let txn = Txn::new().put(key, serde_json::to_vec(&value).unwrap());
    assert!(s.txn(txn).await.unwrap().succeeded);
}

fn service(name: &str) -> serde_json::Value {
    json!({
        "name": name, "id": "0123456789ab", "replicas": 1, "networks": ["app"],
        "env": [], "command": ["sleep", "1"], "created_at": 0, "updated_at": 0,
        "ports": [{"published": 8080, "target": 80, "proto": "tcp"}]
    })
}

fn task(name: &str, service: &str, slot: u32, node: &str) -> serde_json::Value {
    json!({
        "name": name, "service": service, "slot": slot, "node": node,
        "attachments": [{"network": "app", "address": "10.0.0.5/24"}],
        "gateway_address": "172.18.0.5/16", "created_at": 0
    })
}

fn network(name: &str, driver: &str) -> serde_json::Value {
    json!({
        "name": name, "id": "0123456789ab", "driver": driver, "subnet": "10.0.0.0/24",
        "gateway": "10.0.0.1", "vni": 4096, "created_at": 0
    })
}

#[tokio::test]
async fn hostile_and_undecodable_records_are_skipped_and_the_rest_kept() {
    let (_d, s) = store();
    put(&s, "/routemesh/networks/app", network("app", "overlay")).await;
    put(&s, "/routemesh/services/web", service("web")).await;
    put(&s, "/routemesh/tasks/web.1", task("web.1", "web", 1, "n1")).await;
    let long = "a".repeat(300);
    let hostile = [
        ("/routemesh/tasks/../x", task("../x", "web", 1, "n1")),
        ("/routemesh/tasks/x", task("../../etc", "web", 1, "n1")),
        (
            "/routemesh/tasks/web.2",
            task("web.2", "web", 2, "../../etc"),
        ),
        ("/routemesh/services/a\nb", service("a\nb")),
        (&*format!("/routemesh/services/{long}"), service(&long)),
        ("/routemesh/services/zero", {
            let mut v = service("zero");
            v["ports"][0]["published"] = json!(0);
            v
        }),
        (
            "/routemesh/networks/new",
            network("new", "ipvlan-of-the-future"),
        ),
        ("/routemesh/networks/bad", {
            let mut v = network("bad", "bridge");
            v["id"] = json!("../../x");
            v
        }),
        ("/routemesh/networks/vni", {
            let mut v = network("vni", "overlay");
            v["vni"] = json!(1u64 << 31);
            v
        }),
        // Not ASCII: interface names slice network names by bytes.
        (
            "/routemesh/networks/caf\u{e9}",
            network("caf\u{e9}", "bridge"),
        ),
        ("/routemesh/status/web.1", json!({"not": "a status"})),
        (
            "/routemesh/nodes/n2",
            json!({
                "name": "n2", "advertise_addr": null, "state": "ready",
                "api_socket": "/run/x.sock", "run_dir": "/run/../etc", "updated_at": 0
            }),
        ),
        ("/routemesh/alive/..", json!(1)),
    ];
    for (k, v) in &hostile {
        put(&s, k, v.clone()).await;
    }
    put(&s, "/routemesh/nodeaddrs/app/n1", json!("garbage")).await;
    let st = read(&s).await.unwrap();
    assert_eq!(st.networks.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(st.services.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(st.tasks.keys().collect::<Vec<_>>(), ["web.1"]);
    assert!(st.statuses.is_empty() && st.nodes.is_empty() && st.node_addrs.is_empty());
    let mut skipped: Vec<&str> = st.skipped.values().map(|r| r.key.as_str()).collect();
    skipped.sort();
    let mut want: Vec<&str> = hostile.iter().map(|(k, _)| *k).collect();
    want.push("/routemesh/nodeaddrs/app/n1");
    want.sort();
    assert_eq!(skipped, want);
    let reason = |key: &str| {
        st.skipped
            .values()
            .find(|r| r.key == key)
            .map(|r| r.reason.clone())
            .unwrap()
    };
    assert!(reason("/routemesh/networks/new").contains("newer version"));
    assert!(reason("/routemesh/tasks/web.2").contains("not a valid node name"));
}

#[tokio::test]
async fn enum_values_from_a_newer_version_are_tolerated() {
    let (_d, s) = store();
    let mut t = task("web.1", "web", 1, "n1");
    t["desired"] = json!("paused");
    put(&s, "/routemesh/tasks/web.1", t).await;
    put(
        &s,
        "/routemesh/status/web.1",
        json!({"state": "hibernating", "pid": null, "message": "", "restarts": 0,
               "ever_ran": true, "updated_at": 0}),
    )
    .await;
    put(
        &s,
        "/routemesh/nodes/n1",
        json!({
            "name": "n1", "advertise_addr": null, "state": "draining",
            "api_socket": "/run/n1/routemesh.sock", "run_dir": "/run/n1", "updated_at": 0
        }),
    )
    .await;
    let mut web = service("web");
    web["lb_scheduler"] = json!("quantum-rr");
    put(&s, "/routemesh/services/web", web).await;
    let st = read(&s).await.unwrap();
    assert!(st.skipped.is_empty(), "{:?}", st.skipped);
    assert_eq!(
        st.services["web"].lb_scheduler,
        crate::model::Scheduler::default()
    );
    assert_eq!(st.tasks["web.1"].desired, DesiredState::Unknown);
    assert_eq!(st.statuses["web.1"].state, TaskState::Unknown);
    assert_eq!(st.nodes["n1"].state, crate::model::NodeState::Down);
}
