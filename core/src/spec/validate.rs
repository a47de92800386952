//! Judging a spec on its own: every problem at once, each with its code and what to fix.
//!
//! Pure: the clock comes in through [`ValidationContext`]. Whether a node exists that can run the job
//! (a GPU, Docker) is not judged here; that is J003 at submit time.

use crate::dag::parse_blob_cid;
use crate::error::{ErrorCode, Problem};
use crate::identity::Did;

use super::{JobCategory, JobSpec, PricingUnit, RedundancyLevel, Runtime};

/// Largest values we accept before calling a request absurd (a typo, not a real need).
const MAX_CPU_CORES: u32 = 4096;
const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024; // 16 TiB
const MAX_CPU_HOURS: f64 = 1.0e6;
const MAX_VALIDATORS: u32 = 100;
const MAX_WASM_PAGES: u32 = 65_536; // 4 GiB, the wasm32 ceiling
const MAX_ARGS_BYTES: usize = 1 << 20;

/// What validation needs from outside the spec.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext {
    /// Now, in Unix seconds.
    pub now: u64,
    /// The module (or contract, or binary) file comes with the spec, so its CID may be left empty.
    pub code_supplied: bool,
}

/// Every problem with `spec`, in field order; empty when the spec is valid.
pub fn validate(spec: &JobSpec, cx: &ValidationContext) -> Vec<Problem> {
    let mut v = Problems(Vec::new());
    check_identity(spec, &mut v);
    check_runtime(spec, cx, &mut v);
    if let Some(input) = &spec.input
        && let Some(cid) = &input.cid
    {
        v.cid("input.cid", cid);
    }
    check_compute(spec, &mut v);
    check_budget(spec, &mut v);
    if let Some(deadline) = spec.deadline
        && deadline <= cx.now
    {
        v.push(
            ErrorCode::J010,
            "deadline",
            format!(
                "the deadline {} ({deadline}) has already passed (now is {}): set a later deadline",
                format_utc(deadline),
                format_utc(cx.now)
            ),
        );
    }
    check_redundancy(spec, &mut v);
    if let Some(rep) = spec.min_reputation
        && !(rep.is_finite() && (0.0..=1.0).contains(&rep))
    {
        v.push(
            ErrorCode::J001,
            "min_reputation",
            format!("{rep} is not a reputation: use a number from 0.0 to 1.0"),
        );
    }
    if let Some(acc) = &spec.accuracy
        && !(acc.target.is_finite() && acc.target > 0.0 && acc.target <= 1.0)
    {
        v.push(
            ErrorCode::J001,
            "accuracy.target",
            format!("{} is not an accuracy: use a fraction above 0 and at most 1 (0.95 for 95%)", acc.target),
        );
    }
    if let Some(category) = &spec.category {
        check_category(spec, category, &mut v);
    }
    v.0
}

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, code: ErrorCode, field: &str, message: String) {
        self.0.push(Problem::new(code, field, message));
    }

    fn cid(&mut self, field: &str, text: &str) {
        if let Err(why) = parse_blob_cid(text) {
            self.push(ErrorCode::J001, field, why);
        }
    }

    fn non_empty(&mut self, field: &str, text: &str, what: &str) {
        if text.trim().is_empty() {
            self.push(ErrorCode::J001, field, format!("{field} is empty: give {what}"));
        }
    }

    fn fraction(&mut self, field: &str, value: f64) {
        if !(value.is_finite() && value > 0.0 && value <= 1.0) {
            self.push(
                ErrorCode::J001,
                field,
                format!("{value} is out of range: use a fraction above 0 and at most 1"),
            );
        }
    }
}

fn check_identity(spec: &JobSpec, v: &mut Problems) {
    if let Some(id) = &spec.id
        && (id.trim().is_empty() || id.len() > 128)
    {
        v.push(ErrorCode::J001, "id", "the job id must be 1 to 128 characters, or left out".into());
    }
    if let Some(submitter) = &spec.submitter
        && let Err(e) = Did::parse(submitter)
    {
        v.push(
            ErrorCode::J001,
            "submitter",
            format!("{e}; or leave `submitter` out (the signer is the submitter)"),
        );
    }
}

fn check_runtime(spec: &JobSpec, cx: &ValidationContext, v: &mut Problems) {
    let code_cid = |v: &mut Problems, field: &str, cid: &str, flag: &str| {
        if cid.trim().is_empty() {
            if !cx.code_supplied {
                v.push(
                    ErrorCode::J001,
                    field,
                    format!(
                        "{field} is empty: give the file's CID (`bafkrei…`) or hand the file over with {flag}"
                    ),
                );
            }
        } else {
            v.cid(field, cid);
        }
    };
    match &spec.runtime {
        Runtime::WASM { module, function, memory_pages } => {
            code_cid(v, "runtime.module", module, "--module");
            v.non_empty(
                "runtime.function",
                function,
                "the name of the exported entry function, e.g. \"run\"",
            );
            if *memory_pages == 0 || *memory_pages > MAX_WASM_PAGES {
                v.push(
                    ErrorCode::J001,
                    "runtime.memory_pages",
                    format!(
                        "{memory_pages} pages is not a memory size: use 1 to {MAX_WASM_PAGES} pages of 64 KiB"
                    ),
                );
            }
        }
        Runtime::Docker { image, tag, .. } => {
            v.non_empty("runtime.image", image, "an image name such as \"blender/blender\"");
            if image.chars().any(char::is_whitespace) {
                v.push(
                    ErrorCode::J001,
                    "runtime.image",
                    format!("`{image}` contains spaces: give an image name"),
                );
            }
            v.non_empty("runtime.tag", tag, "an image tag such as \"3.6\", or leave it out for \"latest\"");
        }
        Runtime::Native { binary, .. } => code_cid(v, "runtime.binary", binary, "the binary file"),
        Runtime::CCL { contract, function, args } => {
            code_cid(v, "runtime.contract", contract, "--module");
            v.non_empty("runtime.function", function, "the contract function to call");
            if args.0.len() > MAX_ARGS_BYTES {
                v.push(
                    ErrorCode::J001,
                    "runtime.args",
                    format!("{} bytes of arguments: put more than 1 MiB in an input blob", args.0.len()),
                );
            }
        }
    }
}

fn check_compute(spec: &JobSpec, v: &mut Problems) {
    let c = &spec.compute;
    if c.min_cpu_cores == 0 || c.min_cpu_cores > MAX_CPU_CORES {
        v.push(
            ErrorCode::J001,
            "compute.min_cpu_cores",
            format!("{} cores: ask for 1 to {MAX_CPU_CORES}", c.min_cpu_cores),
        );
    }
    if c.min_memory_mb == 0 || c.min_memory_mb > MAX_MEMORY_MB {
        v.push(
            ErrorCode::J001,
            "compute.min_memory_mb",
            format!("{} MB: ask for 1 MB to {MAX_MEMORY_MB} MB (16 TiB)", c.min_memory_mb),
        );
    }
    let hours = c.estimated_cpu_hours;
    if !(hours.is_finite() && hours > 0.0 && hours <= MAX_CPU_HOURS) {
        v.push(
            ErrorCode::J001,
            "compute.estimated_cpu_hours",
            format!("{hours} CPU hours: give a positive estimate of at most {MAX_CPU_HOURS} (it sets the fuel budget)"),
        );
    }
    let hours_field = |v: &mut Problems, field: &str, h: f64| {
        if !(h.is_finite() && (0.0..=MAX_CPU_HOURS).contains(&h)) {
            v.push(ErrorCode::J001, field, format!("{h} hours: give a number from 0 to {MAX_CPU_HOURS}"));
        }
    };
    hours_field(v, "compute.estimated_memory_hours", c.estimated_memory_hours);
    if let Some(h) = c.estimated_gpu_hours {
        hours_field(v, "compute.estimated_gpu_hours", h);
    }
    if let Some(gpu) = &c.gpu_required
        && gpu.min_vram_gb > 1024
    {
        v.push(
            ErrorCode::J001,
            "compute.gpu_required.min_vram_gb",
            format!("{} GB of VRAM: ask for at most 1024", gpu.min_vram_gb),
        );
    }
}

fn check_budget(spec: &JobSpec, v: &mut Problems) {
    let Some(budget) = &spec.budget else {
        v.push(
            ErrorCode::J002,
            "budget",
            "the job has no budget: add \"budget\": {\"max_total\": N} with the most mana you will pay"
                .into(),
        );
        return;
    };
    if budget.max_total == 0 {
        v.push(
            ErrorCode::J002,
            "budget.max_total",
            "a budget of 0 mana pays nobody: set max_total above 0".into(),
        );
        return;
    }
    if let Some(unit) = &budget.per_unit {
        if unit.amount == 0 {
            v.push(
                ErrorCode::J002,
                "budget.per_unit.amount",
                "a unit price of 0: set a positive amount".into(),
            );
        } else if unit.amount > budget.max_total {
            v.push(
                ErrorCode::J002,
                "budget.per_unit.amount",
                format!(
                    "one unit costs {} but the whole budget is {}: raise max_total or lower the unit price",
                    unit.amount, budget.max_total
                ),
            );
        }
        if unit.unit == PricingUnit::PerFrame
            && let Some(JobCategory::Rendering { frames, .. }) = &spec.category
        {
            let count: u64 = frames.iter().map(|f| f.count()).sum();
            let cost = count.saturating_mul(unit.amount);
            if cost > budget.max_total {
                v.push(
                    ErrorCode::J002,
                    "budget.max_total",
                    format!(
                        "{count} frames at {} each cost {cost}, more than max_total {}: raise the budget",
                        unit.amount, budget.max_total
                    ),
                );
            }
        }
    }
    if let Some(bonus) = budget.early_completion_bonus
        && bonus > budget.max_total
    {
        v.push(
            ErrorCode::J002,
            "budget.early_completion_bonus",
            format!(
                "a bonus of {bonus} exceeds max_total {}: bonuses are paid from the budget",
                budget.max_total
            ),
        );
    }
}

fn check_redundancy(spec: &JobSpec, v: &mut Problems) {
    let field = "redundancy";
    match spec.redundancy {
        RedundancyLevel::Sampling(n) if n == 0 || n > MAX_VALIDATORS => {
            v.push(ErrorCode::J001, field, format!("Sampling({n}): use 1 to {MAX_VALIDATORS} validators"))
        }
        RedundancyLevel::Full(n) if !(2..=MAX_VALIDATORS).contains(&n) => v.push(
            ErrorCode::J001,
            field,
            format!(
                "Full({n}): full redundancy needs 2 to {MAX_VALIDATORS} executors (use \"None\" for one)"
            ),
        ),
        _ => {}
    }
}

fn check_category(spec: &JobSpec, category: &JobCategory, v: &mut Problems) {
    match category {
        JobCategory::Rendering { frames, .. } => {
            if frames.is_empty() || frames.iter().any(|f| f.count() == 0) {
                v.push(
                    ErrorCode::J001,
                    "category.frames",
                    "give at least one non-empty frame range (start <= end, step >= 1)".into(),
                );
            }
        }
        JobCategory::MachineLearning { dataset, model, .. } => {
            v.cid("category.dataset.cid", &dataset.cid);
            if let Some(cid) = &model.cid {
                v.cid("category.model.cid", cid);
            }
        }
        JobCategory::Scientific { parameters, iterations, .. } => {
            if *iterations == 0 {
                v.push(ErrorCode::J001, "category.iterations", "0 iterations: give at least 1".into());
            }
            if let Some((name, _)) = parameters.iter().find(|(_, x)| !x.is_finite()) {
                v.push(
                    ErrorCode::J001,
                    "category.parameters",
                    format!("parameter `{name}` is not a finite number"),
                );
            }
        }
        JobCategory::DataProcessing { transformation, .. } => {
            v.cid("category.transformation.module", &transformation.module);
        }
        JobCategory::MapReduce { mapper, reducer, partitions } => {
            v.cid("category.mapper.module", &mapper.module);
            v.cid("category.reducer.module", &reducer.module);
            if *partitions == 0 || *partitions > 100_000 {
                v.push(
                    ErrorCode::J001,
                    "category.partitions",
                    format!("{partitions} partitions: use 1 to 100000"),
                );
            }
        }
        JobCategory::WebScraping { urls, rate_limit, .. } => {
            if urls.is_empty() {
                v.push(ErrorCode::J001, "category.urls", "no URLs to scrape: give at least one".into());
            }
            if rate_limit.requests_per_second == 0 {
                v.push(
                    ErrorCode::J001,
                    "category.rate_limit",
                    "0 requests per second: give at least 1".into(),
                );
            }
            if !spec.network.as_ref().is_some_and(|n| n.outbound) {
                v.push(
                    ErrorCode::J001,
                    "network",
                    "a scraping job needs the network: add \"network\": {\"outbound\": true}".into(),
                );
            }
        }
        JobCategory::Federation { participants, threshold, .. } => {
            v.fraction("category.threshold", *threshold);
            for (i, did) in participants.iter().enumerate() {
                if let Err(e) = Did::parse(did) {
                    v.push(ErrorCode::J001, &format!("category.participants[{i}]"), e.to_string());
                }
            }
        }
        JobCategory::Verification { proof, .. } => v.cid("category.proof.proof", &proof.proof),
        JobCategory::Microtask { operations, max_duration_ms } => {
            if operations.is_empty() || *max_duration_ms == 0 {
                v.push(
                    ErrorCode::J001,
                    "category.operations",
                    "a microtask needs at least one operation and a positive max_duration_ms".into(),
                );
            }
        }
    }
}

/// `2025-01-01T00:00:00Z` for a Unix time, without a date library.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
