//! An nft executor for kernel tests and benchmarks: applies through the product's `NftCmd`
//! in a namespace and records every script it sent.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use routemesh_nft::{Executor, NftCmd, NftError, Transaction};

use crate::netns::Netns;

pub struct RecordingNft {
    netns: PathBuf,
    scripts: Mutex<Vec<String>>,
}

impl RecordingNft {
    pub fn new(ns: &Netns) -> Self {
        RecordingNft {
            netns: ns.path(),
            scripts: Mutex::new(Vec::new()),
        }
    }

    pub fn last_script(&self) -> Option<String> {
        self.record().last().cloned()
    }

    /// Runs a script as it is (for tests that send text).
    pub fn run(&self, script: &str) -> Result<(), NftError> {
        self.record().push(script.to_string());
        NftCmd::in_netns(&self.netns).run_script(script, "(test script)")
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.scripts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Executor for RecordingNft {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        self.record().push(txn.render());
        NftCmd::in_netns(&self.netns).apply(txn)
    }
}
