//! [`FakeNft`]: an [`Executor`] for tests that records every transaction and applies it to a
//! [`Ruleset`] the way nft would apply it to the kernel, so a test can look at the script sent
//! and trace packets through what the "kernel" now holds.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::check;
use crate::error::NftError;
use crate::exec::Executor;
use crate::trace::Ruleset;
use crate::txn::Transaction;

#[derive(Debug, Default)]
pub struct FakeNft {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    transactions: Vec<Transaction>,
    failures: VecDeque<String>,
    ruleset: Ruleset,
}

impl FakeNft {
    pub fn new() -> FakeNft {
        FakeNft::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next transaction fails with `message` and changes nothing.
    pub fn fail_next(&self, message: &str) {
        self.inner().failures.push_back(message.to_string());
    }

    /// Every transaction applied so far, failed ones included.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.inner().transactions.clone()
    }

    /// Every transaction's script, failed ones included.
    pub fn scripts(&self) -> Vec<String> {
        self.inner()
            .transactions
            .iter()
            .map(|t| t.render())
            .collect()
    }

    pub fn last_script(&self) -> Option<String> {
        self.inner().transactions.last().map(|t| t.render())
    }

    /// What the kernel would hold after the successful transactions.
    pub fn ruleset(&self) -> Ruleset {
        self.inner().ruleset.clone()
    }
}

impl Executor for FakeNft {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        check::transaction(txn)?;
        let mut inner = self.inner();
        inner.transactions.push(txn.clone());
        if let Some(message) = inner.failures.pop_front() {
            return Err(NftError::Injected(message));
        }
        inner
            .ruleset
            .apply(&txn.render())
            .map_err(|e| NftError::Rejected {
                netns: "a fake".to_string(),
                tables: txn.tables().join(", "),
                message: e.to_string(),
            })
    }
}
