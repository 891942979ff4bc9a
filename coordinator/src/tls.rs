//! TLS on the coordinator's one port (`--tls`): HTTPS for the page and the
//! API, WSS for the workers. The certificate is the household's own,
//! self-signed, made once in `HOME/tls/` (for the names in `--tls-names`)
//! and pinned by devices through its SHA-256 fingerprint, which `pair`
//! puts in the pairing string. Browsers see a self-signed certificate:
//! compare its SHA-256 with the one `pair` printed, then accept it once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// TLS options of `serve`, `train` and `pair`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsOptions {
    /// Serve HTTPS and WSS instead of HTTP and WS (same port), with the
    /// household's certificate (made in HOME/tls on first use).
    #[arg(long)]
    pub tls: bool,
    /// Host names and IP addresses the certificate is made for (only used
    /// when it is made; delete HOME/tls to make it again).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub tls_names: Vec<String>,
}

/// The household's certificate and key files.
pub struct Certificate {
    /// `cert.pem`.
    pub cert: PathBuf,
    /// `key.pem`.
    pub key: PathBuf,
}

impl Certificate {
    /// The files in `home`.
    pub fn in_home(home: &Path) -> Self {
        let dir = home.join("tls");
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Makes a self-signed certificate for `names` unless one exists.
    pub fn ensure(&self, names: &[String]) -> Result<()> {
        if self.cert.is_file() && self.key.is_file() {
            return Ok(());
        }
        let made = rcgen::generate_simple_self_signed(names.to_vec())
            .context("making the household's TLS certificate")?;
        let dir = self.cert.parent().context("a certificate directory")?;
        std::fs::create_dir_all(dir)?;
        crate::household::write_private(&self.key, made.signing_key.serialize_pem().as_bytes())?;
        crate::household::write_private(&self.cert, made.cert.pem().as_bytes())?;
        eprintln!(
            "made a TLS certificate for {} in {}",
            names.join(", "),
            dir.display()
        );
        Ok(())
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate", self.cert.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no certificate",
            self.cert.display()
        );
        Ok(certs)
    }

    /// The SHA-256 fingerprint (hex) of the certificate, as devices pin it.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(hearth_protocol::digest(self.chain()?[0].as_ref()))
    }

    /// The server configuration.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("{} is not a PEM private key", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain()?, key)
            .context("the TLS certificate and key do not match")?;
        Ok(Arc::new(config))
    }
}

/// The household's certificate if `options` ask for TLS (made now if it
/// does not exist yet), else none.
pub fn certificate(options: &TlsOptions, home: &Path) -> Result<Option<Certificate>> {
    if !options.tls {
        return Ok(None);
    }
    let cert = Certificate::in_home(home);
    cert.ensure(&options.tls_names)?;
    Ok(Some(cert))
}

/// The server configuration and fingerprint `options` ask for (none without `--tls`).
pub fn server(options: &TlsOptions, home: &Path) -> Result<Option<(Arc<ServerConfig>, String)>> {
    certificate(options, home)?
        .map(|cert| Ok((cert.server_config()?, cert.fingerprint()?)))
        .transpose()
}
