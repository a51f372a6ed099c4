//! How scripts reach nft. The crate holds no namespace code: the caller's runner executes
//! `nft -f -` in the namespace the backend instance is for.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

/// Applies one `nft -f` script as one transaction; `Err` carries nft's message.
pub trait NftRunner {
    fn run(&self, script: &str) -> Result<(), String>;
}

impl<T: NftRunner + ?Sized> NftRunner for &T {
    fn run(&self, script: &str) -> Result<(), String> {
        (**self).run(script)
    }
}

impl<T: NftRunner + ?Sized> NftRunner for Box<T> {
    fn run(&self, script: &str) -> Result<(), String> {
        (**self).run(script)
    }
}

impl<T: NftRunner + ?Sized> NftRunner for Arc<T> {
    fn run(&self, script: &str) -> Result<(), String> {
        (**self).run(script)
    }
}

/// Runs `nft -f -` as a child process, in the network namespace of the calling thread (a child
/// inherits the namespaces of the thread that forks it).
#[derive(Debug, Clone)]
pub struct CommandRunner {
    program: PathBuf,
}

impl Default for CommandRunner {
    fn default() -> Self {
        CommandRunner {
            program: PathBuf::from("nft"),
        }
    }
}

impl CommandRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Use another nft binary (or a wrapper with the same interface).
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        CommandRunner {
            program: program.into(),
        }
    }
}

impl NftRunner for CommandRunner {
    fn run(&self, script: &str) -> Result<(), String> {
        let program = self.program.display();
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| format!("{program}: no stdin pipe"))?;
        // nft reads all of its input before it reports, so writing first cannot deadlock
        // against a full stderr pipe; a thread keeps it that way for any wrapper.
        let script = script.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {program}: {e}"))?;
        let written = writer
            .join()
            .map_err(|_| format!("{program}: stdin writer panicked"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "{program} -f - {}: {}",
                output.status,
                stderr.trim()
            ));
        }
        written.map_err(|e| format!("writing script to {program}: {e}"))
    }
}

/// Records every script and answers with queued results (success when none is queued): the
/// fake for unit tests of the backend and of its callers.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    scripts: Mutex<Vec<String>>,
    results: Mutex<VecDeque<Result<(), String>>>,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next script run fails with `message`.
    pub fn fail_next(&self, message: &str) {
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Err(message.to_string()));
    }

    /// Every script run so far, failed ones included.
    pub fn scripts(&self) -> Vec<String> {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn last_script(&self) -> Option<String> {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }
}

impl NftRunner for RecordingRunner {
    fn run(&self, script: &str) -> Result<(), String> {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(script.to_string());
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Ok(()))
    }
}
