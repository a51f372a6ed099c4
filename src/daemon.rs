//! `routemesh daemon`: store, agent, orchestrator and API, wired together.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::agent::plan::NodeContext;
use crate::agent::runner::TaskRuntime;
use crate::agent::Agent;
use crate::api::server::{router, App};
use crate::config::{DaemonConfig, StoreSpec};
use crate::control::{Control, ControlConfig};
use crate::membership::{self, Membership};
use crate::model::{Node, NodeState};
use crate::orchestrator::Orchestrator;
use crate::store::etcd::{EtcdStore, TlsFiles};
use crate::store::local::LocalStore;
use crate::store::Store;
use routemesh_runtime::image::ImageStore;
use routemesh_runtime::oci::OciRuntime;

/// Holds the run dir's lock for the daemon's lifetime: one daemon per run dir.
struct RunDirLock(#[allow(dead_code)] std::fs::File);

fn lock_run_dir(cfg: &DaemonConfig) -> anyhow::Result<RunDirLock> {
    let path = crate::layout::RunDir::new(&cfg.run_dir).lock_file();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        bail!(
            "another routemesh daemon is using run dir {}",
            cfg.run_dir.display()
        );
    }
    Ok(RunDirLock(f))
}

/// Why the daemon will not use its state or run dir.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{role} {path}: {op}: {source}")]
    Io {
        role: &'static str,
        path: std::path::PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("refusing {role} {path}: it is a symlink; give the real directory")]
    Symlink {
        role: &'static str,
        path: std::path::PathBuf,
    },
    #[error("refusing {role} {path}: not a directory")]
    NotDirectory {
        role: &'static str,
        path: std::path::PathBuf,
    },
    #[error("refusing {role} {path}: owned by uid {uid}, not by the daemon's user (uid {ours})")]
    Owner {
        role: &'static str,
        path: std::path::PathBuf,
        uid: u32,
        ours: u32,
    },
    #[error("refusing {role} {path}: other users can write it (mode {mode:04o}); `chmod go-w` it or use another")]
    Writable {
        role: &'static str,
        path: std::path::PathBuf,
        mode: u32,
    },
    #[error("another routemesh daemon{} is using state dir {path}", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        path: std::path::PathBuf,
        holder: Option<u32>,
    },
}

/// Creates `path` (with `mode`) if missing, then refuses it when it is a symlink, not a
/// directory, someone else's, or writable by group or others: whoever can write there could
/// plant namespaces, sockets or desired state. Then narrows it to `mode`.
fn secure_dir(role: &'static str, path: &std::path::Path, mode: u32) -> Result<(), DirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |op: &'static str| {
        move |source| DirError::Io {
            role,
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    // Parents as `mkdir -p` makes them; only the directory itself gets `mode`.
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating its parent"))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating")(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io("reading its metadata"))?;
    let path = path.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(DirError::Symlink { role, path });
    }
    if !meta.is_dir() {
        return Err(DirError::NotDirectory { role, path });
    }
    let ours = nix::unistd::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(DirError::Owner {
            role,
            path,
            uid: meta.uid(),
            ours,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(DirError::Writable {
            role,
            path,
            mode: meta.mode() & 0o7777,
        });
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        DirError::Io {
            role,
            path: path.clone(),
            op: "setting its mode",
            source,
        }
    })
}

/// Holds the state dir's lock for the daemon's lifetime: one daemon per state dir (two would
/// overwrite each other's `state.json` and both act as the node).
struct StateDirLock(#[allow(dead_code)] std::fs::File);

fn lock_state_dir(state_dir: &std::path::Path) -> Result<StateDirLock, DirError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("daemon.lock");
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| DirError::Io {
            role: "state dir lock",
            path,
            op,
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io("opening"))?;
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io("locking")(err));
        }
        let mut text = String::new();
        let holder = f
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| text.trim().parse().ok());
        return Err(DirError::Locked {
            path: state_dir.to_path_buf(),
            holder,
        });
    }
    // Who holds it, for the next daemon's message.
    f.set_len(0).map_err(io("truncating"))?;
    f.rewind().map_err(io("rewinding"))?;
    writeln!(f, "{}", std::process::id()).map_err(io("writing the pid"))?;
    Ok(StateDirLock(f))
}

/// The OCI runtime, the image store and the security profile every task container gets. A
/// runtime that is not installed stops the daemon here, with its name.
fn task_runtime(cfg: &DaemonConfig) -> anyhow::Result<Arc<TaskRuntime>> {
    let run = crate::layout::RunDir::new(&cfg.run_dir);
    let oci = OciRuntime::new(&cfg.runtime, run.runtime_root())
        .map_err(|e| anyhow::anyhow!("--runtime: {e}"))?;
    let images_dir = cfg.state_dir.join("images");
    let images = ImageStore::open(&images_dir)
        .map_err(|e| anyhow::anyhow!("opening the image store {}: {e}", images_dir.display()))?;
    let seccomp = routemesh_runtime::seccomp::default_profile()
        .map_err(|e| anyhow::anyhow!("the default seccomp profile: {e}"))?;
    // Container processes are reparented to us when the runtime's CLI exits, so their exit
    // status (and an OOM kill) can be told.
    crate::agent::exit::become_subreaper().context("becoming the tasks' subreaper")?;
    let cgroup_parent = format!(
        "/routemesh/{}-{:08x}",
        cfg.node_name,
        crate::agent::plan::fnv32(&cfg.run_dir.to_string_lossy())
    );
    let file = run.cgroup_parent_file();
    std::fs::write(&file, &cgroup_parent).with_context(|| format!("writing {}", file.display()))?;
    Ok(Arc::new(TaskRuntime {
        oci,
        images: Arc::new(images),
        seccomp,
        hidden: vec![cfg.run_dir.clone(), cfg.state_dir.clone()],
        cgroup_parent,
    }))
}

pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("routemesh daemon must run as root (it creates namespaces and links)");
    }
    let dataplane = choose_dataplane(&cfg)?;
    // Root's alone: the state holds services' environments; the run dir is searchable (task
    // files are reached by path), writable by root only.
    secure_dir("state dir", &cfg.state_dir, 0o700)?;
    secure_dir("run dir", &cfg.run_dir, 0o711)?;
    let _state_lock = lock_state_dir(&cfg.state_dir)?;
    let _lock = lock_run_dir(&cfg)?;
    let tasks = task_runtime(&cfg)?;
    let (store, membership) = open_store(&cfg).await?;
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let ctx = NodeContext {
        node: cfg.node_name.clone(),
        run: crate::layout::RunDir::new(cfg.run_dir.clone()),
        advertise_addr: cfg.advertise_addr,
        gwbridge_subnet: cfg.gwbridge_subnet,
        task_path: path_var.clone(),
    };
    let socket = cfg.socket();
    // One in-memory copy of the store, followed by watch: what the API, the orchestrator and
    // the agent read.
    let cache = crate::store::cache::Cache::start(store.clone())
        .await
        .context("listing the store")?;
    let control = Control {
        store: store.clone(),
        cache: cache.clone(),
        cfg: ControlConfig {
            pool: crate::ipam::DEFAULT_POOL.parse().context("default pool")?,
            pool_prefix: crate::ipam::DEFAULT_POOL_PREFIX,
            gwbridge_subnet: cfg.gwbridge_subnet,
            esp: esp_available().await,
        },
    };
    // A ControlError's message names its cause already; through `.context`, anyhow's `{:#}`
    // would print that cause a second time.
    control
        .ensure_ingress_network(cfg.ingress_subnet)
        .await
        .map_err(|e| anyhow::anyhow!("creating the ingress network: {e}"))?;
    let leading = membership::join(
        membership,
        Node {
            name: cfg.node_name.clone(),
            advertise_addr: cfg.advertise_addr,
            state: NodeState::Ready,
            api_socket: socket.display().to_string(),
            run_dir: cfg.run_dir.display().to_string(),
            updated_at: crate::model::now_secs(),
            images: crate::api::images::names(&tasks.images),
        },
    )
    .await
    .context("joining the cluster")?;
    let dns_upstreams = if cfg.dns.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        routemesh_dns::ForwarderConfig::from_resolv_conf(&text).upstreams
    } else {
        cfg.dns.clone()
    };
    Agent {
        store: store.clone(),
        cache: cache.clone(),
        ctx: ctx.clone(),
        api_socket: socket.display().to_string(),
        dns_upstreams,
        dns_ttl: cfg.dns_ttl,
        dataplane,
        tasks: tasks.clone(),
    }
    .start()
    .await
    .context("starting the node agent")?;
    tokio::spawn(
        Orchestrator {
            store: store.clone(),
            cache: cache.clone(),
            gwbridge_subnet: cfg.gwbridge_subnet,
            leading,
            key_rotation: cfg.ipsec_key_rotation,
        }
        .run(),
    );

    let app = Arc::new(App {
        control,
        ctx,
        path_var,
        tasks,
    });
    // A socket left by a daemon that died is ours to replace: we hold the run dir's lock.
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("securing {}", socket.display()))?;
    tracing::info!(node = %cfg.node_name, socket = %socket.display(), "routemesh daemon ready");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the API")?;
    // Tasks keep running: the next daemon adopts them.
    tracing::info!("routemesh daemon stopped; tasks keep running");
    Ok(())
}

/// Settles `--dataplane`: `auto` takes IPVS where the kernel has it; `ipvs` on a kernel
/// without it refuses to start (Docker fails quietly there).
fn choose_dataplane(cfg: &DaemonConfig) -> anyhow::Result<crate::agent::apply::lb::Kind> {
    use crate::agent::apply::lb::Kind;
    use crate::config::Dataplane;
    let ipvs = Kind::Ipvs(cfg.ipvs_timeouts);
    let kind = match cfg.dataplane {
        Dataplane::Nftables => {
            tracing::info!("dataplane: nftables (asked for with --dataplane nftables)");
            Kind::Nftables
        }
        Dataplane::Ipvs => match routemesh_lb::ipvs::ipvs_available() {
            Ok(()) => {
                tracing::info!("dataplane: ipvs (asked for with --dataplane ipvs)");
                ipvs
            }
            Err(why) => bail!("--dataplane ipvs refused: {why}; use --dataplane nftables or auto"),
        },
        Dataplane::Auto => match routemesh_lb::ipvs::ipvs_available() {
            Ok(()) => {
                tracing::info!("dataplane: ipvs (auto: the kernel has IPVS)");
                ipvs
            }
            Err(why) => {
                tracing::info!("dataplane: nftables (auto: no IPVS in this kernel: {why})");
                Kind::Nftables
            }
        },
    };
    Ok(kind)
}

async fn open_store(cfg: &DaemonConfig) -> anyhow::Result<(Arc<dyn Store>, Membership)> {
    Ok(match &cfg.store {
        StoreSpec::Local => {
            let s: Arc<dyn Store> = Arc::new(
                LocalStore::open(&cfg.state_dir.join("state.json"))
                    .context("opening the local store")?,
            );
            (s.clone(), Membership::Local(s))
        }
        StoreSpec::Etcd {
            endpoints,
            cacert,
            cert,
            key,
            lease_ttl,
        } => {
            let tls = cacert.as_ref().map(|ca| TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            });
            let etcd = Arc::new(
                EtcdStore::connect(endpoints, tls, std::time::Duration::from_secs(5))
                    .await
                    .context("connecting to etcd")?,
            );
            let s: Arc<dyn Store> = etcd.clone();
            (
                s,
                Membership::Etcd {
                    store: etcd,
                    ttl: *lease_ttl,
                },
            )
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Whether this kernel does IPsec ESP with AES-GCM (an SA added and removed again in the
/// node's namespace); said in the log either way.
async fn esp_available() -> bool {
    let probe = tokio::task::spawn_blocking(|| {
        routemesh_netdev::xfrm::Xfrm::open(None).and_then(|x| x.esp_supported())
    })
    .await;
    match probe {
        Ok(Ok(true)) => {
            tracing::info!("IPsec ESP: available (encrypted overlays can be created here)");
            true
        }
        Ok(Ok(false)) => {
            tracing::info!("IPsec ESP: not available in this kernel (no --opt encrypted here)");
            false
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "IPsec ESP: not available (XFRM cannot be used)");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "IPsec ESP: not available (the probe failed)");
            false
        }
    }
}
