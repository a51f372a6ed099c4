//! The daemon's HTTP/JSON API on `<run-dir>/routemesh.sock`. Handlers validate, then call
//! `control`; reads come straight from the store.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::{ApiError, Object};
use crate::agent::plan::NodeContext;
use crate::control::{Control, ControlError, Subject};
use crate::layout::RunDir;
use crate::model::{ClusterState, DesiredState, Network, Task, TaskState};
use crate::validate;
use crate::wire::*;

pub struct App {
    pub control: Control,
    pub ctx: NodeContext,
    /// PATH used to check that a service's command exists.
    pub path_var: String,
    /// The node's OCI runtime and image store.
    pub tasks: Arc<crate::agent::runner::TaskRuntime>,
}

type Shared = State<Arc<App>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(inspect_service).delete(remove_service),
        )
        .route("/v1/services/{name}/scale", post(scale_service))
        .route("/v1/services/{name}/update", post(update_service))
        .route("/v1/services/{name}/logs", get(service_logs))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{name}", get(inspect_task))
        .route("/v1/tasks/{name}/sandbox", get(task_sandbox))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/info", get(info))
        .route("/v1/images", get(super::images::list))
        .route("/v1/images/load", post(super::images::load))
        .route(
            "/v1/images/{name}",
            axum::routing::delete(super::images::remove),
        )
        .route("/v1/ping", get(|| async { "OK" }))
        .with_state(app)
}

/// A snapshot of the daemon's cache holding every write acknowledged before the request.
async fn read(app: &App) -> Result<ClusterState, ApiError> {
    Ok(app.control.read().await?)
}

fn network_view(net: &Network, st: &ClusterState) -> NetworkView {
    NetworkView {
        network: net.clone(),
        services: st
            .services
            .values()
            .filter(|s| s.networks.contains(&net.name))
            .map(|s| s.name.clone())
            .collect(),
    }
}

pub fn task_view(t: &Task, st: &ClusterState) -> TaskView {
    let status = st.statuses.get(&t.name);
    TaskView {
        name: t.name.clone(),
        service: t.service.clone(),
        slot: t.slot,
        node: t.node.clone(),
        desired: t.desired,
        state: status.map(|s| s.state).unwrap_or(TaskState::Starting),
        message: status.map(|s| s.message.clone()).unwrap_or_default(),
        pid: status.and_then(|s| s.pid),
        restarts: status.map(|s| s.restarts).unwrap_or(0),
        ever_ran: status.is_some_and(|s| s.ever_ran),
        addresses: t
            .attachments
            .iter()
            .map(|a| AddressView {
                network: a.network.clone(),
                address: a.address,
            })
            .collect(),
        gateway_address: t.gateway_address,
    }
}

/// Rows for slots no node could take, saying why (as Swarm's "no suitable node").
fn pending_views(p: &crate::model::Pending) -> Vec<TaskView> {
    p.slots
        .iter()
        .map(|&slot| TaskView {
            name: Task::name_for(&p.service, slot),
            service: p.service.clone(),
            slot,
            node: String::new(),
            desired: DesiredState::Running,
            state: TaskState::Pending,
            message: p.reason.clone(),
            pid: None,
            restarts: 0,
            ever_ran: false,
            addresses: Vec::new(),
            gateway_address: ipnet::Ipv4Net::default(),
        })
        .collect()
}

fn service_view(name: &str, st: &ClusterState) -> Option<ServiceView> {
    let svc = st.services.get(name)?;
    let mut tasks: Vec<TaskView> = st.tasks_of(name).map(|t| task_view(t, st)).collect();
    tasks.sort_by_key(|t| t.slot);
    Some(ServiceView {
        service: svc.clone(),
        running: tasks
            .iter()
            .filter(|t| t.state == TaskState::Running && t.desired == DesiredState::Running)
            .count() as u32,
        tasks,
        pending: st.pending.get(name).map(pending_views).unwrap_or_default(),
    })
}

async fn list_networks(State(app): Shared) -> ApiResult<Vec<NetworkView>> {
    let st = read(&app).await?;
    Ok(Json(
        st.networks.values().map(|n| network_view(n, &st)).collect(),
    ))
}

async fn inspect_network(State(app): Shared, Path(name): Path<String>) -> ApiResult<NetworkView> {
    let st = read(&app).await?;
    let net = st
        .networks
        .get(&name)
        .ok_or_else(|| ApiError::not_found(Object::Network, &name))?;
    Ok(Json(network_view(net, &st)))
}

async fn create_network(
    State(app): Shared,
    req: Result<Json<NetworkCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    let Json(req) = req?;
    let req = validate::network_request(&req)?;
    // A macvlan network hangs off an interface of the node it is created on (as in Docker).
    if let Some(parent) = &req.parent {
        let nl = routemesh_netdev::netlink::Netlink::current().map_err(ApiError::NodeRoutes)?;
        if nl
            .link(parent)
            .await
            .map_err(ApiError::NodeRoutes)?
            .is_none()
        {
            return Err(ApiError::Control(ControlError::NoParent {
                subject: Subject::Network {
                    driver: req.driver,
                    name: req.name.clone(),
                },
                parent: parent.clone(),
            }));
        }
    }
    let node_nets = node_networks().await?;
    let net = app.control.create_network(req, &node_nets).await?;
    Ok((StatusCode::CREATED, Json(net)))
}

/// Every route of the daemon's own namespace but the default route.
async fn node_networks() -> Result<Vec<ipnet::Ipv4Net>, ApiError> {
    let nl = routemesh_netdev::netlink::Netlink::current().map_err(ApiError::NodeRoutes)?;
    let mut nets = nl.ipv4_routes().await.map_err(ApiError::NodeRoutes)?;
    nets.retain(|n| n.prefix_len() > 0);
    Ok(nets)
}

async fn remove_network(
    State(app): Shared,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.control.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(State(app): Shared) -> ApiResult<Vec<ServiceView>> {
    let st = read(&app).await?;
    Ok(Json(
        st.services
            .keys()
            .filter_map(|n| service_view(n, &st))
            .collect(),
    ))
}

async fn inspect_service(State(app): Shared, Path(name): Path<String>) -> ApiResult<ServiceView> {
    let st = read(&app).await?;
    service_view(&name, &st)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(Object::Service, &name))
}

async fn create_service(
    State(app): Shared,
    req: Result<Json<ServiceCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<crate::model::Service>), ApiError> {
    let Json(req) = req?;
    let req = validate::service_request(&req, &app.path_var)?;
    check_local_listeners(&req.name, &req.ports)?;
    check_image_and_user(&app, &req).await?;
    let svc = app.control.create_service(req).await?;
    Ok((StatusCode::CREATED, Json(svc)))
}

/// The image must be on some node; a user given by name must exist where it can be checked
/// here (the host's root without an image, the image's when this node has it).
async fn check_image_and_user(app: &App, req: &validate::ServiceRequest) -> Result<(), ApiError> {
    let local = match &req.image {
        Some(image) => match app.tasks.images.get(image) {
            Ok(img) => Some(img.layers),
            Err(routemesh_runtime::image::ImageError::NotFound(_)) => {
                let st = read(app).await?;
                if !st.nodes.values().any(|n| n.images.contains(image)) {
                    return Err(ApiError::ImageNowhere {
                        service: req.name.clone(),
                        image: image.clone(),
                    });
                }
                None
            }
            Err(e) => return Err(ApiError::Image(e)),
        },
        None => Some(vec![PathBuf::from("/")]),
    };
    if let (Some(user), Some(roots)) = (&req.user, local) {
        routemesh_runtime::image::resolve_user(user, &roots).map_err(|source| {
            ApiError::ServiceUser {
                service: req.name.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

async fn scale_service(
    State(app): Shared,
    Path(name): Path<String>,
    req: Result<Json<ServiceScale>, JsonRejection>,
) -> ApiResult<crate::model::Service> {
    let Json(req) = req?;
    let replicas = validate::replicas(req.replicas)?;
    Ok(Json(app.control.scale_service(&name, replicas).await?))
}

async fn update_service(
    State(app): Shared,
    Path(name): Path<String>,
    req: Result<Json<ServiceUpdate>, JsonRejection>,
) -> ApiResult<crate::model::Service> {
    let Json(req) = req?;
    let add = req
        .publish_add
        .iter()
        .map(|p| validate::publish(p))
        .collect::<Result<Vec<_>, _>>()?;
    validate::distinct_ports(&add)?;
    let rm = req
        .publish_rm
        .iter()
        .map(|p| validate::published_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    check_local_listeners(&name, &add)?;
    Ok(Json(app.control.update_service(&name, &add, &rm).await?))
}

/// Refuses a port that a process on this node already listens on (it would shadow or be
/// shadowed by the routing mesh).
fn check_local_listeners(
    service: &str,
    ports: &[crate::model::PortConfig],
) -> Result<(), ApiError> {
    for p in ports {
        if let Some(owner) = crate::listeners::listener(p.published, p.proto) {
            return Err(ApiError::PortInUse {
                service: service.into(),
                port: p.published,
                proto: p.proto,
                owner,
            });
        }
    }
    Ok(())
}

async fn remove_service(
    State(app): Shared,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.control.remove_service(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Each line of each task's log, prefixed with the task name (as `docker service logs` does).
async fn service_logs(State(app): Shared, Path(name): Path<String>) -> Result<String, ApiError> {
    let st = read(&app).await?;
    if !st.services.contains_key(&name) {
        return Err(ApiError::not_found(Object::Service, &name));
    }
    let mut out = String::new();
    let mut tasks: Vec<&Task> = st.tasks.values().filter(|t| t.service == name).collect();
    tasks.sort_by_key(|t| t.slot);
    for t in tasks {
        // A task's log is a file on its node; another node's run dir is readable when the
        // nodes share a machine (the demo, the tests). Otherwise say where to look.
        let Ok(run_dir) = remote_run_dir(&app, &st, t) else {
            out.push_str(&format!(
                "{}@{}    | (log on node {}: run `routemesh service logs` against that node)\n",
                t.name, t.node, t.node
            ));
            continue;
        };
        let path = RunDir::new(run_dir).task(&t.name).log();
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => {
                for line in text.lines() {
                    out.push_str(&format!("{}@{}    | {line}\n", t.name, t.node));
                }
            }
            Err(_) if t.node != app.ctx.node => out.push_str(&format!(
                "{}@{}    | (log on node {}: run `routemesh service logs` against that node)\n",
                t.name, t.node, t.node
            )),
            Err(_) => {}
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct TaskFilter {
    service: Option<String>,
}

async fn list_tasks(State(app): Shared, Query(f): Query<TaskFilter>) -> ApiResult<Vec<TaskView>> {
    let st = read(&app).await?;
    if let Some(s) = &f.service {
        if !st.services.contains_key(s) {
            return Err(ApiError::not_found(Object::Service, s));
        }
    }
    let mut tasks: Vec<TaskView> = st
        .tasks
        .values()
        .filter(|t| f.service.as_ref().is_none_or(|s| &t.service == s))
        .map(|t| task_view(t, &st))
        .collect();
    tasks.extend(
        st.pending
            .values()
            .filter(|p| f.service.as_ref().is_none_or(|s| &p.service == s))
            .filter(|p| st.services.contains_key(&p.service))
            .flat_map(pending_views),
    );
    tasks.sort_by(|a, b| (&a.service, a.slot).cmp(&(&b.service, b.slot)));
    Ok(Json(tasks))
}

async fn inspect_task(State(app): Shared, Path(name): Path<String>) -> ApiResult<TaskView> {
    let st = read(&app).await?;
    let t = st
        .tasks
        .get(&name)
        .ok_or_else(|| ApiError::not_found(Object::Task, &name))?;
    Ok(Json(task_view(t, &st)))
}

async fn task_sandbox(State(app): Shared, Path(name): Path<String>) -> ApiResult<SandboxInfo> {
    let st = read(&app).await?;
    let t = st
        .tasks
        .get(&name)
        .ok_or_else(|| ApiError::not_found(Object::Task, &name))?;
    let run_dir = match remote_run_dir(&app, &st, t) {
        Ok(dir) => dir,
        Err(node) => {
            return Err(ApiError::TaskElsewhere {
                task: name,
                node: t.node.clone(),
                socket: node.map(|n| n.api_socket.clone()),
            })
        }
    };
    let run_dir = RunDir::new(run_dir);
    let paths = run_dir.task(&name);
    let netns = run_dir.task_netns(&name);
    Ok(Json(SandboxInfo {
        task: name.clone(),
        node: t.node.clone(),
        netns: netns.display().to_string(),
        resolv_conf: paths.resolv_conf().display().to_string(),
        hosts: paths.hosts().display().to_string(),
        hostname: name.clone(),
        addresses: t.attachments.iter().map(|a| a.address.addr()).collect(),
        runtime: app.tasks.oci.binary().display().to_string(),
        runtime_root: run_dir.runtime_root().display().to_string(),
        container: name.clone(),
    }))
}

/// The run dir holding `task`'s sandbox and log, as seen from this daemon: ours, or another
/// node's when it is a different directory on this machine (the demo, the tests). A remote node
/// using the same path as ours is on another machine: its files are not here (Err, with the
/// node when known).
fn remote_run_dir<'a>(
    app: &App,
    st: &'a ClusterState,
    task: &Task,
) -> Result<PathBuf, Option<&'a crate::model::Node>> {
    if task.node == app.ctx.node {
        return Ok(app.ctx.run.path().to_path_buf());
    }
    let node = st.nodes.get(&task.node).ok_or(None)?;
    let dir = PathBuf::from(&node.run_dir);
    if dir == app.ctx.run.path() || !dir.exists() {
        return Err(Some(node));
    }
    Ok(dir)
}

async fn list_nodes(State(app): Shared) -> ApiResult<Vec<NodeView>> {
    let st = read(&app).await?;
    Ok(Json(st.nodes.values().cloned().collect()))
}

/// This node and what its last read of the store left out (records that did not decode or
/// named something unsafe), so an operator can find and remove them.
async fn info(State(app): Shared) -> ApiResult<Info> {
    let st = read(&app).await?;
    Ok(Json(Info {
        node: app.ctx.node.clone(),
        revision: st.revision,
        skipped_records: st.skipped.len(),
        skipped: st.skipped.values().cloned().collect(),
    }))
}
