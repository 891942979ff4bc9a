//! `hearth-coordinator`: the server of Hearth's distributed training (see the
//! library's documentation and `hearth-coordinator --help`).

fn main() -> anyhow::Result<()> {
    hearth_coordinator::cli::main()
}
