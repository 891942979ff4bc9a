//! The accept loop: every connection is counted before it costs anything.
//!
//! - at most `max_connections` at once, and `max_per_address` from one IP
//!   address (more are closed at accept), so a flood from one device leaves
//!   room for the dashboard and the honest workers;
//! - an HTTP header must arrive whole within `header_timeout` (a client
//!   trickling bytes is cut off);
//! - the process raises its own file-descriptor soft limit, and the
//!   connection cap stays below it;
//! - a WebSocket keeps its connection's [`Permit`] until it closes.
//!
//! What a socket may send before and after admission is bounded in
//! [`crate::session`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// Limits on connections (flags and config keys of `train` and `serve`).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionLimits {
    /// Most open connections (HTTP and WebSocket together).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most open connections from one IP address.
    #[arg(long, default_value_t = 64)]
    pub max_per_address: usize,
    /// Seconds an HTTP client has to send a request's header, and a worker
    /// to send its hello and answer the challenge.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Most messages per second an admitted worker may send (bursts of
    /// twice as many); a worker over it is disconnected.
    #[arg(long, default_value_t = 200.0)]
    pub max_message_rate: f64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_address: 64,
            header_timeout: 10.0,
            max_message_rate: 200.0,
        }
    }
}

impl ConnectionLimits {
    /// The header (and join) timeout.
    pub fn header_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.header_timeout).unwrap_or(Duration::from_secs(10))
    }

    /// Checks the values.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_connections >= 2 && self.max_per_address >= 1,
            "--max-connections must be at least 2 and --max-per-address at least 1"
        );
        anyhow::ensure!(
            self.header_timeout.is_finite() && self.header_timeout > 0.0,
            "--header-timeout must be a positive number of seconds"
        );
        anyhow::ensure!(
            self.max_message_rate.is_finite() && self.max_message_rate >= 1.0,
            "--max-message-rate must be at least 1"
        );
        Ok(())
    }
}

/// Counts open connections, in total and per address.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

/// A connection's permit, shared by its HTTP side and its WebSocket.
#[derive(Debug, Clone)]
pub struct ConnPermit(pub Arc<Permit>);

impl Gate {
    /// A gate with these caps.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `ip`, if there is one.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_address || self.total.load(Ordering::Relaxed) >= self.max_total {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Permit {
            gate: Arc::clone(self),
            ip,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut map = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Raises the descriptor soft limit to the hard one; returns the limit now.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The connection cap that fits the descriptor limit (room for the
/// process's own files and a margin).
pub fn fitted_cap(wanted: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(128).max(16) as usize;
    wanted.min(room)
}

/// Serves `app` on `listener` under `limits` (over TLS with `tls`), until
/// the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let fd_limit = raise_fd_limit();
    let cap = fitted_cap(limits.max_connections, fd_limit);
    if cap < limits.max_connections {
        tracing::warn!(
            fd_limit,
            cap,
            "the descriptor limit allows fewer connections than --max-connections"
        );
    }
    let gate = Gate::new(cap, limits.max_per_address);
    let header_timeout = limits.header_timeout();
    let mut refused = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or a transient error: wait, never spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = gate.admit(peer.ip()) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(peer = %peer.ip(), refused, open = gate.open(), "connection refused: too many open");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let permit = ConnPermit(Arc::new(permit));
        let app = app.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, peer, app, permit, header_timeout));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    // The handshake counts against the header timeout too.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, app, permit, header_timeout).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: axum::Router,
    permit: ConnPermit,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(permit.clone());
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(peer = %peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_caps_per_address_and_in_total_and_frees_on_drop() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "third from one address");
        let p3 = gate.admit(b).unwrap();
        assert!(
            gate.admit("10.0.0.3".parse().unwrap()).is_none(),
            "over the total"
        );
        drop(p1);
        assert!(gate.admit(a).is_some());
        drop(p3);
        assert_eq!(gate.open(), 1);
    }

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        assert_eq!(fitted_cap(1024, 1 << 20), 1024);
        assert_eq!(fitted_cap(1024, 1024), 896);
        assert_eq!(fitted_cap(1024, 10), 16);
    }
}
