//! The `isolate` command line.

mod cli;

use clap::Parser;

fn main() {
    isolate_core::logger::init_from_env("isolate");
    // runc's command line (an engine driving isolate as its OCI runtime):
    // a runc verb first, with no `--mode` (see isolate_oci::cli).
    #[cfg(feature = "container")]
    {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if isolate_oci::cli::is_runc_invocation(&args) {
            std::process::exit(isolate_oci::cli::main(&args));
        }
    }
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
