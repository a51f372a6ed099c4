//! `routemesh network ...`

use clap::Subcommand;

use super::output::{json, table};
use super::{remove_each, Format};
use crate::api::client::{seg, Client};
use crate::wire::*;

#[derive(Subcommand, Debug)]
pub(super) enum NetworkCmd {
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
        /// Driver option KEY=VALUE (repeatable): `parent=IF` for macvlan.
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = key_value)]
        opts: Vec<(String, String)>,
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

/// `KEY=VALUE`, or `KEY` alone (a flag option, value "true").
fn key_value(s: &str) -> Result<(String, String), crate::validate::ValidationError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), "true".to_string())),
        _ => Err(crate::validate::ValidationError::NetworkOptionSyntax { value: s.into() }),
    }
}

pub(super) async fn network(c: &Client, cmd: NetworkCmd) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            gateway,
            vni,
            opts,
        } => {
            let req = NetworkCreate {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                vni,
                options: opts.into_iter().collect(),
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
