//! `icn job validate` and `icn job run-local`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use icn_mesh_core::local::{LocalJob, NodeCaps, RunStatus, run_local};
use icn_mesh_core::sandbox::{Control, Sandbox};
use icn_mesh_core::spec::{JobSpec, ValidationContext, validate};
use icn_mesh_core::{ErrorCode, Problem};

use crate::output::{self, bytes, problem_json, thousands};

#[derive(Subcommand)]
pub enum JobCommand {
    /// Check a job spec; every problem is listed with its code. Exit 0 valid, 2 invalid.
    Validate {
        spec: PathBuf,
        /// The module file that will go with the spec (lets `runtime.module` be empty).
        #[arg(long)]
        module: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run a WASM or CCL job on this node and record it. Exit 0 completed, 1 failed, 2 refused.
    RunLocal {
        spec: PathBuf,
        /// The module (or contract) file. Without it, the spec's CID is looked up in the store.
        #[arg(long)]
        module: Option<PathBuf>,
        #[arg(long)]
        input: Option<PathBuf>,
        /// Write the job's output here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The node's data directory (store and key). Default: the per-user data directory.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Submit a job to a coordinator; with --wait, follow it to the end.
    Submit {
        spec: PathBuf,
        #[arg(long)]
        coordinator: String,
        /// The submitter's key file (`icn keygen --out FILE`); its DID pays.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        module: Option<PathBuf>,
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// A job's state on a coordinator.
    Status {
        job: String,
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: JobCommand) -> u8 {
    match command {
        JobCommand::Submit { spec, coordinator, key, module, input, wait, json } => {
            crate::cmd_mesh::submit(&spec, &coordinator, &key, module, input, wait, json)
        }
        JobCommand::Status { job, coordinator, json } => crate::cmd_mesh::status(&job, &coordinator, json),
        JobCommand::Validate { spec, module, json } => validate_cmd(&spec, module.is_some(), json),
        JobCommand::RunLocal { spec, module, input, output, data, json } => {
            run_local_cmd(&spec, module, input, output, data, json)
        }
    }
}

fn read_text(path: &PathBuf, what: &str) -> Result<String, Problem> {
    std::fs::read_to_string(path)
        .map_err(|e| Problem::new(ErrorCode::J001, what, format!("cannot read {}: {e}", path.display())))
}

fn read_bytes(path: &PathBuf, what: &str) -> Result<Vec<u8>, Problem> {
    std::fs::read(path)
        .map_err(|e| Problem::new(ErrorCode::J001, what, format!("cannot read {}: {e}", path.display())))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn validate_cmd(path: &PathBuf, code_supplied: bool, json: bool) -> u8 {
    let problems = match read_text(path, "spec").and_then(|text| JobSpec::from_json(&text)) {
        Ok(spec) => validate(&spec, &ValidationContext { now: now(), code_supplied }),
        Err(problem) => vec![problem],
    };
    let valid = problems.is_empty();
    if json {
        output::print_json(&serde_json::json!({
            "valid": valid,
            "problems": problems.iter().map(problem_json).collect::<Vec<_>>(),
        }));
    } else if valid {
        println!("valid: {}", path.display());
    } else {
        output::print_problems(&problems);
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
    }
    if valid { 0 } else { 2 }
}

fn run_local_cmd(
    spec_path: &PathBuf,
    module: Option<PathBuf>,
    input: Option<PathBuf>,
    output_path: Option<PathBuf>,
    data: Option<PathBuf>,
    json: bool,
) -> u8 {
    let refuse = |problem: Problem| -> u8 {
        if json {
            output::print_json(&serde_json::json!({
                "status": "refused", "failure": null, "code": problem.code, "message": problem.to_string(),
                "problems": [problem_json(&problem)],
                "fuel_used": 0, "peak_memory_bytes": 0, "output_bytes": 0, "output_cid": null,
                "result_cid": null, "wall_ms": 0.0,
            }));
        }
        output::print_problems(&[problem]);
        2
    };
    let spec_json = match read_text(spec_path, "spec") {
        Ok(text) => text,
        Err(p) => return refuse(p),
    };
    let module = match module.as_ref().map(|m| read_bytes(m, "module")).transpose() {
        Ok(m) => m,
        Err(p) => return refuse(p),
    };
    let input = match input.as_ref().map(|i| read_bytes(i, "input")).transpose() {
        Ok(i) => i,
        Err(p) => return refuse(p),
    };
    let (store, key) = match output::data_dir(data)
        .and_then(|dir| Ok((output::open_store(&dir)?, output::node_key(&dir)?)))
    {
        Ok(pair) => pair,
        Err(e) => return refuse(Problem::new(ErrorCode::J009, "data", e)),
    };

    let sandbox = Sandbox::default();
    let job = LocalJob { spec_json: &spec_json, module: module.as_deref(), input: input.as_deref() };
    let show_progress = !json && std::io::stderr().is_terminal();
    let mut last_permille = u16::MAX;
    let report =
        run_local(&store, &key, &sandbox, &NodeCaps::default(), job, &Control::default(), &mut |p| {
            if show_progress && p.permille != last_permille {
                last_permille = p.permille;
                eprint!(
                    "\r  running… {:>5.1}%  fuel {}",
                    f64::from(p.permille) / 10.0,
                    thousands(p.fuel_used)
                );
            }
        });
    if show_progress && last_permille != u16::MAX {
        eprint!("\r\x1b[K");
    }

    if let Some(path) = &output_path
        && report.status != RunStatus::Refused
        && let Err(e) = std::fs::write(path, &report.output)
    {
        eprintln!("error: cannot write the output to {}: {e}", path.display());
    }

    if json {
        output::print_json(&report);
    } else {
        print_human(&report, output_path.is_some());
    }
    report.status.exit_code() as u8
}

fn print_human(r: &icn_mesh_core::local::RunReport, output_written: bool) {
    match r.status {
        RunStatus::Refused => {
            output::print_problems(&r.problems);
            return;
        }
        RunStatus::Completed => println!("completed"),
        RunStatus::Failed => {
            let failure = r.failure.map_or_else(String::new, |f| format!(" ({f})"));
            println!("failed{failure}");
            eprintln!("error: {}", r.message);
        }
    }
    for line in &r.logs {
        const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
        eprintln!("  job {}: {}", LEVELS[usize::from(line.level.min(4))], line.text);
    }
    if r.logs_dropped > 0 {
        eprintln!("  ({} more log lines dropped)", r.logs_dropped);
    }
    println!(
        "  fuel    {} of {}\n  memory  {} peak\n  wall    {:.1} ms",
        thousands(r.fuel_used),
        thousands(r.fuel_budget),
        bytes(r.peak_memory_bytes),
        r.wall_ms
    );
    if let Some(cid) = &r.output_cid {
        println!(
            "  output  {} {cid}{}",
            bytes(r.output_bytes),
            if r.output_truncated { " (cut at the cap)" } else { "" }
        );
    }
    if !output_written
        && let Ok(text) = std::str::from_utf8(&r.output)
        && !text.is_empty()
        && text.len() <= 4096
    {
        for line in text.lines().take(20) {
            println!("  | {line}");
        }
    }
    if let Some(job) = &r.job_cid {
        println!("  job     {job}");
    }
    if let Some(result) = &r.result_cid {
        println!("{result}");
    }
}
