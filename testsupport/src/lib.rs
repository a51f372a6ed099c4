//! What every routemesh test and benchmark needs around the code under test, written once:
//! a loud root check, unique names, commands with their output, network namespaces that
//! are deleted (with every process in them) when dropped, threads that enter a namespace,
//! polls with a deadline, and an nft executor that records what it sent.
//!
//! Helpers named like assertions (`sh_ok`, `wait_for`) panic with a message, as a failing
//! test should; everything else returns [`TestError`], so a benchmark can use `?`.

mod cmd;
mod netns;
mod nft;
pub mod oci_image;
mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

pub use cmd::{errtext, output, run, text, TestError};
pub use netns::{in_netns, nsenter, veth, ChildGuard, Netns};
pub use nft::RecordingNft;
pub use wait::{wait_for, wait_for_or_timeout};

/// Whether this process runs as root (kernel tests need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when a kernel test may run; prints a loud `SKIPPED` line otherwise (never a silent
/// pass). CI runs as root, so there they always run.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: kernel tests need root (CI runs them as root)");
    false
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (`rmt<pid><label><n>`), for namespaces,
/// links and directories a test makes. Keep `label` short: interface names stop at 15 bytes.
pub fn unique(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("rmt{}{}{}", std::process::id() % 100_000, label, n)
}
