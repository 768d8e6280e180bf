//! The `isolate` command line.

mod cli;

use clap::Parser;

fn main() {
    isolate_core::logger::init_from_env("isolate");
    let parsed = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 125,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(cli::main(parsed));
}
