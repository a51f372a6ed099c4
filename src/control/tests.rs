//! Races and claims of the operations against a real local store.

use super::*;
use crate::model::Proto;
use crate::store::local::LocalStore;
use crate::validate::{self, ServiceRequest};
use crate::wire::{NetworkCreate, ServiceCreate};

async fn control(dir: &tempfile::TempDir) -> Control {
    on(Arc::new(
        LocalStore::open(&dir.path().join("state.json")).unwrap(),
    ))
    .await
}

/// A control over `store`, with the informer cache the daemon gives it.
async fn on(store: Arc<dyn Store>) -> Control {
    Control {
        cache: Cache::start(store.clone()).await.unwrap(),
        store,
        cfg: ControlConfig {
            pool: "10.0.0.0/8".parse().unwrap(),
            pool_prefix: 24,
            gwbridge_subnet: "172.18.0.0/16".parse().unwrap(),
            esp: true,
        },
    }
}

async fn network(c: &Control, name: &str, driver: &str) {
    let req = validate::network_request(&NetworkCreate {
        name: name.into(),
        driver: Some(driver.into()),
        ..Default::default()
    })
    .unwrap();
    c.create_network(req, &[]).await.unwrap();
}

fn service(name: &str, net: &str, publish: &[&str]) -> ServiceRequest {
    validate::service_request(
        &ServiceCreate {
            name: name.into(),
            replicas: Some(1),
            networks: vec![net.into()],
            env: vec![],
            command: vec!["sh".into()],
            endpoint_mode: None,
            publish: publish.iter().map(|s| s.to_string()).collect(),
            lb_scheduler: None,
            ..Default::default()
        },
        "/bin:/usr/bin",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_racing_for_one_port_cannot_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(&dir).await;
    network(&c, "app", "overlay").await;
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let (c1, c2) = (c.clone(), c.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { c1.create_service(service(&a, "app", &["9000:80"])).await }),
            tokio::spawn(async move { c2.create_service(service(&b, "app", &["9000:80"])).await }),
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert!(r1.is_ok() != r2.is_ok(), "round {round}: exactly one wins");
        let loser = r1.err().or(r2.err()).unwrap().to_string();
        assert!(loser.contains("already published by service"), "{loser}");
        let winner = c
            .read()
            .await
            .unwrap()
            .services
            .keys()
            .find(|k| k.ends_with(&round.to_string()))
            .cloned()
            .unwrap();
        c.remove_service(&winner).await.unwrap();
    }
}

#[tokio::test]
async fn ports_are_released_by_update_and_rm() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(&dir).await;
    network(&c, "app", "overlay").await;
    c.create_service(service("web", "app", &["8080:80"]))
        .await
        .unwrap();
    let p = validate::publish("8081:80").unwrap();
    c.update_service("web", &[p], &[(8080, Proto::Tcp)])
        .await
        .unwrap();
    // 8080 is free again, 8081 is web's.
    c.create_service(service("other", "app", &["8080:80"]))
        .await
        .unwrap();
    assert!(c
        .create_service(service("third", "app", &["8081:80"]))
        .await
        .is_err());
    c.remove_service("web").await.unwrap();
    c.create_service(service("third", "app", &["8081:80"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn bridge_networks_get_no_vip() {
    let dir = tempfile::tempdir().unwrap();
    let c = control(&dir).await;
    network(&c, "lan", "bridge").await;
    network(&c, "app", "overlay").await;
    let mut req = service("web", "lan", &[]);
    req.networks.push("app".into());
    let svc = c.create_service(req).await.unwrap();
    let nets: Vec<&str> = svc.vips.iter().map(|v| v.network.as_str()).collect();
    assert_eq!(nets, ["app"]);
}

/// A store whose every compare fails, as if another writer always got there first.
struct AlwaysRaced {
    inner: LocalStore,
    txns: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for AlwaysRaced {
    async fn get(&self, key: &str) -> crate::store::Result<Option<crate::store::KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> crate::store::Result<(Vec<crate::store::KeyValue>, u64)> {
        self.inner.list(prefix).await
    }
    async fn txn(&self, _: Txn) -> crate::store::Result<crate::store::TxnOutcome> {
        self.txns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(crate::store::TxnOutcome {
            succeeded: false,
            revision: 0,
        })
    }
    async fn watch(
        &self,
        prefix: &str,
        after: u64,
    ) -> crate::store::Result<tokio::sync::mpsc::Receiver<crate::store::WatchEvent>> {
        self.inner.watch(prefix, after).await
    }
}

#[tokio::test]
async fn an_operation_that_keeps_losing_races_gives_up_naming_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AlwaysRaced {
        inner: LocalStore::open(&dir.path().join("state.json")).unwrap(),
        txns: Default::default(),
    });
    let c = on(store.clone()).await;
    let req = validate::network_request(&NetworkCreate {
        name: "app".into(),
        ..Default::default()
    })
    .unwrap();
    let err = c.create_network(req, &[]).await.unwrap_err();
    assert!(
        matches!(&err, ControlError::KeptChanging { what: Operation::CreateNetwork { name } } if name == "app"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "creating network \"app\": the cluster state kept changing underneath, try again"
    );
    let tries = store.txns.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(tries, TXN_ATTEMPTS);
    // A refusal ends the operation at once, without a transaction.
    let err = c.remove_service("nope").await.unwrap_err();
    assert!(matches!(err, ControlError::ServiceNotFound { .. }), "{err}");
    assert_eq!(store.txns.load(std::sync::atomic::Ordering::SeqCst), tries);
}
