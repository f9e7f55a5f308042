//! A tiny command line client for the Docplanner Integrations API.
//!
//! ```text
//! cargo run --example docplanner -- GET /facilities            # the real API, credentials from the environment
//! cargo run --example docplanner -- --fake GET /facilities     # an embedded fake Docplanner, offline
//! cargo run --example docplanner -- --fake POST \
//!     /facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book \
//!     '{"address_service_id":"1","duration":30,"patient":{}}'
//! ```
//!
//! The answer is printed as pretty JSON on stdout, the status on stderr; `--help` says the
//! rest. The logic lives in `cli.rs`, which `tests/docplanner_cli.rs` runs against the fake.

mod cli;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let code = cli::run(&args, &mut std::io::stdout(), &mut std::io::stderr()).await;
    ExitCode::from(code)
}
