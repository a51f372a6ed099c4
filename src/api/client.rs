//! The CLI's side of the API: one HTTP/1.1 request per connection over the unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the routemesh daemon at {socket}: {source} (is `routemesh daemon` running? set --host or ROUTEMESH_HOST)")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    /// The exchange itself failed. The failure is spelled in the message, so it is not also
    /// `source()`: the CLI prints chains, and would print it twice.
    #[error("talking to the daemon at {socket}: {failure}")]
    Protocol {
        socket: String,
        failure: ProtocolFailure,
    },
    /// The daemon refused the request; the message is the daemon's.
    #[error("{message}")]
    Api { status: u16, message: String },
}

/// Which step of a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolFailure {
    /// The HTTP/1.1 handshake, sending the request or reading the answer's body.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// Building the request (a path that is no URI).
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
    /// Encoding the request body or decoding the answer.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    fn protocol(&self, failure: impl Into<ProtocolFailure>) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.display().to_string(),
            failure: failure.into(),
        }
    }

    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: self.socket.display().to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "routemesh")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok((status, bytes))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (_, bytes) = self.request_raw(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(e))
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (_, bytes) = self.request_raw(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.protocol(e))?;
        let (_, bytes) = self.request_raw(Method::POST, path, Some(body)).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(e))
    }

    /// DELETE, reading the answer's body.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (_, bytes) = self.request_raw(Method::DELETE, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(e))
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.request_raw(Method::DELETE, path, None).await?;
        Ok(())
    }
}

/// Percent-encodes a path segment (names are restricted, but the CLI takes anything).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
