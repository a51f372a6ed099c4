//! [`FakeNft`]: an [`Executor`] for tests that records every transaction and applies it to a
//! [`Ruleset`] the way nft would apply it to the kernel, so a test can look at the script sent
//! and trace packets through what the "kernel" now holds.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::check;
use crate::error::NftError;
use crate::exec::{Executor, RuleBytes};
use crate::trace::Ruleset;
use crate::txn::Transaction;

#[derive(Debug, Default)]
pub struct FakeNft {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    transactions: Vec<Transaction>,
    /// Per coming transaction: `Some` fails it.
    failures: VecDeque<Option<String>>,
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
        self.inner().failures.push_back(Some(message.to_string()));
    }

    /// The transaction after the next `skip` ones fails with `message` (`fail_at(0, m)` is
    /// `fail_next(m)`).
    pub fn fail_at(&self, skip: usize, message: &str) {
        let mut inner = self.inner();
        inner.failures.extend(std::iter::repeat_n(None, skip));
        inner.failures.push_back(Some(message.to_string()));
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

impl FakeNft {
    /// Changes what the "kernel" holds behind the owner's back (drift), as `nft -f` would.
    pub fn tamper(&self, script: &str) -> Result<(), NftError> {
        self.inner()
            .ruleset
            .apply(script)
            .map_err(|e| NftError::Rejected {
                netns: "a fake".to_string(),
                tables: "tampered".to_string(),
                message: e.to_string(),
            })
    }
}

impl Executor for FakeNft {
    fn rules(&self, table: &str) -> Option<Result<Vec<RuleBytes>, NftError>> {
        Some(Ok(self.inner().ruleset.rule_fingerprints(table)))
    }

    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        check::transaction(txn)?;
        let mut inner = self.inner();
        inner.transactions.push(txn.clone());
        if let Some(Some(message)) = inner.failures.pop_front() {
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
