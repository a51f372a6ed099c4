//! Waiting for a service to converge after `create`, `scale` or `update`, printing Docker's
//! progress line on stdout. Used by the CLI and the demo, on top of the API client.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::client::{seg, Client, ClientError};
use crate::model::{DesiredState, TaskState};
use crate::wire::ServiceView;

/// How long `service create/scale/update` (and the demo) wait for the tasks to run.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the tasks must be seen running, the same processes, before the service counts as
/// converged (Docker's `verify` step, shorter): a task that exits right after it started is
/// not mistaken for a running one.
pub const STABLE_FOR: Duration = Duration::from_millis(500);

/// Why a wait ended without convergence, naming the service.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("service {service}: task {task} cannot start: {reason}")]
    TaskCannotStart {
        service: String,
        task: String,
        reason: String,
    },
    #[error("service {service}: timed out: {running} out of {wanted} tasks running (see `routemesh task ls`)")]
    Timeout {
        service: String,
        running: usize,
        wanted: u32,
    },
    #[error("service {service}: timed out: {running} out of {wanted} tasks running, {pending} pending: {reason}")]
    Unplaced {
        service: String,
        running: usize,
        wanted: u32,
        pending: usize,
        reason: String,
    },
    /// The daemon could not be asked. Its error is spelled in the message, so it is not also
    /// `source()`: the CLI prints chains, and would print it twice.
    #[error("service {service}: {error}")]
    Client { service: String, error: ClientError },
}

/// What the service's tasks say now: converged, still going, or failed.
fn judge(service: &str, v: &ServiceView) -> Result<bool, WaitError> {
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
                service: service.to_string(),
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

/// Lines for the slots that became pending, or changed reason, since `shown`: one line per
/// reason, naming its slots (Swarm's "no suitable node" on the progress display).
fn pending_lines(shown: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (task, reason) in now {
        if shown.get(task) != Some(reason) {
            by_reason.entry(reason).or_default().push(task);
        }
    }
    by_reason
        .into_iter()
        .map(|(reason, tasks)| format!("pending: {}: {reason}", tasks.join(", ")))
        .collect()
}

/// A task and the pid it runs as.
type TaskProcess = (String, Option<u32>);

/// Waits until `name` runs all its tasks, for at most `timeout`.
pub async fn wait_converged(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let tty = std::io::stdout().is_terminal();
    let deadline = Instant::now() + timeout;
    let mut last_shown = None;
    // Pending slots already reported, with their reasons.
    let mut shown_pending: BTreeMap<String, String> = BTreeMap::new();
    // Since when the wanted tasks have been running, and as which processes.
    let mut stable: Option<(Instant, Vec<TaskProcess>)> = None;
    loop {
        let v: ServiceView = client
            .get(&format!("/v1/services/{}", seg(name)))
            .await
            .map_err(|error| WaitError::Client {
                service: name.to_string(),
                error,
            })?;
        let running = v.running as usize;
        let pending: BTreeMap<String, String> = v
            .pending
            .iter()
            .map(|t| (t.name.clone(), t.message.clone()))
            .collect();
        for line in pending_lines(&shown_pending, &pending) {
            if tty {
                print!("\r\x1b[2K");
                // The progress line is drawn again below the reason.
                last_shown = None;
            }
            println!("{line}");
        }
        shown_pending = pending;
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
        let done = judge(name, &v);
        if tty && !matches!(done, Ok(false)) {
            println!();
        }
        if done? {
            let mut running: Vec<(String, Option<u32>)> =
                v.tasks.iter().map(|t| (t.name.clone(), t.pid)).collect();
            running.sort();
            match &stable {
                Some((since, seen)) if *seen == running => {
                    if since.elapsed() >= STABLE_FOR {
                        println!("verify: service {name} converged");
                        return Ok(());
                    }
                }
                _ => stable = Some((Instant::now(), running)),
            }
        } else {
            stable = None;
        }
        if Instant::now() > deadline {
            if tty {
                println!();
            }
            if let Some(first) = v.pending.first() {
                return Err(WaitError::Unplaced {
                    service: name.to_string(),
                    running,
                    wanted: v.service.replicas,
                    pending: v.pending.len(),
                    reason: first.message.clone(),
                });
            }
            return Err(WaitError::Timeout {
                service: name.to_string(),
                running,
                wanted: v.service.replicas,
            });
        }
        let pause = if stable.is_some() { 100 } else { 200 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
        rows.iter()
            .map(|(t, r)| (t.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn pending_slots_are_reported_once_per_reason_and_again_when_it_changes() {
        let none = BTreeMap::new();
        let two = map(&[("web.1", "no image"), ("web.2", "no image")]);
        assert_eq!(
            pending_lines(&none, &two),
            ["pending: web.1, web.2: no image"]
        );
        // Nothing new: nothing printed.
        assert!(pending_lines(&two, &two).is_empty());
        // A slot whose reason changed, and a new one, each under its reason (by reason).
        let later = map(&[
            ("web.1", "no image"),
            ("web.2", "network full"),
            ("web.3", "no image"),
        ]);
        assert_eq!(
            pending_lines(&two, &later),
            ["pending: web.2: network full", "pending: web.3: no image"]
        );
        // Slots that got placed are not reported.
        assert!(pending_lines(&later, &none).is_empty());
    }
}
