//! `keygen`, `sign` and `component push`: the household's component-signing
//! key, the signatures devices check before they run a component
//! (`FILE.sig` next to `FILE`; `hearth-host verify` checks one), and
//! handing a signed component to a running coordinator to roll out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hearth_runtime::{ComponentModel, Limits, Runtime, WIT_PACKAGE, WIT_WORLD};
use hearth_signing::{Manifest, SigningKey};

use crate::household::{Household, HouseholdOptions, write_private};

/// Options of `keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The household (the key goes to HOME/signing.key).
    #[command(flatten)]
    pub household: HouseholdOptions,
}

/// Options of `sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The component file.
    pub file: PathBuf,
    /// Its name.
    #[arg(long, default_value = "hearth-trainer")]
    pub name: String,
    /// Its version.
    #[arg(long)]
    pub version: String,
    /// The household (whose HOME/signing.key signs).
    #[command(flatten)]
    pub household: HouseholdOptions,
}

/// `component` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ComponentAction {
    /// Hand FILE (signed: FILE.sig next to it) to a running coordinator,
    /// which verifies it and rolls it out: one device first, then the rest.
    Push(PushArgs),
}

/// Options of `component push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The component file.
    pub file: PathBuf,
    /// The running coordinator's address (its dashboard's host:port;
    /// `https://host:port` for a `--tls` coordinator, whose certificate in
    /// HOME/tls is the only one trusted).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub coordinator: String,
    /// The household (the owner's credential is derived from its secret).
    #[command(flatten)]
    pub household: HouseholdOptions,
}

/// Runs a `component` subcommand.
pub fn component(action: ComponentAction) -> Result<()> {
    match action {
        ComponentAction::Push(args) => push(args),
    }
}

/// A byte stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// `component push`: POSTs the signature and the component to
/// `/api/components` with the owner's credential; prints the answer.
fn push(args: PushArgs) -> Result<()> {
    use std::io::{Read, Write};
    let household = Household::open(&args.household)?;
    let key = household
        .key_for(crate::household::OWNER)
        .map_err(anyhow::Error::msg)?;
    let token = key.http_token(crate::household::OWNER);
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let sig_path = hearth_runtime::signature_path(&args.file);
    let signature = std::fs::read_to_string(&sig_path).with_context(|| {
        format!(
            "reading {} (sign it first: hearth-coordinator sign {} --version V)",
            sig_path.display(),
            args.file.display()
        )
    })?;
    let mut body = (signature.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(signature.as_bytes());
    body.extend_from_slice(&bytes);
    let secure = args.coordinator.starts_with("https://");
    let address = args
        .coordinator
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let tcp = std::net::TcpStream::connect(&address)
        .with_context(|| format!("connecting to the coordinator at {address}"))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut stream: Box<dyn ReadWrite> = if secure {
        // Only the household's own certificate (this machine's HOME/tls).
        let fingerprint = crate::tls::Certificate::in_home(household.home())
            .fingerprint()
            .context(
                "an https:// coordinator is checked against HOME/tls/ (push from its machine)",
            )?;
        let config = hearth_tls_pin::pinned_config(&fingerprint)?;
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .context("not a TLS server name")?;
        let conn = rustls::ClientConnection::new(config, name)?;
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    write!(
        stream,
        "POST /api/components HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A TLS peer that closes without a close_notify, after its answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("the coordinator refused it ({status}): {}", body.trim());
    }
    println!("pushed; the coordinator rolls it out: {}", body.trim());
    Ok(())
}

fn key_path(home: &Path) -> PathBuf {
    home.join("signing.key")
}

/// The household's signing key.
fn signing_key(home: &Path) -> Result<SigningKey> {
    let path = key_path(home);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (make it with `hearth-coordinator keygen`)",
            path.display()
        )
    })?;
    SigningKey::parse(&text).map_err(anyhow::Error::msg)
}

/// The public key of the household's signing key (what its devices trust).
pub fn household_public_key(home: &Path) -> Result<String> {
    Ok(signing_key(home)?.public())
}

/// Makes the household's signing key (never replacing one) and prints its
/// public half, which devices trust.
pub fn keygen(args: KeygenArgs) -> Result<()> {
    let household = Household::open(&args.household)?;
    let path = key_path(household.home());
    if path.exists() {
        bail!(
            "{} exists: a household keeps its signing key (delete it to make a new one; devices must then trust the new public key)",
            path.display()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    let key = SigningKey::from_seed(seed);
    write_private(&path, key.to_text().as_bytes())?;
    println!("signing key: {}", path.display());
    println!(
        "public key (give it to devices: hearth-host verify --trust …): {}",
        key.public()
    );
    Ok(())
}

/// Signs a component after checking it implements this host's world.
pub fn sign(args: SignArgs) -> Result<()> {
    let household = Household::open(&args.household)?;
    let key = signing_key(household.home())?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    // Only sign what really is a training component of our world.
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime
        .load(&bytes)
        .with_context(|| format!("{} is not a component", args.file.display()))?;
    let archs = ComponentModel::architectures(&runtime, &component).with_context(|| {
        format!(
            "{} does not implement {WIT_PACKAGE}/{WIT_WORLD}",
            args.file.display()
        )
    })?;
    let signed = key.sign(
        &bytes,
        Manifest {
            name: args.name,
            version: args.version,
            package: WIT_PACKAGE.into(),
            world: WIT_WORLD.into(),
            sha256: String::new(),
        },
    );
    let out = hearth_runtime::signature_path(&args.file);
    std::fs::write(&out, serde_json::to_string_pretty(&signed)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "signed {} {} ({}; architectures {}) → {}",
        signed.manifest.name,
        signed.manifest.version,
        signed.manifest.sha256,
        archs.join(", "),
        out.display()
    );
    Ok(())
}
