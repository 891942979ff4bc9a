//! `keygen` and `sign`: the household's component-signing key and the
//! signatures devices check before they run a component (`FILE.sig` next
//! to `FILE`; `hearth-host verify` checks one).

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
