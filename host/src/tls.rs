//! The connection to the coordinator: plain TCP for `ws://`, TLS for
//! `wss://` with the coordinator's certificate pinned by its SHA-256
//! fingerprint (a household's coordinator has a self-signed certificate;
//! the pairing string carries its fingerprint, so no certificate authority
//! is involved and no other certificate is accepted).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
pub use hearth_tls_pin::pinned_config;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::{WebSocket, client};

/// A byte stream to the coordinator.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Makes reads return `WouldBlock` at once when nothing has arrived (on),
    /// or wait (off).
    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_nonblocking(on),
            Stream::Tls(s) => s.sock.set_nonblocking(on),
        }
    }

    /// Sets the socket's read timeout (a read past it fails with `WouldBlock`).
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.set_read_timeout(timeout),
            Stream::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Opens the WebSocket at `url` (`ws://` or `wss://`; the latter needs `tls`).
pub fn connect(url: &str, tls: Option<&Arc<ClientConfig>>) -> Result<WebSocket<Stream>> {
    let request = url
        .into_client_request()
        .with_context(|| format!("{url} is not a WebSocket URL"))?;
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => bail!("{url}: the coordinator's URL starts with ws:// or wss://"),
    };
    let host = uri.host().context("the URL names no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let host_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = TcpStream::connect((host_name.as_str(), port))
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let _ = tcp.set_nodelay(true);
    let stream = if secure {
        let config = tls.context(
            "a wss:// coordinator needs its certificate's fingerprint (--tls-fingerprint or the pairing string)",
        )?;
        let name = ServerName::try_from(host_name).context("not a TLS server name")?;
        let conn = ClientConnection::new(Arc::clone(config), name)?;
        Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    let (socket, _) = client(request, stream).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(socket)
}
