//! `icn`: the command-line face of icn-mesh. Thin: parses arguments, calls `icn_mesh_core`, prints.
//!
//! Exit codes: 0 success (or job completed), 1 the job failed, 2 refused (bad input, with its code).
//! `--json` prints exactly one JSON object on stdout; errors always go to stderr.

mod cmd_dag;
mod cmd_demo;
mod cmd_job;
mod cmd_mesh;
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
    /// Run a coordinator: job intake, auctions, validation, the mana ledger.
    Coordinator {
        /// HOST:PORT to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: String,
        #[arg(long)]
        data: PathBuf,
        /// Mana granted at genesis, applied once however often the coordinator restarts.
        #[arg(long = "grant", value_parser = cmd_mesh::parse_grant)]
        grants: Vec<(icn_mesh_core::identity::Did, u64)>,
        #[arg(long)]
        json: bool,
    },
    /// Run an executor node that bids on and runs jobs from a coordinator.
    Node {
        /// The coordinator's address, DID@HOST:PORT (it prints it on start and writes DIR/address).
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 100)]
        price_per_hour: u64,
        /// Device policy file (TOML; see README "Device policy"). Without one, the defaults: work
        /// only while charging, battery ≥ 90% and ≤ 40 °C, thermal below moderate. Battery and
        /// thermal state come from sysfs; a machine with no battery counts as charging.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Mana balances and the conservation audit.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Start a local mesh (a coordinator and four executors, as processes), run real jobs, show the result.
    Demo {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// One account's balance and locked mana.
    Balance {
        did: String,
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        json: bool,
    },
    /// Every account, the sink, the total granted, and whether they add up (exit 1 if not).
    Audit {
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        json: bool,
    },
}

/// Turns off glibc's "fast bins" before anything else runs. A small block freed beyond the
/// per-thread cache waits in a fast bin, and an allocation of a kilobyte or more first sweeps every
/// fast bin back into the heap (`malloc_consolidate`). The coordinator frees and allocates record-
/// and page-sized blocks all the time, so it swept often: without fast bins a freed block merges at
/// once and nothing is swept, and the allocator's share of the coordinator's CPU in the latency
/// bench fell from 8.5% to 7.0% (its sweeping and unlinking from 2.1% to 0.6%). The per-thread
/// cache (tcache), glibc's fast path, is untouched. Elsewhere (musl, Apple, Android's bionic) there
/// is nothing to turn off.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only changes a setting of glibc's allocator, and runs here before this
    // process starts a second thread; M_MXFAST = 0 is a documented value (no fast bins).
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // Logs go to stderr; `ICN_LOG=info` (or debug, or a per-module filter) shows more than warnings.
    // Without it, a plain level filter: an idle `icn node` then never touches the directive
    // parser's and matcher's code, which stays out of its resident memory.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match tracing_subscriber::EnvFilter::try_from_env("ICN_LOG") {
        Ok(filter) => logs.with_env_filter(filter).init(),
        Err(_) => logs.with_max_level(tracing::Level::WARN).init(),
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Keygen { out, json } => keygen(out, json),
        Command::Job { command } => cmd_job::run(command),
        Command::Dag { command } => cmd_dag::run(command),
        Command::Coordinator { listen, data, grants, json } => {
            cmd_mesh::coordinator(&listen, data, grants, json)
        }
        Command::Node { coordinator, data, price_per_hour, policy } => {
            cmd_mesh::node(&coordinator, data, price_per_hour, policy.as_deref())
        }
        Command::Ledger { command: LedgerCommand::Balance { did, coordinator, json } } => {
            cmd_mesh::balance(&did, &coordinator, json)
        }
        Command::Ledger { command: LedgerCommand::Audit { coordinator, json } } => {
            cmd_mesh::audit(&coordinator, json)
        }
        Command::Demo { json } => cmd_demo::demo(json),
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
