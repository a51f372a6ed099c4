//! `routemesh service ...`

use clap::Subcommand;

use super::output::{json, print_tasks, table};
use super::{remove_each, Format};
use crate::api::client::{seg, Client};
use crate::api::wait::{wait_converged, CONVERGE_TIMEOUT};
use crate::wire::*;

#[derive(Subcommand, Debug)]
pub(super) enum ServiceCmd {
    /// Create a service and wait for its tasks.
    Create(Box<CreateArgs>),
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

#[derive(clap::Args, Debug)]
pub(super) struct CreateArgs {
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
    /// Run from this local OCI image (see `routemesh image load`); the command after
    /// `--` then replaces the image's Cmd. Without it, the command runs on the host's
    /// root, read-only.
    #[arg(long)]
    image: Option<String>,
    /// Run as uid[:gid] or name[:group] [default: the image's user, or root].
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Memory limit, e.g. 32m or 1g; the kernel OOM-kills the task beyond it.
    #[arg(long)]
    limit_memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Most processes (and threads) the task may have.
    #[arg(long, allow_negative_numbers = true)]
    limit_pids: Option<i64>,
    /// Return at once instead of waiting for the tasks to run.
    #[arg(long, short = 'd')]
    detach: bool,
    #[arg(last = true, required_unless_present = "image")]
    command: Vec<String>,
}

pub(super) async fn service(c: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create(args) => {
            let CreateArgs {
                name,
                replicas,
                networks,
                env,
                publish,
                endpoint_mode,
                lb_scheduler,
                image,
                user,
                limit_memory,
                limit_cpu,
                limit_pids,
                detach,
                command,
            } = *args;
            let req = ServiceCreate {
                name: name.clone(),
                replicas: Some(replicas),
                networks,
                env,
                command,
                endpoint_mode: Some(endpoint_mode),
                publish,
                lb_scheduler: Some(lb_scheduler),
                image,
                user,
                limit_memory,
                limit_cpu,
                limit_pids,
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
