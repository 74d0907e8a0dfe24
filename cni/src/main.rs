//! The `overlay-cni` executable: environment and stdin in, result or error object out.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => overlay_cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            let err = overlay_cni::error::CniError::new(
                overlay_cni::error::Code::IoFailure,
                "cannot read the network configuration",
                format!("reading stdin: {e}"),
            );
            overlay_cni::Outcome { stdout: err.to_json("1.1.0"), status: 1 }
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    if outcome.status == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
