//! Waiting for a service to converge after `create` or `scale`, with Docker's progress line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::api::client::{seg, Client};
use crate::model::{DesiredState, TaskState};
use crate::wire::ServiceView;

/// Why a wait ended without convergence.
#[derive(Debug)]
pub enum WaitError {
    TaskCannotStart { task: String, reason: String },
    Timeout { running: usize, wanted: u32 },
    Client(crate::api::client::ClientError),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::TaskCannotStart { task, reason } => {
                write!(f, "task {task} cannot start: {reason}")
            }
            WaitError::Timeout { running, wanted } => write!(
                f,
                "timed out: {running} out of {wanted} tasks running (see `routemesh task ls`)"
            ),
            WaitError::Client(e) => write!(f, "{e}"),
        }
    }
}

/// What the service's tasks say now: converged, still going, or failed.
pub fn judge(v: &ServiceView) -> Result<bool, WaitError> {
    let wanted: Vec<_> = v
        .tasks
        .iter()
        .filter(|t| t.desired == DesiredState::Running)
        .collect();
    for t in &wanted {
        let failed_start = t.state == TaskState::Failed && !t.ever_ran;
        let crash_loop = t.state != TaskState::Running && t.restarts >= 2;
        if failed_start || crash_loop {
            return Err(WaitError::TaskCannotStart {
                task: t.name.clone(),
                reason: t.message.clone(),
            });
        }
    }
    let running = wanted
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    // Done when exactly the wanted tasks run and every task shut down is gone.
    Ok(running == v.service.replicas as usize && v.tasks.len() == v.service.replicas as usize)
}

pub async fn converge(client: &Client, name: &str, timeout: Duration) -> Result<(), WaitError> {
    let tty = std::io::stdout().is_terminal();
    let deadline = Instant::now() + timeout;
    let mut last_shown = None;
    loop {
        let v: ServiceView = client
            .get(&format!("/v1/services/{}", seg(name)))
            .await
            .map_err(WaitError::Client)?;
        let running = v.running as usize;
        let shown = (running, v.service.replicas);
        if last_shown != Some(shown) {
            let msg = format!(
                "overall progress: {running} out of {} tasks",
                v.service.replicas
            );
            if tty {
                print!("\r\x1b[2K{msg}");
            } else {
                println!("{msg}");
            }
            let _ = std::io::stdout().flush();
            last_shown = Some(shown);
        }
        let done = judge(&v);
        if tty && !matches!(done, Ok(false)) {
            println!();
        }
        if done? {
            println!("verify: service {name} converged");
            return Ok(());
        }
        if Instant::now() > deadline {
            if tty {
                println!();
            }
            return Err(WaitError::Timeout {
                running,
                wanted: v.service.replicas,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
