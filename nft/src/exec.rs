//! Applying transactions: the [`Executor`] trait, and [`NftCmd`], which runs `nft -f -` inside
//! a network namespace. The fake for tests is [`crate::FakeNft`].

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::check;
use crate::error::{netns_label, NftError};
use crate::txn::Transaction;

/// One rule as [`Executor::rules`] reads it back: its chain, and an encoding of the rule that
/// is the same whenever the same rule is added (the kernel's expressions over netlink).
pub type RuleBytes = (String, Vec<u8>);

/// Which of two transactions failed ([`Executor::apply_then`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    First,
    Second,
}

/// Applies one transaction atomically in one namespace: all of it, or nothing.
pub trait Executor: Send + Sync {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError>;

    /// Applies `first`, then `second` when `first` succeeded: two transactions, each atomic.
    /// An executor may prepare `second` while `first` runs ([`crate::NftNetlink`] lists the
    /// sets `second` fills while nft applies `first`); the result is the same as applying
    /// them one after the other.
    fn apply_then(
        &self,
        first: &Transaction,
        second: &Transaction,
    ) -> Result<(), (Step, NftError)> {
        self.apply(first).map_err(|e| (Step::First, e))?;
        self.apply(second).map_err(|e| (Step::Second, e))
    }

    /// Every rule of `table` as the kernel holds it, in chain order: (chain, an encoding of
    /// the rule that is the same whenever the same rule is added). `None` when this executor
    /// cannot read rules without listing the whole table (`nft -f` cannot); owners then
    /// skip the checks that need it.
    fn rules(&self, table: &str) -> Option<Result<Vec<RuleBytes>, NftError>> {
        let _ = table;
        None
    }
}

/// An executor behind a reference or a pointer is that executor: every method forwards.
macro_rules! forward_executor {
    ($($ptr:ty),*) => {$(
        impl<T: Executor + ?Sized> Executor for $ptr {
            fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
                (**self).apply(txn)
            }

            fn apply_then(
                &self,
                first: &Transaction,
                second: &Transaction,
            ) -> Result<(), (Step, NftError)> {
                (**self).apply_then(first, second)
            }

            fn rules(&self, table: &str) -> Option<Result<Vec<RuleBytes>, NftError>> {
                (**self).rules(table)
            }
        }
    )*};
}

forward_executor!(&T, Box<T>, Arc<T>);

/// Runs `nft -f -` as a child process in a namespace, one process per transaction. The
/// calling thread's own namespace never changes: the child is started from a short-lived
/// thread that entered the namespace. Blocks on the child: call it off async workers.
#[derive(Debug, Clone)]
pub struct NftCmd {
    program: PathBuf,
    netns: Option<PathBuf>,
}

impl NftCmd {
    /// nft in the namespace of the calling thread.
    pub fn current() -> NftCmd {
        NftCmd {
            program: PathBuf::from("nft"),
            netns: None,
        }
    }

    /// nft in the namespace whose file is `netns` (`/run/netns/x`, a bind mount of a
    /// namespace, or `/proc/PID/ns/net`).
    pub fn in_netns(netns: impl Into<PathBuf>) -> NftCmd {
        NftCmd {
            program: PathBuf::from("nft"),
            netns: Some(netns.into()),
        }
    }

    /// Another nft binary, or a wrapper with the same interface.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> NftCmd {
        self.program = program.into();
        self
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Runs a script as it is. For tests and tools that must send what the model cannot
    /// express (a script nft refuses, say); product code applies transactions.
    pub fn run_script(&self, script: &str, tables: &str) -> Result<(), NftError> {
        let Some(path) = &self.netns else {
            return self.spawn_here(script, tables);
        };
        // A child inherits the namespaces of the thread that starts it: enter on a thread of
        // our own (never a runtime's worker), and start nft from there without a pre_exec
        // hook, which would make std fork the whole process instead of spawning.
        let label = netns_label(Some(path));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(path).map_err(|source| NftError::Io {
                        netns: label.clone(),
                        op: "opening the namespace".into(),
                        source,
                    })?;
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                        NftError::Io {
                            netns: label.clone(),
                            op: "entering the namespace".into(),
                            source: e.into(),
                        }
                    })?;
                    self.spawn_here(script, tables)
                })
                .join()
                .map_err(|_| NftError::Io {
                    netns: label.clone(),
                    op: "nft runner thread panicked".into(),
                    source: std::io::Error::other("panic"),
                })?
        })
    }

    /// Runs `nft -f -` in the calling thread's namespace.
    fn spawn_here(&self, script: &str, tables: &str) -> Result<(), NftError> {
        let label = netns_label(self.netns.as_deref());
        let io = |op: String| {
            let label = label.clone();
            move |source| NftError::Io {
                netns: label,
                op,
                source,
            }
        };
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("starting {program}")))?;
        let mut stdin = child.stdin.take().ok_or_else(|| NftError::Io {
            netns: label.clone(),
            op: format!("{program}: no stdin pipe"),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        })?;
        // nft reads all of its input before it reports, so writing first cannot deadlock
        // against a full stderr pipe; a thread keeps it that way for any wrapper.
        let text = script.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
        let output = child
            .wait_with_output()
            .map_err(io(format!("waiting for {program}")))?;
        let written = writer.join().map_err(|_| NftError::Io {
            netns: label.clone(),
            op: format!("{program}: stdin writer panicked"),
            source: std::io::Error::other("panic"),
        })?;
        if !output.status.success() {
            return Err(NftError::Rejected {
                netns: label,
                tables: tables.to_string(),
                message: format!(
                    "{program} -f - {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        written.map_err(io(format!("writing the script to {program}")))
    }
}

impl Executor for NftCmd {
    fn apply(&self, txn: &Transaction) -> Result<(), NftError> {
        check::transaction(txn)?;
        self.run_script(&txn.render(), &txn.tables().join(", "))
    }
}
