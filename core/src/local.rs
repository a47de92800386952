//! One job run on this node, start to finish: spec + module + input in, signed records out.
//!
//! This is the path behind `icn job run-local` and the C API's `icn_run_local`:
//! parse -> runtime check -> validate -> match code and input to their CIDs -> admit -> execute in the
//! sandbox -> store blobs, the job record and the signed result record in one commit.
//! Anything refused before execution stores nothing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use serde::Serialize;

use crate::dag::{SignedRecord, blob_cid, parse_blob_cid};
use crate::error::{ErrorCode, FailureReason, Problem};
use crate::identity::Keypair;
use crate::records::{ENGINE, JobRecord, ResultRecord, ResultStatus};
use crate::sandbox::{Control, ExecStatus, LogLine, MAX_INPUT_BYTES, Progress, Sandbox, SandboxLimits};
use crate::spec::{JobSpec, Runtime, ValidationContext, validate};
use crate::store::Store;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct LocalJob<'a> {
    pub spec_json: &'a str,
    /// The module (or CCL contract) file; if absent, it is read from the store by the spec's CID.
    pub module: Option<&'a [u8]>,
    /// The input file; if absent, read from the store by `input.cid`, or empty.
    pub input: Option<&'a [u8]>,
}

/// How a local run ended. `Refused` means nothing ran and nothing was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    Failed,
    Refused,
}

impl RunStatus {
    /// The CLI's exit code: 0 completed, 1 failed, 2 refused.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Completed => 0,
            Self::Failed => 1,
            Self::Refused => 2,
        }
    }
}

/// Everything `run-local --json` prints. Field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub status: RunStatus,
    pub failure: Option<FailureReason>,
    pub code: Option<ErrorCode>,
    pub message: String,
    /// Every problem found before execution (validation reports them all at once).
    pub problems: Vec<Problem>,
    pub exit_code: Option<i32>,
    pub fuel_used: u64,
    pub fuel_budget: u64,
    pub peak_memory_bytes: u64,
    pub output_bytes: u64,
    pub output_truncated: bool,
    pub output_cid: Option<String>,
    pub result_cid: Option<String>,
    pub job_cid: Option<String>,
    pub module_cid: Option<String>,
    pub input_cid: Option<String>,
    pub progress_permille: u16,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u64,
    pub wall_ms: f64,
    #[serde(skip)]
    pub output: Vec<u8>,
}

impl RunReport {
    fn refused(problems: Vec<Problem>) -> Self {
        let first = problems.first().cloned();
        let message = match problems.len() {
            0 => String::new(),
            1 => problems[0].to_string(),
            n => format!("{n} problems; the first: {}", problems[0]),
        };
        Self {
            status: RunStatus::Refused,
            failure: None,
            code: first.map(|p| p.code),
            message,
            problems,
            exit_code: None,
            fuel_used: 0,
            fuel_budget: 0,
            peak_memory_bytes: 0,
            output_bytes: 0,
            output_truncated: false,
            output_cid: None,
            result_cid: None,
            job_cid: None,
            module_cid: None,
            input_cid: None,
            progress_permille: 0,
            logs: Vec::new(),
            logs_dropped: 0,
            wall_ms: 0.0,
            output: Vec::new(),
        }
    }
}

/// The node's own ceilings, applied on top of what the spec asks for.
#[derive(Debug, Clone)]
pub struct NodeCaps {
    pub sandbox: SandboxLimits,
}

impl Default for NodeCaps {
    fn default() -> Self {
        // A spec may ask for up to this much; the spec's own numbers usually set a lower budget.
        Self {
            sandbox: SandboxLimits {
                fuel: 3_600_000_000_000, // one nominal CPU hour
                memory_bytes: 4 << 30,   // wasm32's ceiling
                ..SandboxLimits::default()
            },
        }
    }
}

/// The limits one job runs under: the spec's fuel and memory, capped by the node.
pub fn limits_for(spec: &JobSpec, caps: &NodeCaps) -> SandboxLimits {
    let mut limits = caps.sandbox.clone();
    limits.fuel = spec.fuel_budget().min(caps.sandbox.fuel);
    let memory = spec.wasm_memory_limit_bytes().unwrap_or(caps.sandbox.memory_bytes);
    limits.memory_bytes = memory.min(caps.sandbox.memory_bytes);
    limits
}

/// Runs `job` to the end and records it. Never panics on bad input; refusals store nothing.
pub fn run_local(
    store: &Store,
    key: &Keypair,
    sandbox: &Sandbox,
    caps: &NodeCaps,
    job: LocalJob<'_>,
    control: &Control,
    on_progress: &mut dyn FnMut(&Progress),
) -> RunReport {
    match prepare(store, job) {
        Ok(prepared) => execute(store, key, sandbox, caps, prepared, control, on_progress),
        Err(problems) => RunReport::refused(problems),
    }
}

struct Prepared {
    spec: JobSpec,
    entry: String,
    module: Vec<u8>,
    module_cid: Cid,
    input: Vec<u8>,
    input_cid: Option<Cid>,
}

fn prepare(store: &Store, job: LocalJob<'_>) -> Result<Prepared, Vec<Problem>> {
    let mut spec = JobSpec::from_json(job.spec_json).map_err(|p| vec![p])?;
    let (code_field, declared, entry) = match &spec.runtime {
        Runtime::WASM { module, function, .. } => ("runtime.module", module.clone(), function.clone()),
        Runtime::CCL { contract, function, .. } => ("runtime.contract", contract.clone(), function.clone()),
        other => {
            return Err(vec![Problem::new(
                ErrorCode::J003,
                "runtime.type",
                format!(
                    "this node runs WASM and CCL jobs; a {} job needs a host that offers it (submit it to a \
                     coordinator instead)",
                    other.type_name()
                ),
            )]);
        }
    };
    let cx = ValidationContext { now: now_secs(), code_supplied: job.module.is_some() };
    let problems = validate(&spec, &cx);
    if !problems.is_empty() {
        return Err(problems);
    }

    let module = match job.module {
        Some(bytes) => {
            let actual = blob_cid(bytes);
            if !declared.is_empty() && parse_blob_cid(&declared).ok() != Some(actual) {
                return Err(vec![Problem::new(
                    ErrorCode::J001,
                    code_field,
                    format!(
                        "the module file's CID is {actual} but the spec names {declared}: hand over the right file \
                         or fix the CID"
                    ),
                )]);
            }
            bytes.to_vec()
        }
        None => from_store(store, &declared, code_field, "--module")?,
    };
    let module_cid = blob_cid(&module);
    match &mut spec.runtime {
        Runtime::WASM { module, .. } => *module = module_cid.to_string(),
        Runtime::CCL { contract, .. } => *contract = module_cid.to_string(),
        _ => {}
    }

    let declared_input = spec.input.as_ref().and_then(|i| i.cid.clone());
    let input = match (&spec.runtime, job.input, &declared_input) {
        (Runtime::CCL { args, .. }, None, None) => args.0.clone(),
        (_, Some(bytes), declared) => {
            let actual = blob_cid(bytes);
            if let Some(declared) = declared
                && parse_blob_cid(declared).ok() != Some(actual)
            {
                return Err(vec![Problem::new(
                    ErrorCode::J001,
                    "input.cid",
                    format!("the input file's CID is {actual} but the spec names {declared}"),
                )]);
            }
            bytes.to_vec()
        }
        (_, None, Some(declared)) => from_store(store, declared, "input.cid", "--input")?,
        (_, None, None) => Vec::new(),
    };
    if input.len() > MAX_INPUT_BYTES {
        return Err(vec![Problem::new(
            ErrorCode::J009,
            "input",
            format!("the input is {} bytes; the guest ABI allows at most {MAX_INPUT_BYTES}", input.len()),
        )]);
    }
    let input_cid =
        (!input.is_empty() || job.input.is_some() || declared_input.is_some()).then(|| blob_cid(&input));
    Ok(Prepared { spec, entry, module, module_cid, input, input_cid })
}

fn from_store(store: &Store, declared: &str, field: &str, flag: &str) -> Result<Vec<u8>, Vec<Problem>> {
    let cid = parse_blob_cid(declared).map_err(|why| vec![Problem::new(ErrorCode::J001, field, why)])?;
    match store.blob(&cid) {
        Ok(Some(bytes)) if blob_cid(&bytes) == cid => Ok(bytes),
        Ok(_) => Err(vec![Problem::new(
            ErrorCode::J001,
            field,
            format!("{cid} is not in this node's store: hand the file over with {flag}"),
        )]),
        Err(e) => {
            Err(vec![Problem::new(ErrorCode::J009, field, format!("reading {cid} from the store: {e}"))])
        }
    }
}

fn execute(
    store: &Store,
    key: &Keypair,
    sandbox: &Sandbox,
    caps: &NodeCaps,
    p: Prepared,
    control: &Control,
    on_progress: &mut dyn FnMut(&Progress),
) -> RunReport {
    let admitted = match sandbox.admit(&p.module, &p.entry) {
        Ok(admitted) => admitted,
        Err(problem) => return RunReport::refused(vec![problem]),
    };
    let mut limits = limits_for(&p.spec, caps);
    if let Some(deadline) = p.spec.deadline {
        // Validation refused deadlines already past; here the remaining time becomes a wall-clock limit.
        let left = Duration::from_secs(deadline.saturating_sub(now_secs()));
        limits.deadline = Instant::now().checked_add(left);
    }
    let started_at_ms = now_ms();
    let outcome = sandbox.execute(&admitted, Arc::from(p.input.as_slice()), &limits, control, on_progress);
    let finished_at_ms = now_ms();

    let status = match outcome.status {
        ExecStatus::Completed => ResultStatus::Completed,
        ExecStatus::Failed => ResultStatus::Failed,
        ExecStatus::Cancelled => ResultStatus::Cancelled,
    };
    let output_cid =
        (!outcome.output.is_empty() || status == ResultStatus::Completed).then(|| blob_cid(&outcome.output));
    let job_record =
        JobRecord { spec: p.spec, module: p.module_cid, input: p.input_cid, submitted_at_ms: started_at_ms };
    let mut report = RunReport {
        status: if status == ResultStatus::Completed { RunStatus::Completed } else { RunStatus::Failed },
        failure: outcome.failure,
        code: outcome.problem.as_ref().map(|p| p.code),
        message: outcome.problem.as_ref().map_or_else(|| "completed".to_owned(), ToString::to_string),
        problems: outcome.problem.iter().cloned().collect(),
        exit_code: outcome.exit_code,
        fuel_used: outcome.fuel_used,
        fuel_budget: limits.fuel,
        peak_memory_bytes: outcome.peak_memory_bytes,
        output_bytes: outcome.output.len() as u64,
        output_truncated: outcome.output_truncated,
        output_cid: output_cid.map(|c| c.to_string()),
        result_cid: None,
        job_cid: None,
        module_cid: Some(p.module_cid.to_string()),
        input_cid: p.input_cid.map(|c| c.to_string()),
        progress_permille: outcome.progress_permille,
        logs: outcome.logs,
        logs_dropped: outcome.logs_dropped,
        wall_ms: outcome.wall.as_secs_f64() * 1000.0,
        output: Vec::new(),
    };

    let recorded = (|| -> Result<(Cid, Cid), String> {
        let job = SignedRecord::sign(job_record, key).map_err(|e| e.to_string())?;
        let result = SignedRecord::sign(
            ResultRecord {
                job: job.cid(),
                award: None,
                status,
                failure: outcome.failure,
                code: report.code,
                message: outcome.problem.as_ref().map(|p| p.message.clone()),
                exit_code: outcome.exit_code,
                output: output_cid,
                output_bytes: outcome.output.len() as u64,
                output_truncated: outcome.output_truncated,
                fuel_used: outcome.fuel_used,
                fuel_budget: limits.fuel,
                peak_memory_bytes: outcome.peak_memory_bytes,
                started_at_ms,
                finished_at_ms,
                engine: ENGINE.to_owned(),
            },
            key,
        )
        .map_err(|e| e.to_string())?;
        let mut batch = store.batch().map_err(|e| e.to_string())?;
        batch.put_blob(&p.module).map_err(|e| e.to_string())?;
        if p.input_cid.is_some() {
            batch.put_blob(&p.input).map_err(|e| e.to_string())?;
        }
        if output_cid.is_some() {
            batch.put_blob(&outcome.output).map_err(|e| e.to_string())?;
        }
        batch.put_record(&job, Some(job.cid())).map_err(|e| e.to_string())?;
        batch.put_record(&result, Some(job.cid())).map_err(|e| e.to_string())?;
        batch.commit().map_err(|e| e.to_string())?;
        Ok((job.cid(), result.cid()))
    })();
    match recorded {
        Ok((job, result)) => {
            report.job_cid = Some(job.to_string());
            report.result_cid = Some(result.to_string());
        }
        Err(e) => {
            // The job ran but its records could not be written: say so rather than pretend.
            report.status = RunStatus::Failed;
            report.failure = Some(FailureReason::DAGWriteFailure);
            report.code = Some(ErrorCode::J009);
            report.message = format!("the job ran but its records could not be stored: {e}");
        }
    }
    report.output = outcome.output;
    report
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
