//! `pair`, `devices` and `revoke`: the household's devices from the command line.

use anyhow::Result;
use hearth_protocol::auth::PairingLink;

use crate::household::{self, Household, HouseholdOptions};
use crate::tls::TlsOptions;

/// Options of `pair`.
#[derive(clap::Args, Debug)]
pub struct PairArgs {
    /// The new device's id (letters, digits, '-', '_', '.').
    #[arg(long)]
    pub name: String,
    /// The address devices reach the coordinator at (`serve --listen`).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub address: String,
    /// No QR code.
    #[arg(long)]
    pub no_qr: bool,
    /// The household.
    #[command(flatten)]
    pub household: HouseholdOptions,
    /// TLS: with --tls the device pins the household's certificate (made now
    /// if it does not exist yet).
    #[command(flatten)]
    pub tls: TlsOptions,
}

/// Pairs a device and prints what it needs.
pub fn pair(args: PairArgs) -> Result<()> {
    let household = Household::open(&args.household)?.ensure_secret()?;
    let key = household.pair(&args.name)?;
    let fingerprint = crate::tls::certificate(&args.tls, household.home())?
        .map(|cert| cert.fingerprint())
        .transpose()?;
    let link = PairingLink {
        address: args.address.clone(),
        device: args.name.clone(),
        key: key.clone(),
        tls: fingerprint.clone(),
    };
    let scheme = if fingerprint.is_some() {
        "https"
    } else {
        "http"
    };
    let trust = crate::components::household_public_key(household.home()).ok();
    let page = household::page_link(
        &format!("{scheme}://{}/", args.address),
        &args.name,
        &key,
        trust.as_deref(),
    );
    println!(
        "paired {} (registry: {})",
        args.name,
        household.home().join("devices.json").display()
    );
    println!("  pairing code: {}", key.code());
    println!("  a host:       hearth-host work --pair '{link}'");
    println!("  a browser:    {page}");
    if let Some(fp) = &fingerprint {
        println!(
            "  certificate:  SHA-256 {fp} (a browser warns about a self-signed \
             certificate: accept it if its SHA-256 is this one)"
        );
    }
    if !args.no_qr {
        match qr(&page) {
            Some(code) => println!("\nscan with a phone to open the page paired:\n{code}"),
            None => println!("(the link is too long for a QR code)"),
        }
    }
    println!(
        "The code is this device's key: anyone who has it can join until you run \
         `hearth-coordinator revoke {}`.",
        args.name
    );
    Ok(())
}

/// `text` as a QR code of terminal characters (two modules per character
/// row), with its quiet zone.
pub fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let dark = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < width
            && (y as usize) < width
            && colors[y as usize * width + x as usize] == qrcode::Color::Dark
    };
    let quiet = 2isize;
    let mut out = String::new();
    let mut y = -quiet;
    while y < width as isize + quiet {
        for x in -quiet..width as isize + quiet {
            // Light modules print as ink: terminals are usually dark.
            out.push(match (!dark(x, y), !dark(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    Some(out)
}

/// Options of `devices` and `revoke`.
#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// The household.
    #[command(flatten)]
    pub household: HouseholdOptions,
}

/// Lists the paired devices.
pub fn list(args: DeviceArgs) -> Result<()> {
    let household = Household::open(&args.household)?;
    let devices = household.devices()?;
    if devices.is_empty() {
        println!("no paired devices (pair one with `hearth-coordinator pair --name NAME`)");
    }
    for d in devices {
        let state = match d.revoked_at {
            Some(t) => format!("revoked at {t}"),
            None => "active".into(),
        };
        println!("{:<24} paired at {:<12} {state}", d.id, d.paired_at);
    }
    if household.is_dev() {
        println!("the household uses the public development secret: run `pair` to make one");
    }
    Ok(())
}

/// Revokes a device.
pub fn revoke(id: &str, args: DeviceArgs) -> Result<()> {
    let household = Household::open(&args.household)?;
    household.revoke(id)?;
    println!(
        "revoked {id}: a running coordinator sends it away within seconds and refuses it from then on"
    );
    Ok(())
}
