//! Running commands and reading what they printed.

use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a thread inside {netns} panicked")]
    Panicked { netns: String },
}

/// Runs `program args...` to completion; its standard output when it succeeded.
pub fn run(program: &str, args: &[&str]) -> Result<String, TestError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| TestError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestError::Failed {
            command,
            status: out.status.to_string(),
            stderr: errtext(&out).trim().to_string(),
        });
    }
    Ok(text(&out))
}

/// Runs `cmd` to completion and returns its output, whatever its exit status; panics only
/// when it cannot be started at all.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn errtext(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
