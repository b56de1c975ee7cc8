//! `orch-gen-assets DIR`: writes the Debian package's generated files (the
//! units rendered for /usr/sbin/orch, the man pages, the shell completions)
//! into DIR, for `packaging/build-deb`. All the work is in
//! `orch::packaging` (src/packaging.rs); this file only parses arguments and
//! reports. It must not write anywhere but DIR, and it is not packaged.

use std::process::ExitCode;

use clap::Parser;

use orch::packaging::{GenAssetsArgs, gen_assets};
use orch::quote::printable_lines;

/// Write the Debian package's generated files (units, man pages,
/// completions) into DIR, which must be missing or empty.
#[derive(Debug, Parser)]
#[command(name = "orch-gen-assets", version)]
struct Cli {
    #[command(flatten)]
    args: GenAssetsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match gen_assets(&cli.args) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("orch-gen-assets: {}", printable_lines(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}
