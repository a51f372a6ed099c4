//! `/v1/images`: the node's local OCI images. Loading reads a file or directory on the
//! daemon's machine (the API socket is root's, on the same machine); the node's record then
//! lists the image, so services using it are placed here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use routemesh_runtime::image::{ImageError, ImageStore, ImageSummary};

use super::error::ApiError;
use super::server::App;
use crate::model::{ClusterState, DesiredState, Node};
use crate::store::{keys, Txn};
use crate::wire::ImageLoad;

type Shared = State<Arc<App>>;

/// The names of the images in `store`, sorted (what the node's record lists).
pub fn names(store: &ImageStore) -> Vec<String> {
    let mut names: Vec<String> = match store.list() {
        Ok(list) => list.into_iter().map(|i| i.name).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "listing the image store");
            Vec::new()
        }
    };
    names.sort();
    names.dedup();
    names
}

/// Writes this node's image names into its record, if they changed.
async fn publish(app: &App) -> Result<(), ApiError> {
    let store = app.control.store.as_ref();
    let key = keys::node(&app.ctx.node);
    let images = names(&app.tasks.images);
    for _ in 0..5 {
        let Some(kv) = store.get(&key).await? else {
            return Ok(());
        };
        let Ok(mut node) = serde_json::from_slice::<Node>(&kv.value) else {
            return Ok(());
        };
        if node.images == images {
            return Ok(());
        }
        node.images = images.clone();
        let txn = Txn::new()
            .when_revision(key.clone(), kv.mod_revision)
            .put_json(key.clone(), &node)?;
        if store.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::Image(ImageError::Io {
                op: "image store worker",
                path: std::path::PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })
        })?
        .map_err(ApiError::Image)
}

pub async fn list(State(app): Shared) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let store = app.tasks.images.clone();
    Ok(Json(blocking(move || store.list()).await?))
}

pub async fn load(
    State(app): Shared,
    req: Result<Json<ImageLoad>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Vec<ImageSummary>>), ApiError> {
    let Json(req) = req?;
    let path = std::path::PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(ApiError::RelativeImagePath { path: req.path });
    }
    let store = app.tasks.images.clone();
    let tag = req.tag.clone();
    let loaded = blocking(move || store.load(&path, tag.as_deref())).await?;
    publish(&app).await?;
    for i in &loaded {
        tracing::info!(image = %i.name, id = %i.id, "image loaded");
    }
    Ok((StatusCode::CREATED, Json(loaded)))
}

/// Whether a task of this node runs from image `name`.
fn used_here(st: &ClusterState, node: &str, name: &str) -> Option<String> {
    st.tasks
        .values()
        .filter(|t| t.node == node && t.desired == DesiredState::Running)
        .find(|t| st.services.get(&t.service).and_then(|s| s.image.as_deref()) == Some(name))
        .map(|t| t.name.clone())
}

pub async fn remove(
    State(app): Shared,
    Path(name): Path<String>,
) -> Result<Json<ImageSummary>, ApiError> {
    let st = app.control.read().await?;
    let store = app.tasks.images.clone();
    let node = app.ctx.node.clone();
    let removed = blocking(move || {
        store.remove(&name, |img| {
            used_here(&st, &node, &img.name).map(|task| format!("task {task}"))
        })
    })
    .await?;
    publish(&app).await?;
    tracing::info!(image = %removed.name, "image removed");
    Ok(Json(removed))
}
