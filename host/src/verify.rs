//! `hearth-host verify FILE --trust KEY`: checks a component and its
//! signature (`FILE.sig`) as a device does before it runs one, and says
//! why it would be refused.

use std::path::PathBuf;

use anyhow::Result;

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
    let signature = args
        .signature
        .unwrap_or_else(|| hearth_runtime::signature_path(&args.file));
    let policy = hearth_runtime::policy(args.trust);
    let (_, m) = hearth_runtime::verify_file(&args.file, &signature, &policy)?;
    println!(
        "ok: {} {} ({}) for {}/{}",
        m.name, m.version, m.sha256, m.package, m.world
    );
    Ok(())
}
