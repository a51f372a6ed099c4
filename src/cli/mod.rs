//! The `routemesh` command line, in Docker's habits.

mod image;
mod network;
mod output;
mod service;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::client::{seg, Client};
use crate::config::DaemonArgs;
use crate::wire::*;
use network::{network, NetworkCmd};
use output::{json, print_tasks, table};
use service::{service, ServiceCmd};

/// `layout::RunDir::new(layout::DEFAULT_RUN_DIR).socket()`, as clap wants a literal.
const DEFAULT_SOCKET: &str = "/run/routemesh/routemesh.sock";

#[derive(Parser, Debug)]
#[command(
    name = "routemesh",
    version,
    about = "A service load balancer and routing mesh for Linux hosts"
)]
pub struct Cli {
    /// The daemon's API socket (a path, or unix://PATH).
    #[arg(long, global = true, env = "ROUTEMESH_HOST", default_value = DEFAULT_SOCKET)]
    host: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the node daemon (store, orchestrator, agent, API).
    Daemon(Box<DaemonArgs>),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// List tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage this node's local OCI images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Run a command inside a task's container (the OCI runtime's `exec`).
    Exec {
        task: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A routing mesh of 3 nodes and etcd on this machine, a service and a curl loop.
    Demo {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Leave it running and print how to reach it.
        #[arg(long)]
        keep: bool,
        /// Where the demo keeps its namespaces and state.
        #[arg(long, default_value = "/tmp/routemesh-demo")]
        dir: PathBuf,
        /// Rounds of the curl loop (one request to every node per round).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Tear down the demo left running (with --keep) in DIR, then exit.
        #[arg(long, value_name = "DIR")]
        down: Option<PathBuf>,
    },
    /// The demo workload: answers with who answered.
    Whoami {
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Answer UDP datagrams instead of HTTP.
        #[arg(long)]
        udp: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    /// List tasks.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        service: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// List nodes.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// This node, and the store records it skipped (damaged, hostile or from a newer version).
    Info {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Daemon(args) => run_daemon(*args),
        Cmd::Whoami { port, udp } => {
            report(runtime().and_then(|rt| rt.block_on(crate::whoami::run(port, udp))))
        }
        Cmd::Exec { task, command } => exec(&socket_path(&cli.host), &task, &command),
        Cmd::Demo {
            nodes,
            keep,
            dir,
            rounds,
            down,
        } => {
            if let Some(dir) = down {
                return report(crate::demo::down(&dir));
            }
            if !(1..=9).contains(&nodes) {
                return report(Err(anyhow::anyhow!("--nodes must be between 1 and 9")));
            }
            let opts = crate::demo::DemoOptions {
                nodes,
                keep,
                dir,
                rounds,
            };
            report(runtime().and_then(|rt| rt.block_on(crate::demo::run(opts))))
        }
        cmd => {
            let client = Client::new(&socket_path(&cli.host));
            report(runtime().and_then(|rt| rt.block_on(dispatch(&client, cmd))))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn socket_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

fn run_daemon(args: DaemonArgs) -> i32 {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    // A ConfigError's message names its cause already: reported as its message alone, since
    // `report`'s `{:#}` would print the cause a second time.
    let file = match &args.config {
        Some(p) => match crate::config::read_file(p) {
            Ok(f) => f,
            Err(e) => return report(Err(anyhow::anyhow!("{e}"))),
        },
        None => Default::default(),
    };
    let cfg = match crate::config::resolve(&args, file, &host) {
        Ok(c) => c,
        Err(e) => return report(Err(anyhow::anyhow!("{e}"))),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    report(runtime().and_then(|rt| rt.block_on(crate::daemon::run(cfg))))
}

fn exec(socket: &std::path::Path, task: &str, command: &[String]) -> i32 {
    let info = runtime().and_then(|rt| {
        rt.block_on(async {
            let c = Client::new(socket);
            Ok(
                c.get::<SandboxInfo>(&format!("/v1/tasks/{}/sandbox", seg(task)))
                    .await?,
            )
        })
    });
    let info = match info {
        Ok(i) => i,
        Err(e) => return report(Err(e)),
    };
    if command.first().is_none_or(|p| p.is_empty()) {
        return report(Err(anyhow::anyhow!("missing command after `--`")));
    }
    let runtime = match routemesh_runtime::oci::OciRuntime::new(&info.runtime, &info.runtime_root) {
        Ok(r) => r,
        Err(e) => return report(Err(anyhow::anyhow!("task {task}: {e}"))),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut cmd = runtime.exec_command(&info.container, command, tty);
    match cmd.status() {
        Ok(st) => st
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)),
        Err(e) => report(Err(anyhow::anyhow!(
            "task {task}: running {}: {e}",
            runtime.binary().display()
        ))),
    }
}

async fn dispatch(c: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Network(n) => network(c, n).await,
        Cmd::Service(s) => service(c, s).await,
        Cmd::Image(i) => image::image(c, i).await,
        Cmd::Task(TaskCmd::Ls { service, format }) => {
            let path = match &service {
                Some(s) => format!("/v1/tasks?service={}", seg(s)),
                None => "/v1/tasks".into(),
            };
            let tasks: Vec<TaskView> = c.get(&path).await?;
            print_tasks(&tasks, format);
            Ok(())
        }
        Cmd::Node(NodeCmd::Ls { format }) => {
            let nodes: Vec<NodeView> = c.get("/v1/nodes").await?;
            match format {
                Format::Json => print!("{}", json(&nodes)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = nodes
                        .iter()
                        .map(|n| {
                            vec![
                                n.name.clone(),
                                format!("{:?}", n.state).to_lowercase(),
                                n.advertise_addr
                                    .map(|a| a.to_string())
                                    .unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["NAME", "STATE", "ADVERTISE ADDRESS"], &rows));
                }
            }
            Ok(())
        }
        Cmd::Node(NodeCmd::Info { format }) => {
            let info: crate::wire::Info = c.get("/v1/info").await?;
            match format {
                Format::Json => print!("{}", json(&info)),
                Format::Table => {
                    println!("node: {}", info.node);
                    println!("store revision: {}", info.revision);
                    println!("skipped store records: {}", info.skipped_records);
                    if !info.skipped.is_empty() {
                        // Keys are shown escaped: a hostile one may hold a newline.
                        let rows: Vec<Vec<String>> = info
                            .skipped
                            .iter()
                            .map(|r| vec![format!("{:?}", r.key), r.reason.clone()])
                            .collect();
                        print!("{}", table(&["KEY", "REASON"], &rows));
                    }
                }
            }
            Ok(())
        }
        Cmd::Daemon(_) | Cmd::Exec { .. } | Cmd::Whoami { .. } | Cmd::Demo { .. } => Ok(()),
    }
}

/// Removes every named object, as Docker does: each success printed, all failures reported.
pub(crate) async fn remove_each(c: &Client, kind: &str, names: &[String]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for name in names {
        match c.delete(&format!("/v1/{kind}/{}", seg(name))).await {
            Ok(()) => println!("{name}"),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(failed.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{RunDir, DEFAULT_RUN_DIR};

    #[test]
    fn the_default_socket_is_the_default_run_dirs() {
        assert_eq!(
            PathBuf::from(DEFAULT_SOCKET),
            RunDir::new(DEFAULT_RUN_DIR).socket()
        );
    }
}
