use super::*;
use crate::model::{Node, Service};

fn svc(name: &str, replicas: u32) -> Service {
    Service {
        name: name.into(),
        id: "x".into(),
        replicas,
        networks: vec![],
        env: vec![],
        command: vec!["true".into()],
        created_at: 0,
        updated_at: 0,
        endpoint_mode: Default::default(),
        ports: vec![],
        vips: vec![],
        lb_scheduler: Default::default(),
        image: None,
        user: None,
        limits: Default::default(),
    }
}

fn task(service: &str, slot: u32, node: &str) -> Task {
    Task {
        name: Task::name_for(service, slot),
        service: service.into(),
        slot,
        node: node.into(),
        attachments: vec![],
        gateway_address: "172.18.0.2/16".parse().unwrap(),
        created_at: 0,
        desired: DesiredState::Running,
    }
}

fn node(name: &str, state: NodeState) -> Node {
    Node {
        name: name.into(),
        advertise_addr: None,
        state,
        api_socket: String::new(),
        run_dir: String::new(),
        updated_at: 0,
        images: vec![],
    }
}

#[test]
fn plan_creates_missing_slots_and_removes_extra_and_orphans() {
    let mut st = ClusterState::default();
    st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
    st.services.insert("web".into(), svc("web", 2));
    let mut stopping = task("web", 4, "n1");
    stopping.desired = DesiredState::Shutdown;
    st.tasks.insert(stopping.name.clone(), stopping);
    let mut lost = task("web", 5, "n9");
    lost.desired = DesiredState::Shutdown;
    st.tasks.insert(lost.name.clone(), lost);
    st.nodes.insert("n0".into(), node("n0", NodeState::Down));
    for t in [
        task("web", 1, "n1"),
        task("web", 2, "n0"),
        task("web", 3, "n1"),
        task("gone", 1, "n1"),
    ] {
        st.tasks.insert(t.name.clone(), t);
    }
    let mut actions = plan(&st);
    actions.sort_by_key(|a| format!("{a:?}"));
    // web.2 runs on a lost node: forgotten now, placed again once its record is gone.
    assert_eq!(
        actions,
        vec![
            Action::Forget {
                task: "web.2".into()
            },
            Action::Forget {
                task: "web.5".into()
            },
            Action::Shutdown {
                task: "gone.1".into()
            },
            Action::Shutdown {
                task: "web.3".into()
            },
        ]
    );
}

#[test]
fn addresses_of_lost_nodes_are_released() {
    let mut st = ClusterState::default();
    st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
    st.nodes.insert("n2".into(), node("n2", NodeState::Down));
    for n in ["n1", "n2"] {
        st.node_addrs.insert(
            ("ingress".into(), n.into()),
            crate::model::NodeAddress {
                network: "ingress".into(),
                node: n.into(),
                address: "10.255.0.2/16".parse().unwrap(),
            },
        );
    }
    // Without the network, both addresses go.
    assert_eq!(plan(&st).len(), 2);
    // With it, only the lost node's does.
    st.networks.insert(
        "ingress".into(),
        crate::model::Network {
            name: "ingress".into(),
            id: "i".into(),
            driver: crate::model::Driver::Overlay,
            subnet: "10.255.0.0/16".parse().unwrap(),
            gateway: "10.255.0.1".parse().unwrap(),
            vni: Some(4096),
            created_at: 0,
            ingress: true,
            parent: None,
            encrypted: false,
        },
    );
    assert_eq!(
        plan(&st),
        vec![Action::ForgetNodeAddress {
            network: "ingress".into(),
            node: "n2".into()
        }]
    );
}

#[test]
fn scale_to_zero_removes_everything() {
    let mut st = ClusterState::default();
    st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
    st.services.insert("web".into(), svc("web", 0));
    st.tasks.insert("web.1".into(), task("web", 1, "n1"));
    assert_eq!(
        plan(&st),
        vec![Action::Shutdown {
            task: "web.1".into()
        }]
    );
}

#[test]
fn spread_prefers_nodes_with_fewest_tasks_of_the_service() {
    let mut st = ClusterState::default();
    for n in ["n1", "n2", "n3"] {
        st.nodes.insert(n.into(), node(n, NodeState::Ready));
    }
    st.nodes.insert("n0".into(), node("n0", NodeState::Down));
    st.tasks.insert("web.1".into(), task("web", 1, "n1"));
    st.tasks.insert("db.1".into(), task("db", 1, "n2"));
    let mut stopping = task("web", 9, "n3");
    stopping.desired = DesiredState::Shutdown;
    st.tasks.insert(stopping.name.clone(), stopping);
    // n2 and n3 have no running web task; n3 has fewer tasks overall.
    assert_eq!(pick_node(&st, "web").as_deref(), Some("n3"));
    st.tasks.insert("web.2".into(), task("web", 2, "n3"));
    assert_eq!(pick_node(&st, "web").as_deref(), Some("n2"));
    st.nodes.clear();
    assert_eq!(pick_node(&st, "web"), None);
}

#[test]
fn a_service_with_an_image_goes_only_to_nodes_that_have_it() {
    let mut st = ClusterState::default();
    st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
    let mut n2 = node("n2", NodeState::Ready);
    n2.images = vec!["web:1".into()];
    st.nodes.insert("n2".into(), n2);
    let mut web = svc("web", 3);
    web.image = Some("web:1".into());
    st.services.insert("web".into(), web);
    st.services.insert("plain".into(), svc("plain", 1));
    // Spread would prefer the emptier n1; the image decides first.
    st.tasks.insert("web.1".into(), task("web", 1, "n2"));
    assert_eq!(pick_node(&st, "web").as_deref(), Some("n2"));
    assert_eq!(pick_node(&st, "plain").as_deref(), Some("n1"));
    st.nodes.get_mut("n2").unwrap().images.clear();
    assert_eq!(pick_node(&st, "web"), None, "no node has the image");
}

#[tokio::test]
async fn task_ls_learns_why_a_slot_has_no_node() {
    use crate::store::local::LocalStore;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::open(&dir.path().join("state.json")).unwrap());
    let mut web = svc("web", 1);
    web.image = Some("web:1".into());
    let put = |t: Txn| {
        let store = store.clone();
        async move { assert!(store.txn(t).await.unwrap().succeeded) }
    };
    put(Txn::new()
        .put_json(keys::node("n1"), &node("n1", NodeState::Ready))
        .unwrap()
        .put(keys::alive("n1"), b"local".to_vec())
        .put_json(keys::service("web"), &web)
        .unwrap())
    .await;
    let (_tx, leading) = tokio::sync::watch::channel(true);
    let orch = Orchestrator {
        cache: crate::store::cache::Cache::start(store.clone())
            .await
            .unwrap(),
        store: store.clone(),
        gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
        leading,
        key_rotation: 43_200,
    };
    orch.cache.fresh().await.unwrap();
    orch.reconcile(&Scope::All).await.unwrap();
    let st = state::read(store.as_ref()).await.unwrap();
    assert!(st.tasks.is_empty());
    let p = &st.pending["web"];
    assert_eq!(p.slots, vec![1]);
    assert!(
        p.reason.contains("no ready node has image \"web:1\""),
        "{}",
        p.reason
    );

    // The node gets the image: the slot is placed and the reason forgotten.
    let mut n1 = node("n1", NodeState::Ready);
    n1.images = vec!["web:1".into()];
    put(Txn::new().put_json(keys::node("n1"), &n1).unwrap()).await;
    orch.cache.fresh().await.unwrap();
    orch.reconcile(&Scope::All).await.unwrap();
    let st = state::read(store.as_ref()).await.unwrap();
    assert_eq!(st.tasks["web.1"].node, "n1");
    assert!(st.pending.is_empty());
}

#[test]
fn what_depends_on_a_skipped_record_is_left_alone() {
    let mut st = ClusterState::default();
    st.nodes.insert("n1".into(), node("n1", NodeState::Ready));
    // Its service and the node n9 are records this version could not read.
    for t in [task("future", 1, "n1"), task("web", 1, "n9")] {
        st.tasks.insert(t.name.clone(), t);
    }
    st.services.insert("web".into(), svc("web", 1));
    st.node_addrs.insert(
        ("quantum".into(), "n1".into()),
        crate::model::NodeAddress {
            network: "quantum".into(),
            node: "n1".into(),
            address: "10.9.0.2/24".parse().unwrap(),
        },
    );
    let skipped_plan = |st: &ClusterState| {
        let mut a = plan(st);
        a.sort_by_key(|a| format!("{a:?}"));
        a
    };
    let before = skipped_plan(&st);
    assert_eq!(before.len(), 3, "{before:?}");
    for key in [
        "/routemesh/services/future",
        "/routemesh/nodes/n9",
        "/routemesh/networks/quantum",
    ] {
        st.skipped.insert(
            key.into(),
            crate::model::SkippedRecord {
                key: key.into(),
                reason: "from a newer version".into(),
            },
        );
    }
    assert_eq!(skipped_plan(&st), vec![]);
}
