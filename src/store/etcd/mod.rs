//! The many-node store: the same `Store` interface on top of etcd v3. Revisions are etcd's own,
//! transactions are etcd transactions, and watches are etcd watches, so the orchestrator and the
//! agents behave exactly as on the local store. On top of that it offers the two things only a
//! shared store needs: leases (a key that disappears when its owner stops refreshing it) and a
//! leader election made of one compare-and-set transaction. See `docs/etcd.md`.

mod convert;
mod errors;
mod lease;

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as etcd;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{KeyValue, Op, Result, Store, StoreError, Txn, TxnOutcome, WatchEvent};
use convert::{ends_watch, etcd_compares, etcd_op, forward, header_revision, key_value};
use errors::tls_options;
pub use errors::{EtcdFailure, TlsError, TlsFile, UrlProblem};
pub use lease::LeaseKeepAlive;
use lease::{follow_leader, refresh_lease};

/// The lease TTL a daemon registers its node with unless told otherwise.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;

/// Events a watcher may fall behind by before the etcd stream is paused (not dropped).
const WATCH_BUFFER: usize = 1024;
/// A full read of the cluster state can be large; etcd's own default cap is 4 MiB.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// HTTP/2 pings on busy connections, so a vanished etcd breaks watches instead of hanging them.
/// etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`).
const TRANSPORT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a leader observer waits before reading the leader key again after its watch broke.
const OBSERVE_RETRY: Duration = Duration::from_secs(1);

/// PEM files for a TLS connection to etcd (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`).
/// `cert` and `key` are the client identity, needed when etcd runs with `--client-cert-auth`;
/// give both or neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// An etcd lease: keys put with it are deleted when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    client: etcd::Client,
    kv: etcd::KvClient,
    /// The endpoints as given, for error messages.
    endpoints: String,
    /// Bounds every request that expects an answer (not the life of a watch).
    timeout: Duration,
}

/// Turns `etcd://host:port[,host:port...]` (the `--store` form) into endpoint strings.
pub fn endpoints_from_url(url: &str) -> Result<Vec<String>> {
    let bad = |problem: UrlProblem| StoreError::EtcdUrl {
        url: url.to_string(),
        problem,
    };
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| bad(UrlProblem::NoScheme))?;
    let endpoints: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(bad(UrlProblem::NoEndpoint));
    }
    if let Some(e) = endpoints.iter().find(|e| !e.contains(':')) {
        return Err(bad(UrlProblem::NoPort {
            endpoint: e.clone(),
        }));
    }
    Ok(endpoints)
}

/// The endpoints a connection without TLS would reach in plaintext on another machine:
/// every one but `https://` URLs and loopback hosts (`127.0.0.0/8`, `::1`, `localhost`). Keys,
/// services' environments and leases cross the network readable and forgeable there.
pub fn plaintext_remote(endpoints: &[String], tls: bool) -> Vec<String> {
    if tls {
        return Vec::new();
    }
    endpoints
        .iter()
        .filter(|e| {
            if e.starts_with("https://") {
                return false;
            }
            let rest = e.strip_prefix("http://").unwrap_or(e);
            let host_port = rest.split('/').next().unwrap_or(rest);
            let host = match host_port.strip_prefix('[') {
                // [v6]:port
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None => host_port
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(host_port),
            };
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            !loopback
        })
        .cloned()
        .collect()
}

impl EtcdStore {
    /// Connects and proves the connection with one request, all within `timeout`: an
    /// unreachable etcd is an `Etcd` error naming the endpoints, never a hang.
    /// Endpoints are `host:port` (or `http://`/`https://` URLs); with `tls` a bare
    /// `host:port` is reached over TLS.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<TlsFiles>,
        timeout: Duration,
    ) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::NoEndpoint);
        }
        let shown = endpoints.join(",");
        let exposed = plaintext_remote(endpoints, tls.is_some());
        if !exposed.is_empty() {
            tracing::warn!(
                endpoints = %exposed.join(","),
                "INSECURE: talking to etcd on another machine in PLAINTEXT: anyone on the path \
                 can read the cluster state (services' environments included) and forge it; \
                 run etcd with TLS and give --etcd-cacert (and --etcd-cert/--etcd-key)"
            );
        }
        let mut options = etcd::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(TRANSPORT_PING_INTERVAL, timeout);
        if let Some(tls) = &tls {
            let tls = tls_options(tls).map_err(|tls| StoreError::EtcdTls {
                endpoints: shown.clone(),
                tls,
            })?;
            options = options.with_tls(tls);
        }
        let connecting = |failure| StoreError::Etcd {
            endpoints: shown.clone(),
            what: "connecting".into(),
            failure,
        };
        let client =
            match tokio::time::timeout(timeout, etcd::Client::connect(endpoints, Some(options)))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(connecting(EtcdFailure::Client(e))),
                Err(_) => return Err(connecting(EtcdFailure::NoAnswer(timeout))),
            };
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let store = EtcdStore {
            client,
            kv,
            endpoints: shown.clone(),
            timeout,
        };
        let mut maintenance = store.client.maintenance_client();
        store
            .call("checking the connection", maintenance.status())
            .await?;
        Ok(store)
    }

    fn failed(&self, what: &str, failure: EtcdFailure) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            what: what.to_string(),
            failure,
        }
    }

    /// Runs one request with the store's timeout and names what failed.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = std::result::Result<T, etcd::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.failed(what, EtcdFailure::Client(e))),
            Err(_) => Err(self.failed(what, EtcdFailure::NoAnswer(self.timeout))),
        }
    }

    /// One key and the store revision the read saw.
    async fn get_at(&self, key: &str) -> Result<(Option<KeyValue>, u64)> {
        let mut kv = self.kv.clone();
        let mut resp = self.call(&format!("get {key}"), kv.get(key, None)).await?;
        let revision = header_revision(resp.take_header());
        Ok((resp.take_kvs().into_iter().next().map(key_value), revision))
    }

    /// Grants a lease of `ttl_secs` (etcd may round a very short TTL up to its minimum).
    pub async fn grant_lease(&self, ttl_secs: u64) -> Result<LeaseId> {
        let mut lease = self.client.lease_client();
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let resp = self
            .call(
                &format!("granting a {ttl_secs}s lease"),
                lease.grant(ttl, None),
            )
            .await?;
        Ok(LeaseId(resp.id()))
    }

    /// Revokes a lease now: every key put with it is deleted at once (a clean shutdown).
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.client.lease_client();
        self.call(&format!("revoking lease {lease}"), client.revoke(lease.0))
            .await?;
        Ok(())
    }

    /// Starts refreshing `lease` in the background, three times per TTL, reconnecting its
    /// stream as needed. The returned handle reports when the lease is lost: etcd says it
    /// expired or was revoked, or no refresh succeeded for a whole TTL. Dropping the handle
    /// stops the refreshing (the lease then expires after its TTL).
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<LeaseKeepAlive> {
        let mut client = self.client.lease_client();
        let info = self
            .call(
                &format!("reading lease {lease}"),
                client.time_to_live(lease.0, None),
            )
            .await?;
        if info.ttl() <= 0 {
            return Err(self.failed(
                &format!("keeping lease {lease} alive"),
                EtcdFailure::LeaseGone,
            ));
        }
        let granted = Duration::from_secs(u64::try_from(info.granted_ttl()).unwrap_or(1).max(1));
        let left = Duration::from_secs(u64::try_from(info.ttl()).unwrap_or(0));
        let (lost_tx, lost_rx) = watch::channel(None);
        let task = tokio::spawn(refresh_lease(
            self.clone(),
            lease,
            granted,
            Instant::now() + left,
            lost_tx,
        ));
        Ok(LeaseKeepAlive {
            lease,
            lost: lost_rx,
            task,
        })
    }

    /// Puts `key` so that it lives only as long as `lease`. Returns the write's revision.
    pub async fn put_with_lease(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<u64> {
        let mut kv = self.kv.clone();
        let options = etcd::PutOptions::new().with_lease(lease.0);
        let mut resp = self
            .call(
                &format!("put {key} with lease {lease}"),
                kv.put(key, value, Some(options)),
            )
            .await?;
        Ok(header_revision(resp.take_header()))
    }

    /// Tries to become leader: writes `key` = `value` under `lease` only if `key` does not
    /// exist. True when this lease holds the key (also if it already did), false when another
    /// does. The key goes away with the lease, which is how leadership ends.
    pub async fn campaign(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<bool> {
        let txn = etcd::Txn::new()
            .when([etcd::Compare::create_revision(
                key,
                etcd::CompareOp::Equal,
                0,
            )])
            .and_then([etcd::TxnOp::put(
                key,
                value,
                Some(etcd::PutOptions::new().with_lease(lease.0)),
            )])
            .or_else([etcd::TxnOp::get(key, None)]);
        let mut kv = self.kv.clone();
        let resp = self
            .call(&format!("campaigning for {key}"), kv.txn(txn))
            .await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            etcd::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        Ok(holder == Some(lease.0))
    }

    /// Gives up leadership: deletes `key` if `lease` holds it. True when it did.
    pub async fn resign(&self, key: &str, lease: LeaseId) -> Result<bool> {
        let txn = etcd::Txn::new()
            .when([etcd::Compare::lease(key, etcd::CompareOp::Equal, lease.0)])
            .and_then([etcd::TxnOp::delete(key, None)]);
        let mut kv = self.kv.clone();
        let resp = self.call(&format!("resigning {key}"), kv.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    /// The current value of a leader key (None: no leader), kept up to date in the
    /// background until every receiver is dropped. After a broken watch it reads the key again,
    /// so a missed change cannot leave a stale leader; while etcd is unreachable the last
    /// value stays.
    pub async fn observe_leader(&self, key: &str) -> Result<watch::Receiver<Option<Vec<u8>>>> {
        let (current, revision) = self.get_at(key).await?;
        let (tx, rx) = watch::channel(current.map(|kv| kv.value));
        tokio::spawn(follow_leader(self.clone(), key.to_string(), revision, tx));
        Ok(rx)
    }

    /// An etcd watch on `key` (or every key under it) from `after_revision + 1`, forwarded
    /// into a channel that closes when the watch is cancelled, compacted away or broken.
    async fn watch_from(
        &self,
        key: &str,
        prefix: bool,
        after_revision: u64,
    ) -> Result<mpsc::Receiver<WatchEvent>> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let start = i64::try_from(after_revision.saturating_add(1)).unwrap_or(i64::MAX);
        let mut options = etcd::WatchOptions::new().with_start_revision(start);
        if prefix {
            options = options.with_prefix();
        }
        let what = format!("watch {key} after revision {after_revision}");
        let mut client = self.client.watch_client();
        let mut stream = self.call(&what, client.watch(key, Some(options))).await?;
        // The first answer says whether the watch exists: a compacted start revision cancels
        // it at once, and the closed channel tells the caller to read everything again.
        match self.call(&what, stream.message()).await? {
            Some(resp) if !ends_watch(&resp) => {
                if !forward(&resp, &tx).await {
                    return Ok(rx);
                }
            }
            _ => return Ok(rx),
        }
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = stream.message() => next,
                    _ = tx.closed() => return,
                };
                match next {
                    Ok(Some(resp)) => {
                        if !forward(&resp, &tx).await || ends_watch(&resp) {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        });
        Ok(rx)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.get_at(key).await?.0)
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let mut kv = self.kv.clone();
        let options = etcd::GetOptions::new().with_prefix();
        let mut resp = self
            .call(&format!("list {prefix}"), kv.get(prefix, Some(options)))
            .await?;
        let revision = header_revision(resp.take_header());
        // etcd returns a range sorted by key, as the trait promises.
        let kvs = resp.take_kvs().into_iter().map(key_value).collect();
        Ok((kvs, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let what = match txn.ops.first() {
            Some(Op::Put(k, _) | Op::Delete(k) | Op::DeletePrefix(k)) => {
                format!("transaction writing {k} and {} more", txn.ops.len() - 1)
            }
            None => "transaction".to_string(),
        };
        let compares: Vec<etcd::Compare> = txn.compares.iter().flat_map(etcd_compares).collect();
        let ops: Vec<etcd::TxnOp> = txn.ops.into_iter().map(etcd_op).collect();
        let request = etcd::Txn::new().when(compares).and_then(ops);
        let mut kv = self.kv.clone();
        let mut resp = self.call(&what, kv.txn(request)).await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.take_header()),
        })
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>> {
        self.watch_from(prefix, true, after_revision).await
    }
}

#[cfg(test)]
mod tests;
