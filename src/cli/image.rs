//! `routemesh image ...`: the node's local OCI images.

use clap::Subcommand;
use routemesh_runtime::image::ImageSummary;

use super::output::{json, table};
use super::Format;
use crate::api::client::{seg, Client};
use crate::wire::ImageLoad;

#[derive(Subcommand, Debug)]
pub(super) enum ImageCmd {
    /// Load the images of an OCI archive (tar) or OCI layout directory into this node's store
    /// (`skopeo copy ... oci-archive:FILE:NAME`, `podman save --format oci-archive`).
    Load {
        /// The archive or directory, on the daemon's machine.
        path: std::path::PathBuf,
        /// Name the image (when the source names none, or to rename it).
        #[arg(long, short = 't')]
        tag: Option<String>,
    },
    /// List this node's images.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove images (refused while a task of this node uses one).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub(super) async fn image(c: &Client, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Load { path, tag } => {
            let path = std::path::absolute(&path)
                .map_err(|e| anyhow::anyhow!("image load {}: {e}", path.display()))?;
            let req = ImageLoad {
                path: path.display().to_string(),
                tag,
            };
            let loaded: Vec<ImageSummary> = c.post("/v1/images/load", &req).await?;
            for i in loaded {
                println!("Loaded image: {} ({})", i.name, short_id(&i.id));
            }
        }
        ImageCmd::Ls { format } => {
            let images: Vec<ImageSummary> = c.get("/v1/images").await?;
            match format {
                Format::Json => print!("{}", json(&images)),
                Format::Table => {
                    let rows: Vec<Vec<String>> = images
                        .iter()
                        .map(|i| {
                            vec![
                                i.name.clone(),
                                short_id(&i.id).to_string(),
                                human_size(i.size),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["NAME", "ID", "SIZE"], &rows));
                }
            }
        }
        ImageCmd::Rm { names } => {
            let mut failed = Vec::new();
            for name in &names {
                match c
                    .delete_json::<ImageSummary>(&format!("/v1/images/{}", seg(name)))
                    .await
                {
                    Ok(i) => println!("Removed: {}", i.name),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!(failed.join("\n"));
            }
        }
    }
    Ok(())
}

/// The first 12 hex digits of a `sha256:...` id, as Docker shows it.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sizes_read_like_dockers() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(human_size(2_400_000), "2.3MB");
        assert_eq!(human_size(512), "512B");
    }
}
