//! `hearth-host verify FILE --trust KEY`: checks a component and its
//! signature (`FILE.sig`) as a device does before it runs one, and says
//! why it would be refused.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Options of `verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The component file.
    file: PathBuf,
    /// Its signature (default: FILE.sig).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// A public key this device trusts (hex; repeat for several).
    #[arg(long, required = true)]
    trust: Vec<String>,
}

/// Verifies and prints the verdict; an error if the component is refused.
pub fn run(args: Args) -> Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let sig_path = args
        .signature
        .unwrap_or_else(|| PathBuf::from(format!("{}.sig", args.file.display())));
    let signature = match std::fs::read_to_string(&sig_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    match hearth_runtime::policy(args.trust).verify(&bytes, signature.as_deref()) {
        Ok(m) => {
            println!(
                "ok: {} {} ({}) for {}/{}",
                m.name, m.version, m.sha256, m.package, m.world
            );
            Ok(())
        }
        Err(refusal) => bail!("refused {}: {refusal}", args.file.display()),
    }
}
