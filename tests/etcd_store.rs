//! The etcd store against a real etcd (Debian's `etcd-server`), started per test on free
//! loopback ports with a throwaway data directory and killed when the test ends, even on panic.
//! Without the etcd binary each test says SKIPPED loudly and returns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routemesh::store::etcd::{endpoints_from_url, EtcdStore, TlsFiles};
use routemesh::store::{Store, Txn, WatchEvent};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(3);

struct Etcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Extra flags for a TLS etcd: (server cert, server key, CA).
struct ServerTls<'a> {
    cert: &'a Path,
    key: &'a Path,
    ca: &'a Path,
}

impl Etcd {
    /// A running etcd, or None (after a loud SKIPPED line) when it is not installed.
    async fn start(test: &str) -> Option<Etcd> {
        Etcd::start_with(test, None).await
    }

    async fn start_with(test: &str, tls: Option<ServerTls<'_>>) -> Option<Etcd> {
        let Some(bin) = etcd_binary() else {
            eprintln!("SKIPPED {test}: etcd not installed (apt-get install etcd-server)");
            return None;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // A free port can be taken by a parallel test before etcd binds it: try again.
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(&bin);
            cmd.arg("--name=t")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=t={peer_url}"))
                .arg("--logger=zap")
                .env_clear()
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if let Some(tls) = &tls {
                cmd.arg(format!("--cert-file={}", tls.cert.display()))
                    .arg(format!("--key-file={}", tls.key.display()))
                    .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                    .arg("--client-cert-auth");
            }
            let child = cmd.spawn().unwrap();
            let mut etcd = Etcd {
                child,
                endpoint: format!("127.0.0.1:{client}"),
                dir,
            };
            if etcd.wait_listening().await {
                return Some(etcd);
            }
        }
        panic!("etcd did not start in 3 attempts");
    }

    /// Waits until the client port accepts connections; false if etcd exited first.
    async fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                eprintln!("etcd exited early:\n{}", self.log());
                return false;
            }
            if std::net::TcpStream::connect(&self.endpoint).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd not listening after 20 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    async fn store(&self) -> EtcdStore {
        // Right after start etcd may still be electing itself leader: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect(&self.endpoints(), None, TIMEOUT).await {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("{e}\n{}", self.log()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

macro_rules! etcd_or_skip {
    ($test:expr) => {
        match Etcd::start($test).await {
            Some(etcd) => etcd,
            None => return,
        }
    };
}

async fn next(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no watch event within 10 s")
        .expect("watch closed")
}

#[tokio::test]
async fn claims_are_exclusive() {
    let etcd = etcd_or_skip!("claims_are_exclusive");
    let s = etcd.store().await;
    let t = || Txn::new().when_absent("/c/a").put("/c/a", b"1".to_vec());
    assert!(s.txn(t()).await.unwrap().succeeded);
    assert!(!s.txn(t()).await.unwrap().succeeded);
    assert_eq!(s.get("/c/a").await.unwrap().unwrap().value, b"1");
}

#[tokio::test]
async fn failed_compare_writes_nothing() {
    let etcd = etcd_or_skip!("failed_compare_writes_nothing");
    let s = etcd.store().await;
    let before = s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
    let out = s
        .txn(
            Txn::new()
                .when_absent("/k")
                .put("/other", b"2".to_vec())
                .delete("/k"),
        )
        .await
        .unwrap();
    assert!(!out.succeeded);
    assert_eq!(
        out.revision, before.revision,
        "a failed txn moved the revision"
    );
    assert!(s.get("/other").await.unwrap().is_none());
    assert!(s.get("/k").await.unwrap().is_some());
}

#[tokio::test]
async fn mod_revision_guards_updates() {
    let etcd = etcd_or_skip!("mod_revision_guards_updates");
    let s = etcd.store().await;
    let r = s.txn(Txn::new().put("/k", b"1".to_vec())).await.unwrap();
    assert_eq!(s.get("/k").await.unwrap().unwrap().mod_revision, r.revision);
    let stale = Txn::new()
        .when_revision("/k", r.revision - 1)
        .put("/k", b"x".to_vec());
    assert!(!s.txn(stale).await.unwrap().succeeded);
    let fresh = Txn::new()
        .when_revision("/k", r.revision)
        .put("/k", b"2".to_vec());
    let out = s.txn(fresh).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"2");
    assert_eq!(out.revision, r.revision + 1);
    // As on the local store, a revision guard never matches a missing key.
    let on_missing = Txn::new()
        .when_revision("/missing", 0)
        .put("/missing", b"x".to_vec());
    assert!(!s.txn(on_missing).await.unwrap().succeeded);
}

#[tokio::test]
async fn list_is_sorted_by_key_within_the_prefix() {
    let etcd = etcd_or_skip!("list_is_sorted_by_key_within_the_prefix");
    let s = etcd.store().await;
    s.txn(
        Txn::new()
            .put("/l/b", b"2".to_vec())
            .put("/l/a", b"1".to_vec())
            .put("/la", b"no".to_vec())
            .put("/m/x", b"no".to_vec()),
    )
    .await
    .unwrap();
    let last = s
        .txn(Txn::new().put("/l/c/d", b"3".to_vec()))
        .await
        .unwrap();
    let (kvs, rev) = s.list("/l/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/b", "/l/c/d"]);
    assert_eq!(rev, last.revision);
    assert_eq!(kvs[2].mod_revision, last.revision);
    assert!(s.list("/nothing/").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn watch_replays_then_follows_with_prefix_filter() {
    let etcd = etcd_or_skip!("watch_replays_then_follows_with_prefix_filter");
    let s = etcd.store().await;
    let r1 = s.txn(Txn::new().put("/w/a", b"1".to_vec())).await.unwrap();
    s.txn(Txn::new().put("/x/b", b"2".to_vec())).await.unwrap();
    let r3 = s.txn(Txn::new().put("/w/c", b"3".to_vec())).await.unwrap();
    let mut rx = s.watch("/w/", r1.revision).await.unwrap();
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        WatchEvent {
            revision: r3.revision,
            key: "/w/c".into(),
            value: Some(b"3".to_vec())
        }
    );
    let r4 = s.txn(Txn::new().delete("/w/a")).await.unwrap();
    let ev = next(&mut rx).await;
    assert_eq!(
        (ev.key.as_str(), ev.value, ev.revision),
        ("/w/a", None, r4.revision)
    );
}

#[tokio::test]
async fn delete_prefix_emits_a_delete_per_key() {
    let etcd = etcd_or_skip!("delete_prefix_emits_a_delete_per_key");
    let s = etcd.store().await;
    let put = s
        .txn(
            Txn::new()
                .put("/d/1", b"x".to_vec())
                .put("/d/2", b"y".to_vec())
                .put("/e/1", b"z".to_vec()),
        )
        .await
        .unwrap();
    let mut rx = s.watch("/", put.revision).await.unwrap();
    let del = s.txn(Txn::new().delete_prefix("/d/")).await.unwrap();
    let mut deleted = [next(&mut rx).await, next(&mut rx).await];
    deleted.sort_by(|a, b| a.key.cmp(&b.key));
    for (ev, key) in deleted.iter().zip(["/d/1", "/d/2"]) {
        assert_eq!(
            (ev.key.as_str(), &ev.value, ev.revision),
            (key, &None, del.revision)
        );
    }
    let (left, _) = s.list("/").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "/e/1");
}

#[tokio::test]
async fn watch_from_compacted_revision_closes() {
    let etcd = etcd_or_skip!("watch_from_compacted_revision_closes");
    let s = etcd.store().await;
    let r1 = s.txn(Txn::new().put("/w/a", b"1".to_vec())).await.unwrap();
    let r2 = s.txn(Txn::new().put("/w/a", b"2".to_vec())).await.unwrap();
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.compact(r2.revision as i64, None).await.unwrap();
    let mut rx = s.watch("/w/", r1.revision - 1).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert!(closed.is_none(), "got {closed:?} from a compacted revision");
    // From the compaction point on, history is there again.
    let mut rx = s.watch("/w/", r2.revision - 1).await.unwrap();
    assert_eq!(next(&mut rx).await.revision, r2.revision);
}

#[tokio::test]
async fn watch_closes_when_etcd_goes_away() {
    let mut etcd = etcd_or_skip!("watch_closes_when_etcd_goes_away");
    let s = etcd.store().await;
    let (_, rev) = s.list("/").await.unwrap();
    let mut rx = s.watch("/", rev).await.unwrap();
    etcd.child.kill().unwrap();
    etcd.child.wait().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("watch still open 30 s after etcd died");
    assert!(end.is_none());
    let err = s.get("/k").await.unwrap_err().to_string();
    assert!(err.contains(&etcd.endpoint), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_clear_error_within_the_timeout() {
    // Nothing listens: refused at once, retried until the timeout.
    let closed = format!("127.0.0.1:{}", free_port());
    // Listens but never speaks: only the timeout can end the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_ep = silent.local_addr().unwrap().to_string();
    for endpoint in [closed, silent_ep] {
        let started = Instant::now();
        let timeout = Duration::from_secs(1);
        let err = EtcdStore::connect(std::slice::from_ref(&endpoint), None, timeout)
            .await
            .err()
            .expect("connected to nothing");
        let took = started.elapsed();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("store etcd at {endpoint}: ")),
            "{text}"
        );
        assert!(took < Duration::from_secs(4), "took {took:?}: {text}");
        eprintln!("{endpoint}: {text} ({took:?})");
    }
    drop(silent);
}

#[test]
fn store_urls_name_their_endpoints() {
    assert_eq!(
        endpoints_from_url("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap(),
        ["10.0.0.1:2379", "10.0.0.2:2379"]
    );
    for bad in ["10.0.0.1:2379", "etcd://", "etcd://host"] {
        assert!(endpoints_from_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn leased_key_disappears_when_the_lease_expires() {
    let etcd = etcd_or_skip!("leased_key_disappears_when_the_lease_expires");
    let s = etcd.store().await;
    let lease = s.grant_lease(2).await.unwrap();
    let rev = s
        .put_with_lease("/routemesh/nodes/n1", b"up".to_vec(), lease)
        .await
        .unwrap();
    let mut rx = s.watch("/routemesh/nodes/", rev).await.unwrap();
    assert!(s.get("/routemesh/nodes/n1").await.unwrap().is_some());
    let ev = next(&mut rx).await;
    assert_eq!((ev.key.as_str(), ev.value), ("/routemesh/nodes/n1", None));
    assert!(s.get("/routemesh/nodes/n1").await.unwrap().is_none());
}

#[tokio::test]
async fn keep_alive_holds_a_lease_and_reports_its_loss() {
    let etcd = etcd_or_skip!("keep_alive_holds_a_lease_and_reports_its_loss");
    let s = etcd.store().await;
    let lease = s.grant_lease(2).await.unwrap();
    let mut kept = s.keep_alive(lease).await.unwrap();
    assert_eq!(kept.lease(), lease);
    s.put_with_lease("/n/a", b"up".to_vec(), lease)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!kept.is_lost());
    assert!(s.get("/n/a").await.unwrap().is_some(), "kept lease expired");
    s.revoke_lease(lease).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(5), kept.lost())
        .await
        .expect("lease loss not reported");
    assert!(why.contains("expired or was revoked"), "{why}");
    assert!(kept.is_lost());
    assert!(s.get("/n/a").await.unwrap().is_none());
    // A lease that is gone cannot be kept alive.
    assert!(s.keep_alive(lease).await.is_err());
}

#[tokio::test]
async fn concurrent_claimers_of_one_key_exactly_one_wins() {
    let etcd = etcd_or_skip!("concurrent_claimers_of_one_key_exactly_one_wins");
    let stores = [Arc::new(etcd.store().await), Arc::new(etcd.store().await)];
    let claim = "/routemesh/claims/vni/4097";
    let mut claimers = Vec::new();
    for i in 0..16u8 {
        let s = stores[usize::from(i) % 2].clone();
        claimers.push(tokio::spawn(async move {
            let t = Txn::new().when_absent(claim).put(claim, vec![b'a' + i]);
            (i, s.txn(t).await.unwrap().succeeded)
        }));
    }
    let mut winners = Vec::new();
    for c in claimers {
        let (i, won) = c.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let held = stores[0].get(claim).await.unwrap().unwrap();
    assert_eq!(held.value, vec![b'a' + winners[0]]);
}

#[tokio::test]
async fn campaign_elects_one_leader_and_hands_over_when_its_lease_ends() {
    let etcd = etcd_or_skip!("campaign_elects_one_leader_and_hands_over_when_its_lease_ends");
    let key = "/routemesh/leader";
    let (s1, s2) = (etcd.store().await, etcd.store().await);
    let (l1, l2) = (
        s1.grant_lease(5).await.unwrap(),
        s2.grant_lease(5).await.unwrap(),
    );
    let (w1, w2) = tokio::join!(
        s1.campaign(key, b"n1".to_vec(), l1),
        s2.campaign(key, b"n2".to_vec(), l2)
    );
    let (w1, w2) = (w1.unwrap(), w2.unwrap());
    assert!(w1 ^ w2, "n1 won: {w1}, n2 won: {w2}");
    let (leader, leader_lease, follower, follower_lease, follower_name) = if w1 {
        (&s1, l1, &s2, l2, b"n2")
    } else {
        (&s2, l2, &s1, l1, b"n1")
    };
    // Campaigning again changes nothing.
    assert!(leader
        .campaign(key, b"x".to_vec(), leader_lease)
        .await
        .unwrap());
    assert!(!follower
        .campaign(key, follower_name.to_vec(), follower_lease)
        .await
        .unwrap());

    let mut observed = follower.observe_leader(key).await.unwrap();
    let winner_name = if w1 { b"n1" } else { b"n2" };
    assert_eq!(observed.borrow().as_deref(), Some(&winner_name[..]));
    leader.revoke_lease(leader_lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), observed.wait_for(Option::is_none))
        .await
        .expect("vacancy not observed")
        .unwrap();
    assert!(follower
        .campaign(key, follower_name.to_vec(), follower_lease)
        .await
        .unwrap());
    tokio::time::timeout(
        Duration::from_secs(5),
        observed.wait_for(|v| v.as_deref() == Some(&follower_name[..])),
    )
    .await
    .expect("new leader not observed")
    .unwrap();
    // Resigning needs the lease that holds the key.
    assert!(!leader.resign(key, leader_lease).await.unwrap());
    assert!(follower.resign(key, follower_lease).await.unwrap());
    assert!(follower.get(key).await.unwrap().is_none());
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
fn make_certs(dir: &Path) -> bool {
    let run = |args: String| {
        Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let new_key = "-newkey rsa:2048 -nodes";
    run(format!(
        "req -x509 {new_key} -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem"
    )) && ["server", "client"].iter().all(|who| {
        run(format!(
            "req {new_key} -subj /CN={who} -keyout {who}.key -out {who}.csr"
        )) && run(format!(
            "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
             -extfile san.ext -out {who}.pem"
        ))
    })
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        eprintln!("SKIPPED tls_with_client_certificates: openssl could not make certificates");
        return;
    }
    let p = |name: &str| certs.path().join(name);
    let server = ServerTls {
        cert: &p("server.pem"),
        key: &p("server.key"),
        ca: &p("ca.pem"),
    };
    let Some(etcd) = Etcd::start_with("tls_with_client_certificates", Some(server)).await else {
        return;
    };
    let tls = TlsFiles {
        ca: p("ca.pem"),
        cert: Some(p("client.pem")),
        key: Some(p("client.key")),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        match EtcdStore::connect(&etcd.endpoints(), Some(tls.clone()), TIMEOUT).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", etcd.log()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(
        s.txn(Txn::new().put("/t", b"1".to_vec()))
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(s.get("/t").await.unwrap().unwrap().value, b"1");

    // Without a client certificate etcd refuses us, and the error says where.
    let no_identity = TlsFiles {
        cert: None,
        key: None,
        ..tls.clone()
    };
    let err = EtcdStore::connect(&etcd.endpoints(), Some(no_identity), TIMEOUT)
        .await
        .err()
        .expect("connected without a client certificate");
    assert!(err.to_string().contains(&etcd.endpoint), "{err}");
    eprintln!("without a client certificate: {err}");
    // A missing file is named.
    let missing = TlsFiles {
        ca: p("nope.pem"),
        ..tls
    };
    let err = EtcdStore::connect(&etcd.endpoints(), Some(missing), TIMEOUT)
        .await
        .err()
        .expect("connected with a missing CA file");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    eprintln!("{err}");
}

#[tokio::test]
async fn keep_alive_rides_out_a_short_etcd_stall() {
    let etcd = etcd_or_skip!("keep_alive_rides_out_a_short_etcd_stall");
    let s = etcd.store().await;
    let lease = s.grant_lease(8).await.unwrap();
    let kept = s.keep_alive(lease).await.unwrap();
    s.put_with_lease("/n/a", b"up".to_vec(), lease)
        .await
        .unwrap();
    // Longer than a request timeout, so at least one refresh fails and its stream is reopened.
    let pid = etcd.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(TIMEOUT + Duration::from_secs(1)).await;
    signal("-CONT");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!kept.is_lost());
    assert!(
        s.get("/n/a").await.unwrap().is_some(),
        "lease lost in a stall"
    );
}

#[tokio::test]
async fn a_txn_touching_one_key_twice_is_a_clear_error() {
    // etcd refuses this outright; the local store would apply the ops in order.
    let etcd = etcd_or_skip!("a_txn_touching_one_key_twice_is_a_clear_error");
    let s = etcd.store().await;
    let err = s
        .txn(Txn::new().put("/a", b"1".to_vec()).delete("/a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/a") && err.contains("duplicate key"), "{err}");
    eprintln!("{err}");
    assert!(s.get("/a").await.unwrap().is_none());
    // Overlapping deletes are fine (removing a network deletes a prefix and keys inside it).
    s.txn(Txn::new().put("/p/1", b"1".to_vec())).await.unwrap();
    let out = s
        .txn(
            Txn::new()
                .delete_prefix("/p/")
                .delete("/p/1")
                .delete("/p/1"),
        )
        .await
        .unwrap();
    assert!(out.succeeded);
    assert!(s.list("/p/").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn hostile_records_in_etcd_are_skipped_by_the_state_read() {
    let etcd = etcd_or_skip!("hostile_records_in_etcd_are_skipped_by_the_state_read");
    let s = etcd.store().await;
    let network = |name: &str, driver: &str| {
        serde_json::json!({
            "name": name, "id": "0123456789ab", "driver": driver, "subnet": "10.0.0.0/24",
            "gateway": "10.0.0.1", "vni": 4096, "created_at": 0
        })
    };
    let task = |name: &str| {
        serde_json::json!({
            "name": name, "service": "web", "slot": 1, "node": "n1", "attachments": [],
            "gateway_address": "172.18.0.5/16", "created_at": 0
        })
    };
    let records = [
        ("/routemesh/networks/app", network("app", "overlay")),
        (
            "/routemesh/networks/next",
            network("next", "from-the-future"),
        ),
        ("/routemesh/tasks/web.1", task("web.1")),
        ("/routemesh/tasks/../x", task("../x")),
        ("/routemesh/tasks/web.2", task("web.2\n")),
    ];
    let mut txn = Txn::new();
    for (k, v) in &records {
        txn = txn.put(*k, v.to_string().into_bytes());
    }
    txn = txn.put("/routemesh/services/broken", b"{not json".to_vec());
    assert!(s.txn(txn).await.unwrap().succeeded);
    let st = routemesh::store::state::read(&s)
        .await
        .expect("the read goes on");
    assert_eq!(st.networks.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(st.tasks.keys().collect::<Vec<_>>(), ["web.1"]);
    let mut skipped: Vec<&str> = st.skipped.values().map(|r| r.key.as_str()).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "/routemesh/networks/next",
            "/routemesh/services/broken",
            "/routemesh/tasks/../x",
            "/routemesh/tasks/web.2",
        ]
    );
}
