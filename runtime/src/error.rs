//! What can go wrong running a task's container; every message names the container or file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("building the bundle's {what}: {message}")]
    Spec { what: &'static str, message: String },
    #[error("OCI runtime {name:?} not found (looked for {looked})")]
    RuntimeMissing { name: String, looked: String },
    #[error("{runtime} {op} {container}: {message}")]
    Command {
        runtime: String,
        op: &'static str,
        container: String,
        message: String,
    },
    #[error("{runtime} state of {container}: cannot parse its answer: {source}")]
    State {
        runtime: String,
        container: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the root of {container} at {}: {source}", path.display())]
    Mount {
        container: String,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl RuntimeError {
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { op, path, source }
    }
}
