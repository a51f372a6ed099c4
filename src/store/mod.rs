//! Where the cluster state lives: a small etcd-shaped key-value interface (revisions,
//! compare-and-set transactions, prefix watches), with a local-file backend for one node.
//! An etcd backend implements the same trait, so the orchestrator and agents never know which.

pub mod cache;
pub mod etcd;
pub mod keys;
pub mod local;
pub mod state;

use async_trait::async_trait;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store file {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("store file {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("decoding {key} from the store: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    /// A value could not be turned into JSON, so nothing was written.
    #[error("encoding {key} for the store: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    /// The informer cache did not reach a revision the store had (its watch is stuck).
    #[error("store cache: still at revision {have}, waited for {revision}")]
    Behind { revision: u64, have: u64 },
    #[error("store etcd url {url:?}: {problem}")]
    EtcdUrl {
        url: String,
        problem: etcd::UrlProblem,
    },
    /// `connect` was given an empty list (the message keeps the list's place, empty).
    #[error("store etcd at : no endpoint given")]
    NoEndpoint,
    // The two etcd variants below spell their cause in the message and so do not also return
    // it as `source()`: a chain printer (anyhow's `{:#}`, at daemon start) shows it once.
    /// The TLS files could not be used; nothing was dialled.
    #[error("store etcd at {endpoints}: {tls}")]
    EtcdTls {
        endpoints: String,
        tls: etcd::TlsError,
    },
    /// A request to etcd failed; `what` says which (`get /routemesh/...`, `connecting`).
    #[error("store etcd at {endpoints}: {what}: {failure}")]
    Etcd {
        endpoints: String,
        what: String,
        failure: etcd::EtcdFailure,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// A condition a transaction checks before it writes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist (a claim nobody holds yet).
    Absent(String),
    /// The key exists and was last written at this revision (optimistic update).
    ModRevision(String, u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    DeletePrefix(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }
    pub fn when_absent(mut self, key: impl Into<String>) -> Txn {
        self.compares.push(Compare::Absent(key.into()));
        self
    }
    pub fn when_revision(mut self, key: impl Into<String>, rev: u64) -> Txn {
        self.compares.push(Compare::ModRevision(key.into(), rev));
        self
    }
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Txn {
        self.ops.push(Op::Put(key.into(), value));
        self
    }
    /// Puts `value` as JSON. Fails, rather than storing an empty value, when `value` does not
    /// serialise.
    pub fn put_json<T: serde::Serialize>(self, key: impl Into<String>, value: &T) -> Result<Txn> {
        let key = key.into();
        match serde_json::to_vec(value) {
            Ok(bytes) => Ok(self.put(key, bytes)),
            Err(source) => Err(StoreError::Encode { key, source }),
        }
    }
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete(key.into()));
        self
    }
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Txn {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: u64,
    pub key: String,
    /// None when the key was deleted.
    pub value: Option<Vec<u8>>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key under `prefix`, sorted, with the store revision the read saw.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)>;
    /// Applies `ops` atomically if every compare holds; nothing is written otherwise.
    /// The write is durable before this returns.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome>;
    /// The store's current revision (one small request; no keys are read).
    async fn revision(&self) -> Result<u64> {
        // No key lies under this prefix: routemesh's keys start with `/`.
        Ok(self.list("\u{1}revision").await?.1)
    }
    /// Changes under `prefix` after `after_revision`, in order.
    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<mpsc::Receiver<WatchEvent>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_json_refuses_what_does_not_serialise() {
        // JSON object keys must be strings.
        let value: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        let err = Txn::new().put_json("/k", &value).unwrap_err();
        assert!(
            matches!(&err, StoreError::Encode { key, .. } if key == "/k"),
            "{err}"
        );
        let txn = Txn::new().put_json("/k", &1).unwrap();
        assert_eq!(txn.ops, [Op::Put("/k".into(), b"1".to_vec())]);
    }
}
