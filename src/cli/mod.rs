//! The `routemesh` command line, in Docker's habits.

mod output;

use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::client::{seg, Client};
use crate::api::wait::{wait_converged, CONVERGE_TIMEOUT};
use crate::config::DaemonArgs;
use crate::wire::*;
use output::{json, table};

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
    Daemon(DaemonArgs),
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
    /// Run a command inside a task's network and mount namespaces.
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
enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        #[arg(long, short = 'd', default_value = "overlay")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        /// VXLAN network identifier (overlay only) [default: the next free from 4096].
        #[arg(long)]
        vni: Option<u32>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one network.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceCmd {
    /// Create a service and wait for its tasks.
    Create {
        #[arg(long)]
        name: String,
        /// Number of tasks (signed so that a negative count gets the daemon's clear error).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        replicas: i64,
        #[arg(long = "network")]
        networks: Vec<String>,
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Publish a port: [mode=ingress|host,]PUBLISHED:TARGET[/tcp|/udp] (repeatable).
        #[arg(long = "publish", short = 'p')]
        publish: Vec<String>,
        /// vip (a virtual IP per network) or dnsrr (DNS round robin, no VIP).
        #[arg(long, default_value = "vip")]
        endpoint_mode: String,
        /// IPVS scheduler: rr, wrr, lc, sh or mh (the nftables dataplane picks at random).
        #[arg(long, default_value = "rr")]
        lb_scheduler: String,
        /// Return at once instead of waiting for the tasks to run.
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Change a running service's published ports.
    Update {
        name: String,
        /// Publish another port (same syntax as --publish).
        #[arg(long = "publish-add")]
        publish_add: Vec<String>,
        /// Stop publishing PUBLISHED[/tcp|/udp].
        #[arg(long = "publish-rm")]
        publish_rm: Vec<String>,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// List services.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one service.
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Scale services: NAME=REPLICAS ...
    Scale {
        #[arg(required = true)]
        pairs: Vec<String>,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Show the logs of a service's tasks.
    Logs { name: String },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
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
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Daemon(args) => run_daemon(args),
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
    let Some((prog, args)) = command.split_first() else {
        return report(Err(anyhow::anyhow!("missing command after `--`")));
    };
    let spec = crate::enter::EnterSpec {
        netns: info.netns.into(),
        resolv_conf: info.resolv_conf.into(),
        hosts: info.hosts.into(),
        hostname: info.hostname,
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Err(e) = crate::enter::enter_on_spawn(&mut cmd, &spec, false) {
        return report(Err(anyhow::anyhow!("task {task}: {e}")));
    }
    match cmd.status() {
        Ok(st) => st
            .code()
            .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)),
        Err(e) => report(Err(anyhow::anyhow!("task {task}: running {prog:?}: {e}"))),
    }
}

async fn dispatch(c: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Network(n) => network(c, n).await,
        Cmd::Service(s) => service(c, s).await,
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
        Cmd::Daemon(_) | Cmd::Exec { .. } | Cmd::Whoami { .. } | Cmd::Demo { .. } => Ok(()),
    }
}

async fn network(c: &Client, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            gateway,
            vni,
        } => {
            let req = NetworkCreate {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                vni,
            };
            let net: crate::model::Network = c.post("/v1/networks", &req).await?;
            println!("{}", net.name);
        }
        NetworkCmd::Ls { format } => {
            let nets: Vec<NetworkView> = c.get("/v1/networks").await?;
            match format {
                Format::Json => print!("{}", json(&nets)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = nets
                        .iter()
                        .map(|n| {
                            vec![
                                n.network.id.clone(),
                                n.network.name.clone(),
                                n.network.driver.to_string(),
                                n.network.subnet.to_string(),
                                n.network
                                    .vni
                                    .map(|v| v.to_string())
                                    .unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "VNI"], &rows)
                    );
                }
            }
        }
        NetworkCmd::Inspect { name, format } => {
            let n: NetworkView = c.get(&format!("/v1/networks/{}", seg(&name))).await?;
            match format {
                Format::Json => print!("{}", json(&n)),
                Format::Table => {
                    let rows = vec![
                        vec!["Name".into(), n.network.name.clone()],
                        vec!["ID".into(), n.network.id.clone()],
                        vec!["Driver".into(), n.network.driver.to_string()],
                        vec!["Subnet".into(), n.network.subnet.to_string()],
                        vec!["Gateway".into(), n.network.gateway.to_string()],
                        vec![
                            "VNI".into(),
                            n.network
                                .vni
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "-".into()),
                        ],
                        vec!["Services".into(), n.services.join(", ")],
                    ];
                    print!("{}", table(&["FIELD", "VALUE"], &rows));
                }
            }
        }
        NetworkCmd::Rm { names } => remove_each(c, "networks", &names).await?,
    }
    Ok(())
}

/// Removes every named object, as Docker does: each success printed, all failures reported.
async fn remove_each(c: &Client, kind: &str, names: &[String]) -> anyhow::Result<()> {
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

async fn service(c: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create {
            name,
            replicas,
            networks,
            env,
            publish,
            endpoint_mode,
            lb_scheduler,
            detach,
            command,
        } => {
            let req = ServiceCreate {
                name: name.clone(),
                replicas: Some(replicas),
                networks,
                env,
                command,
                endpoint_mode: Some(endpoint_mode),
                publish,
                lb_scheduler: Some(lb_scheduler),
            };
            let svc: crate::model::Service = c.post("/v1/services", &req).await?;
            println!("{}", svc.id);
            if !detach {
                wait_converged(c, &name, CONVERGE_TIMEOUT).await?;
            }
        }
        ServiceCmd::Update {
            name,
            publish_add,
            publish_rm,
            detach,
        } => {
            let req = ServiceUpdate {
                publish_add,
                publish_rm,
            };
            let _: crate::model::Service = c
                .post(&format!("/v1/services/{}/update", seg(&name)), &req)
                .await?;
            println!("{name}");
            if !detach {
                wait_converged(c, &name, CONVERGE_TIMEOUT).await?;
            }
        }
        ServiceCmd::Ls { format } => {
            let svcs: Vec<ServiceView> = c.get("/v1/services").await?;
            match format {
                Format::Json => print!("{}", json(&svcs)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = svcs
                        .iter()
                        .map(|s| {
                            vec![
                                s.service.id.clone(),
                                s.service.name.clone(),
                                format!("{}/{}", s.running, s.service.replicas),
                                s.service.networks.join(","),
                                ports_text(&s.service.ports),
                                s.service.command.join(" "),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["ID", "NAME", "REPLICAS", "NETWORKS", "PORTS", "COMMAND"],
                            &rows
                        )
                    );
                }
            }
        }
        ServiceCmd::Inspect { name, format } => {
            let s: ServiceView = c.get(&format!("/v1/services/{}", seg(&name))).await?;
            match format {
                Format::Json => print!("{}", json(&s)),
                Format::Table => {
                    let env: Vec<String> = s
                        .service
                        .env
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let rows = vec![
                        vec!["Name".into(), s.service.name.clone()],
                        vec!["ID".into(), s.service.id.clone()],
                        vec![
                            "Replicas".into(),
                            format!("{}/{}", s.running, s.service.replicas),
                        ],
                        vec!["Networks".into(), s.service.networks.join(", ")],
                        vec![
                            "Endpoint mode".into(),
                            format!("{:?}", s.service.endpoint_mode).to_lowercase(),
                        ],
                        vec![
                            "VIPs".into(),
                            s.service
                                .vips
                                .iter()
                                .map(|v| format!("{}={}", v.network, v.address.addr()))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ],
                        vec!["Ports".into(), ports_text(&s.service.ports)],
                        vec!["Env".into(), env.join(" ")],
                        vec!["Command".into(), s.service.command.join(" ")],
                    ];
                    print!("{}", table(&["FIELD", "VALUE"], &rows));
                    println!();
                    print_tasks(&s.tasks, Format::Table);
                }
            }
        }
        ServiceCmd::Scale { pairs, detach } => {
            let mut parsed = Vec::new();
            for p in &pairs {
                let (name, n) = p.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("invalid scale {p:?}: expected SERVICE=REPLICAS")
                })?;
                let n: i64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("invalid scale {p:?}: REPLICAS must be a number")
                })?;
                parsed.push((name.to_string(), n));
            }
            for (name, n) in parsed {
                let _: crate::model::Service = c
                    .post(
                        &format!("/v1/services/{}/scale", seg(&name)),
                        &ServiceScale { replicas: n },
                    )
                    .await?;
                println!("{name} scaled to {n}");
                if !detach {
                    wait_converged(c, &name, CONVERGE_TIMEOUT).await?;
                }
            }
        }
        ServiceCmd::Logs { name } => {
            print!(
                "{}",
                c.get_text(&format!("/v1/services/{}/logs", seg(&name)))
                    .await?
            );
        }
        ServiceCmd::Rm { names } => remove_each(c, "services", &names).await?,
    }
    Ok(())
}

fn ports_text(ports: &[crate::model::PortConfig]) -> String {
    ports
        .iter()
        .map(|p| match p.mode {
            crate::model::PublishMode::Ingress => {
                format!("*:{}->{}/{}", p.published, p.target, p.proto)
            }
            crate::model::PublishMode::Host => {
                format!("host:{}->{}/{}", p.published, p.target, p.proto)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_tasks(tasks: &[TaskView], format: Format) {
    match format {
        Format::Json => print!("{}", json(&tasks)),
        Format::Table => {
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let addrs: Vec<String> = t
                        .addresses
                        .iter()
                        .map(|a| format!("{}={}", a.network, a.address.addr()))
                        .collect();
                    let state = match t.desired {
                        crate::model::DesiredState::Shutdown => "shutdown".to_string(),
                        crate::model::DesiredState::Running => t.state.to_string(),
                    };
                    vec![
                        t.name.clone(),
                        t.node.clone(),
                        state,
                        addrs.join(","),
                        t.message.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "NODE", "STATE", "ADDRESSES", "ERROR"], &rows)
            );
        }
    }
}
