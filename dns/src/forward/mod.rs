//! Forwarding of names that are not routemesh's: ordered failover over upstream servers, a
//! per-query deadline, a bound on queries in flight, and a small TTL-honouring cache.

mod cache;
pub mod resolv_conf;
mod upstream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use cache::{Cache, CacheKey};
pub use upstream::{CurrentNamespace, UpstreamSockets, DEFAULT_TIMEOUT};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream DNS servers configured")]
    NoUpstreams,
    #[error("too many queries in flight")]
    Busy,
    #[error("upstream {0}: no answer before the deadline")]
    Timeout(SocketAddr),
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0}: answer does not match the question")]
    Mismatch(SocketAddr),
    #[error("encoding the upstream query: {0}")]
    Encode(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Tried in order; the next one on SERVFAIL, REFUSED, timeout or error.
    pub upstreams: Vec<SocketAddr>,
    /// Time allowed for each upstream attempt (UDP plus any TCP retry).
    pub timeout: Duration,
    /// Queries waiting on upstreams at once; more are answered SERVFAIL immediately.
    pub max_in_flight: usize,
    /// Cached answers kept at most (0 disables the cache).
    pub cache_entries: usize,
    /// Upper bound on how long any answer is cached, whatever its TTL.
    pub max_cache_ttl: u32,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            upstreams: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: 256,
            cache_entries: 4096,
            max_cache_ttl: 300,
        }
    }
}

impl ForwarderConfig {
    /// Upstreams and timeout from resolv.conf text; other fields default.
    pub fn from_resolv_conf(text: &str) -> Self {
        let conf = resolv_conf::parse(text);
        ForwarderConfig {
            upstreams: conf.nameservers,
            timeout: conf.timeout.unwrap_or(DEFAULT_TIMEOUT),
            ..ForwarderConfig::default()
        }
    }
}

pub struct Forwarder {
    config: ForwarderConfig,
    sockets: Arc<dyn UpstreamSockets>,
    in_flight: Arc<Semaphore>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder opening its upstream sockets in the current network namespace.
    pub fn new(config: ForwarderConfig) -> Self {
        Self::with_sockets(config, Arc::new(CurrentNamespace))
    }

    /// A forwarder opening its upstream sockets through `sockets` (e.g. inside a sandbox).
    pub fn with_sockets(config: ForwarderConfig, sockets: Arc<dyn UpstreamSockets>) -> Self {
        Forwarder {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            cache: Mutex::new(Cache::new(config.cache_entries, config.max_cache_ttl)),
            config,
            sockets,
        }
    }

    pub fn config(&self) -> &ForwarderConfig {
        &self.config
    }

    /// A cached answer, if fresh; no upstream traffic and no in-flight slot needed.
    pub fn cached(&self, query: &Query) -> Option<Message> {
        let key = CacheKey::of(query)?;
        self.lock_cache().get(&key, std::time::Instant::now())
    }

    /// Reserves an in-flight slot, or `None` when the limit is reached. Take it before spawning
    /// a task for the query so the number of tasks stays bounded too.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// Answers `query` from the cache or from upstream, reserving its own in-flight slot.
    pub async fn forward(&self, query: &Query) -> Result<Message, ForwardError> {
        if let Some(answer) = self.cached(query) {
            return Ok(answer);
        }
        let permit = self.try_reserve().ok_or(ForwardError::Busy)?;
        self.forward_reserved(query, permit).await
    }

    /// Asks the upstreams in order, holding `permit` until done. Returns the first answer that
    /// is neither SERVFAIL nor REFUSED; if all fail, the last such answer (its rcode is passed
    /// back), or the last error.
    pub async fn forward_reserved(
        &self,
        query: &Query,
        _permit: OwnedSemaphorePermit,
    ) -> Result<Message, ForwardError> {
        if let Some(answer) = self.cached(query) {
            return Ok(answer);
        }
        let request = upstream::upstream_request(query);
        let mut last: Result<Message, ForwardError> = Err(ForwardError::NoUpstreams);
        for upstream in &self.config.upstreams {
            let deadline = Instant::now() + self.config.timeout;
            match upstream::exchange(&*self.sockets, *upstream, &request, deadline).await {
                Ok(answer) if is_failure(answer.metadata.response_code) => {
                    tracing::debug!(%upstream, rcode = %answer.metadata.response_code, "upstream failed, trying next");
                    last = Ok(answer);
                }
                Ok(answer) => {
                    if let Some(key) = CacheKey::of(query) {
                        self.lock_cache()
                            .insert(key, &answer, std::time::Instant::now());
                    }
                    return Ok(answer);
                }
                Err(error) => {
                    tracing::debug!(%upstream, %error, "upstream failed, trying next");
                    if last.is_err() {
                        last = Err(error);
                    }
                }
            }
        }
        last
    }

    /// Number of cached answers (for tests and metrics).
    pub fn cache_len(&self) -> usize {
        self.lock_cache().len()
    }

    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a harmful way.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn is_failure(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::ServFail | ResponseCode::Refused)
}

#[cfg(test)]
pub(crate) mod tests;
