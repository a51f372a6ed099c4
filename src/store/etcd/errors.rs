//! What can go wrong talking to etcd, and the TLS files it is reached with.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client as etcd;

use super::TlsFiles;

/// Why an etcd url (`--store etcd://...`) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("must start with etcd://")]
    NoScheme,
    #[error("names no host:port")]
    NoEndpoint,
    #[error("endpoint {endpoint:?} has no port")]
    NoPort { endpoint: String },
}

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdFailure {
    /// The client's error, in one line (see [`describe`]).
    #[error("{}", describe(.0))]
    Client(#[source] etcd::Error),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("lease expired or was revoked")]
    LeaseGone,
    #[error("no keep-alive stream")]
    NoKeepAliveStream,
    #[error("keep-alive stream ended")]
    KeepAliveEnded,
}

/// One of the PEM files of [`TlsFiles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    ClientCert,
    ClientKey,
}

impl Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Ca => "CA certificate",
            TlsFile::ClientCert => "client certificate",
            TlsFile::ClientKey => "client key",
        })
    }
}

/// Why the TLS settings for etcd could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS {file} {}: {source}", path.display())]
    Read {
        file: TlsFile,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a TLS client certificate needs its key, and a key its certificate")]
    HalfIdentity,
}

pub(super) fn tls_options(files: &TlsFiles) -> std::result::Result<etcd::TlsOptions, TlsError> {
    let read = |file: TlsFile, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            file,
            path: path.to_path_buf(),
            source,
        })
    };
    let ca = read(TlsFile::Ca, &files.ca)?;
    let mut options = etcd::TlsOptions::new().ca_certificate(etcd::Certificate::from_pem(ca));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let cert = read(TlsFile::ClientCert, cert)?;
            let key = read(TlsFile::ClientKey, key)?;
            options = options.identity(etcd::Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => return Err(TlsError::HalfIdentity),
    }
    Ok(options)
}

/// The client's own words when a keep-alive's first answer says TTL <= 0.
pub(super) fn lease_not_found(err: &etcd::Error) -> bool {
    describe(err).ends_with("lease not found")
}

/// A one-line account of a client error: gRPC's code and message, then the innermost cause
/// (`unavailable: tcp connect error: Connection refused (os error 111)`), not a debug dump.
pub(super) fn describe(err: &etcd::Error) -> String {
    let etcd::Error::GRpcStatus(status) = err else {
        return err.to_string();
    };
    // `InvalidArgument` -> `invalid argument`
    let code: String = format!("{:?}", status.code())
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let space = (i > 0 && c.is_uppercase()).then_some(' ');
            space.into_iter().chain(c.to_lowercase())
        })
        .collect();
    let mut text = format!("{code}: {}", status.message());
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    if let Some(c) = innermost {
        let c = c.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}
