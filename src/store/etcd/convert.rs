//! Between etcd's types and the store's.

use etcd_client as etcd;
use tokio::sync::mpsc;

use crate::store::{Compare, KeyValue, Op, WatchEvent};

pub(super) fn header_revision(header: Option<etcd::ResponseHeader>) -> u64 {
    header.map_or(0, |h| revision(h.revision()))
}

pub(super) fn revision(rev: i64) -> u64 {
    u64::try_from(rev).unwrap_or(0)
}

pub(super) fn key_value(kv: etcd::KeyValue) -> KeyValue {
    let mod_revision = revision(kv.mod_revision());
    let (key, value) = kv.into_key_value();
    KeyValue {
        // routemesh writes only UTF-8 keys; a foreign key is shown, not fatal.
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        mod_revision,
    }
}

pub(super) fn ends_watch(resp: &etcd::WatchResponse) -> bool {
    resp.canceled() || resp.compact_revision() > 0
}

/// Sends a response's events in order; false when the receiver is gone.
pub(super) async fn forward(resp: &etcd::WatchResponse, tx: &mpsc::Sender<WatchEvent>) -> bool {
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let value = match ev.event_type() {
            etcd::EventType::Put => Some(kv.value().to_vec()),
            etcd::EventType::Delete => None,
        };
        let event = WatchEvent {
            revision: revision(kv.mod_revision()),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value,
        };
        if tx.send(event).await.is_err() {
            return false;
        }
    }
    true
}

pub(super) fn etcd_compares(compare: &Compare) -> Vec<etcd::Compare> {
    match compare {
        Compare::Absent(key) => vec![etcd::Compare::create_revision(
            key.as_str(),
            etcd::CompareOp::Equal,
            0,
        )],
        Compare::ModRevision(key, rev) => {
            let rev_i64 = i64::try_from(*rev).unwrap_or(i64::MAX);
            let mut compares = vec![etcd::Compare::mod_revision(
                key.as_str(),
                etcd::CompareOp::Equal,
                rev_i64,
            )];
            // etcd gives a missing key mod_revision 0; the local store never matches one.
            if *rev == 0 {
                compares.push(etcd::Compare::create_revision(
                    key.as_str(),
                    etcd::CompareOp::Greater,
                    0,
                ));
            }
            compares
        }
    }
}

pub(super) fn etcd_op(op: Op) -> etcd::TxnOp {
    match op {
        Op::Put(key, value) => etcd::TxnOp::put(key, value, None),
        Op::Delete(key) => etcd::TxnOp::delete(key, None),
        Op::DeletePrefix(prefix) => {
            etcd::TxnOp::delete(prefix, Some(etcd::DeleteOptions::new().with_prefix()))
        }
    }
}
