//! `icn`: the command-line face of icn-mesh. Thin: parses arguments, calls `icn_mesh_core`, prints.
//!
//! Exit codes: 0 success (or job completed), 1 the job failed, 2 refused (bad input, with its code).
//! `--json` prints exactly one JSON object on stdout; errors always go to stderr.

mod cmd_dag;
mod cmd_job;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use icn_mesh_core::identity::Keypair;

#[derive(Parser)]
#[command(name = "icn", version, about = "icn-mesh: run metered WASM jobs and keep signed records of them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new node key (ed25519) and print its DID.
    Keygen {
        /// Where to write the key (mode 0600). Default: DATA_DIR/node.key.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Job specifications and local runs.
    Job {
        #[command(subcommand)]
        command: cmd_job::JobCommand,
    },
    /// Read the content store.
    Dag {
        #[command(subcommand)]
        command: cmd_dag::DagCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Keygen { out, json } => keygen(out, json),
        Command::Job { command } => cmd_job::run(command),
        Command::Dag { command } => cmd_dag::run(command),
    };
    ExitCode::from(code)
}

fn keygen(out: Option<PathBuf>, json: bool) -> u8 {
    let path = match out {
        Some(path) => path,
        None => match output::default_data_dir() {
            Ok(dir) => {
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    return output::fail(&format!("cannot create {}: {e}", dir.display()));
                }
                dir.join(output::KEY_FILE)
            }
            Err(e) => return output::fail(&e),
        },
    };
    let key = match Keypair::generate() {
        Ok(key) => key,
        Err(e) => return output::fail(&e.to_string()),
    };
    if let Err(e) = key.save(&path) {
        return output::fail(&e.to_string());
    }
    if json {
        output::print_json(
            &serde_json::json!({"did": key.did().as_str(), "key_file": path.display().to_string()}),
        );
    } else {
        println!("{}", key.did());
        eprintln!("key written to {}", path.display());
    }
    0
}
