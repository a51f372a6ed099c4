//! The API's failures: the typed errors of the layers below, a few of its own, and the one
//! place that decides the HTTP status of each ([`ApiError::status`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::ControlError;
use crate::model::Proto;
use crate::store::StoreError;
use crate::validate::ValidationError;
use crate::wire::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A read found no such object.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: Object, name: String },
    /// A process on this node already listens on a port the service would publish.
    #[error("service {service:?}: port {port}/{proto} is in use on this node by {owner}")]
    PortInUse {
        service: String,
        port: u16,
        proto: Proto,
        owner: String,
    },
    /// The task's sandbox is on a node whose run dir this daemon cannot see.
    #[error(
        "task {task:?} runs on node {node:?}: run `routemesh exec` against that node's daemon{}",
        socket.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    TaskElsewhere {
        task: String,
        node: String,
        /// The other node's API socket, when it is known.
        socket: Option<String>,
    },
    /// A body the JSON decoder refused (syntax, a missing field, a wrong type or range).
    #[error("invalid request body: {}", .0.body_text())]
    Body(#[from] axum::extract::rejection::JsonRejection),
    #[error("reading the node's routes: {0}")]
    NodeRoutes(#[source] routemesh_netdev::error::Error),
    #[error(transparent)]
    Image(routemesh_runtime::image::ImageError),
    #[error("image path {path:?} must be absolute (it is read by the daemon)")]
    RelativeImagePath { path: String },
    /// A service's image is in no node's store.
    #[error("service {service:?}: image {image:?} is not on any node; load it with `routemesh image load` first")]
    ImageNowhere { service: String, image: String },
    #[error("service {service:?}: {source}")]
    ServiceUser {
        service: String,
        #[source]
        source: routemesh_runtime::image::ImageError,
    },
}

/// The kinds of object a read can miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Network,
    Service,
    Task,
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Object::Network => "network",
            Object::Service => "service",
            Object::Task => "task",
        })
    }
}

impl ApiError {
    pub fn not_found(kind: Object, name: &str) -> ApiError {
        ApiError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    /// 400: the request is wrong whatever the state; 404: it names something that does not
    /// exist; 409: the state stands in its way (exists, in use, overlapping, exhausted, taken,
    /// elsewhere, kept changing); 500: the store or the node failed us.
    pub fn status(&self) -> StatusCode {
        const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
        const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
        const CONFLICT: StatusCode = StatusCode::CONFLICT;
        const INTERNAL: StatusCode = StatusCode::INTERNAL_SERVER_ERROR;
        match self {
            ApiError::Invalid(_) => BAD_REQUEST,
            ApiError::Body(e) => match e {
                axum::extract::rejection::JsonRejection::MissingJsonContentType(_) => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                _ => BAD_REQUEST,
            },
            ApiError::NotFound { .. } => NOT_FOUND,
            ApiError::PortInUse { .. } | ApiError::TaskElsewhere { .. } => CONFLICT,
            ApiError::Store(_) | ApiError::NodeRoutes(_) => INTERNAL,
            ApiError::RelativeImagePath { .. } | ApiError::ServiceUser { .. } => BAD_REQUEST,
            ApiError::ImageNowhere { .. } => NOT_FOUND,
            ApiError::Image(e) => {
                use routemesh_runtime::image::ImageError as E;
                match e {
                    E::NotFound(_) => NOT_FOUND,
                    E::InUse { .. } => CONFLICT,
                    E::Io { .. } | E::Corrupt { .. } => INTERNAL,
                    E::Load { .. }
                    | E::InvalidReference { .. }
                    | E::Ambiguous { .. }
                    | E::UnknownUser { .. }
                    | E::UnknownGroup { .. }
                    | E::InvalidUser { .. } => BAD_REQUEST,
                }
            }
            ApiError::Control(e) => match e {
                ControlError::Invalid(_)
                | ControlError::NoHostAddress { .. }
                | ControlError::NetworksOverlap { .. }
                | ControlError::NoEsp { .. }
                | ControlError::NoParent { .. } => BAD_REQUEST,
                ControlError::NetworkNotFound { .. }
                | ControlError::ServiceNotFound { .. }
                | ControlError::ServiceNetworkNotFound { .. }
                | ControlError::PortNotPublished { .. } => NOT_FOUND,
                ControlError::NetworkExists { .. }
                | ControlError::ServiceExists { .. }
                | ControlError::IngressNetwork { .. }
                | ControlError::NetworkInUse { .. }
                | ControlError::PortTaken { .. }
                | ControlError::OverlapsGwbridge { .. }
                | ControlError::OverlapsBridge { .. }
                | ControlError::OverlapsNodeRoute { .. }
                | ControlError::VniInUse { .. }
                | ControlError::PoolExhausted { .. }
                | ControlError::VnisExhausted { .. }
                | ControlError::NoAddressForVip { .. }
                | ControlError::NotEnoughAddresses { .. }
                | ControlError::KeptChanging { .. } => CONFLICT,
                ControlError::Store(_) => INTERNAL,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "API request failed");
        }
        (
            status,
            axum::Json(ErrorBody {
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |e: ApiError| e.status().as_u16();
        let control = |e: ControlError| status(e.into());
        assert_eq!(status(ValidationError::MissingCommand.into()), 400);
        assert_eq!(
            control(ControlError::Invalid(ValidationError::MissingCommand)),
            400
        );
        assert_eq!(
            control(ControlError::NoHostAddress {
                subject: crate::control::Subject::Ingress,
                subnet: "10.0.0.0/32".parse().unwrap(),
            }),
            400
        );
        assert_eq!(status(ApiError::not_found(Object::Task, "web.1")), 404);
        assert_eq!(
            control(ControlError::ServiceNotFound { name: "w".into() }),
            404
        );
        assert_eq!(
            control(ControlError::PortNotPublished {
                service: "w".into(),
                port: 80,
                proto: Proto::Tcp,
            }),
            404
        );
        assert_eq!(
            control(ControlError::NetworkExists { name: "a".into() }),
            409
        );
        assert_eq!(
            control(ControlError::KeptChanging {
                what: crate::control::Operation::CreateIngress,
            }),
            409
        );
        assert_eq!(
            status(ApiError::TaskElsewhere {
                task: "w.1".into(),
                node: "n2".into(),
                socket: None,
            }),
            409
        );
        let store = || StoreError::Corrupt {
            path: "/s".into(),
            detail: "x".into(),
        };
        assert_eq!(status(store().into()), 500);
        assert_eq!(control(store().into()), 500);
    }

    #[test]
    fn messages_of_the_api_s_own_errors() {
        assert_eq!(
            ApiError::not_found(Object::Network, "app").to_string(),
            "network \"app\" not found"
        );
        let elsewhere = |socket: Option<&str>| {
            ApiError::TaskElsewhere {
                task: "web.1".into(),
                node: "n2".into(),
                socket: socket.map(Into::into),
            }
            .to_string()
        };
        assert_eq!(
            elsewhere(Some("/run/n2.sock")),
            "task \"web.1\" runs on node \"n2\": run `routemesh exec` against that node's daemon (/run/n2.sock)"
        );
        assert_eq!(
            elsewhere(None),
            "task \"web.1\" runs on node \"n2\": run `routemesh exec` against that node's daemon"
        );
        let in_use = ApiError::PortInUse {
            service: "web".into(),
            port: 8080,
            proto: Proto::Udp,
            owner: "nc (pid 7)".into(),
        };
        assert_eq!(
            in_use.to_string(),
            "service \"web\": port 8080/udp is in use on this node by nc (pid 7)"
        );
    }
}
