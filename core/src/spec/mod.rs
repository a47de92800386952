//! Job specifications (spec §2): the types, their JSON and wire forms, and validation.
//!
//! JSON follows Appendix A: runtimes and categories tagged by `"type"`, redundancy written
//! `"Sampling(3)"`. Every field a submitter may leave out has a default, documented on the field.
//! Unknown fields are refused (a misspelt `"redundency"` would otherwise be silently ignored).
//! The wire form is postcard (see [`JobSpec::to_wire`]).
//!
//! Validation ([`validate`]) judges the spec on its own; whether some node can run it is decided at
//! submit time (J003), not here.

mod category;
mod repr;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use category::*;
pub use validate::{ValidationContext, validate};

use crate::error::{ErrorCode, Problem};
use repr::type_tagged_enum;

/// Mana, the unit of payment. Whole units; no fractions.
pub type Mana = u64;

/// Seconds since the Unix epoch (UTC).
pub type Epoch = u64;

/// Fuel per estimated CPU hour (spec §4.1: a nominal 1 THz instruction rate).
pub const FUEL_PER_CPU_HOUR: f64 = 3.6e12;

/// Bytes in one WebAssembly page.
pub const WASM_PAGE_BYTES: u64 = 65_536;

/// A complete job specification (spec §2.1).
///
/// `code` of the spec's pseudo-code is the `runtime` here: the runtime names what to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The submitter's name for the job. Optional: the job record's CID is its identity on the mesh.
    #[serde(default)]
    pub id: Option<String>,
    /// The submitter's DID. Optional in a file: the signer of the job record is the submitter.
    #[serde(default)]
    pub submitter: Option<String>,
    pub runtime: Runtime,
    /// Input data; none by default (the job reads zero bytes).
    #[serde(default)]
    pub input: Option<InputSpec>,
    #[serde(default)]
    pub compute: ComputeRequirements,
    #[serde(default)]
    pub storage: StorageRequirements,
    /// Network access; `None` (the default) means no network at all.
    #[serde(default)]
    pub network: Option<NetworkRequirements>,
    /// Required: there is no default budget (J002 when missing).
    #[serde(default)]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub payment_type: PaymentType,
    /// Must complete by this time (Unix seconds). `None` (the default): no deadline.
    #[serde(default)]
    pub deadline: Option<Epoch>,
    /// Default `None`: the single executor's result is trusted.
    #[serde(default)]
    pub redundancy: RedundancyLevel,
    /// Default `Public`.
    #[serde(default)]
    pub privacy: PrivacyLevel,
    #[serde(default)]
    pub accuracy: Option<AccuracySpec>,
    /// The job must give the same output bytes on every node. Default `true`: WASM jobs are
    /// deterministic by construction here (no clock, no randomness, canonical NaNs).
    #[serde(default = "default_true")]
    pub determinism: bool,
    /// Default `BestScore` (§3.2).
    #[serde(default)]
    pub selection_strategy: SelectionStrategy,
    /// Bids from executors below this reputation (0.0–1.0) are refused. Default: none.
    #[serde(default)]
    pub min_reputation: Option<f64>,
    /// What kind of work this is (§2.2); used for sharding. Default: none.
    #[serde(default)]
    pub category: Option<JobCategory>,
}

fn default_true() -> bool {
    true
}

impl JobSpec {
    /// Parses a spec from JSON. A syntax error, a missing required field, an unknown field or an
    /// unknown runtime type is a J001 problem that names the line and column.
    pub fn from_json(text: &str) -> Result<Self, Problem> {
        serde_json::from_str(text).map_err(|e| {
            Problem::new(
                ErrorCode::J001,
                "",
                format!(
                    "the job spec is not valid JSON for a JobSpec: {e}; see spec Appendix A for the format"
                ),
            )
        })
    }

    /// The spec as pretty JSON in the Appendix A shape.
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain data to JSON cannot fail: every map key is a string.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Postcard bytes: the form specs travel in between nodes.
    pub fn to_wire(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads postcard bytes written by [`JobSpec::to_wire`].
    pub fn from_wire(bytes: &[u8]) -> Result<Self, Problem> {
        postcard::from_bytes(bytes)
            .map_err(|e| Problem::new(ErrorCode::J001, "", format!("undecodable job spec on the wire: {e}")))
    }

    /// The fuel this job may burn: `estimated_cpu_hours × 3.6e12` (§4.1), saturating.
    pub fn fuel_budget(&self) -> u64 {
        let fuel = self.compute.estimated_cpu_hours * FUEL_PER_CPU_HOUR;
        if fuel.is_finite() && fuel > 0.0 { fuel.min(u64::MAX as f64) as u64 } else { 0 }
    }

    /// The memory a WASM job may use: the smaller of `memory_pages` and `min_memory_mb`.
    pub fn wasm_memory_limit_bytes(&self) -> Option<u64> {
        match &self.runtime {
            Runtime::WASM { memory_pages, .. } => {
                let pages = u64::from(*memory_pages).saturating_mul(WASM_PAGE_BYTES);
                Some(pages.min(self.compute.min_memory_mb.saturating_mul(1 << 20)))
            }
            _ => None,
        }
    }
}

type_tagged_enum! {
    /// How the job runs (spec §2.1).
    #[derive(Debug, Clone, PartialEq)]
    #[allow(clippy::upper_case_acronyms)]
    pub enum Runtime {
        /// A WebAssembly module in the DAG, run in the wasmi sandbox.
        WASM {
            /// CID of the module (`bafkrei…`). May be empty when the module file is handed over with
            /// the spec (`--module`); then the file's CID is used.
            #[serde(default)]
            module: String,
            /// The exported entry point, type `() -> i32`. Default `"run"`.
            #[serde(default = "default_entry")]
            function: String,
            /// Linear memory cap in 64 KiB pages. Default 1024 (64 MiB).
            #[serde(default = "default_memory_pages")]
            memory_pages: u32,
        },
        /// A container image, run by hosts that offer Docker.
        Docker {
            image: String,
            /// Default `"latest"`.
            #[serde(default = "default_tag")]
            tag: String,
            #[serde(default)]
            entrypoint: Vec<String>,
        },
        /// A native binary in the DAG, run by hosts that opt in.
        Native {
            binary: String,
            #[serde(default)]
            args: Vec<String>,
            #[serde(default)]
            env: BTreeMap<String, String>,
        },
        /// A CCL contract: the CID of a WASM module, run in the same sandbox with `args` as its input.
        CCL {
            contract: String,
            #[serde(default = "default_entry")]
            function: String,
            /// Encoded arguments, as a string of bytes (JSON: an array of numbers or a UTF-8 string).
            #[serde(default)]
            args: Args,
        },
    }
}

impl Runtime {
    /// The Appendix A name of the runtime type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::WASM { .. } => "WASM",
            Self::Docker { .. } => "Docker",
            Self::Native { .. } => "Native",
            Self::CCL { .. } => "CCL",
        }
    }
}

fn default_entry() -> String {
    "run".to_owned()
}
fn default_memory_pages() -> u32 {
    1024
}
fn default_tag() -> String {
    "latest".to_owned()
}

/// Encoded contract arguments. JSON accepts a UTF-8 string or an array of bytes; the wire and
/// DAG-CBOR carry a byte string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args(pub Vec<u8>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match std::str::from_utf8(&self.0) {
                Ok(text) => s.serialize_str(text),
                Err(_) => self.0.serialize(s),
            }
        } else {
            serde_bytes::Bytes::new(&self.0).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Str(String),
            Bytes(Vec<u8>),
        }
        if d.is_human_readable() {
            Ok(match Text::deserialize(d)? {
                Text::Str(s) => Args(s.into_bytes()),
                Text::Bytes(b) => Args(b),
            })
        } else {
            serde_bytes::ByteBuf::deserialize(d).map(|b| Args(b.into_vec()))
        }
    }
}

/// The job's input (spec §2.1 `InputSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// CID of the input blob (`bafkrei…`). If the input file is handed over with the spec, it must match.
    #[serde(default)]
    pub cid: Option<String>,
    /// Size in bytes, if known (lets executors judge storage and bandwidth before fetching).
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// CPU, memory and GPU needs (spec §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeRequirements {
    /// Default 1.
    #[serde(default = "default_cores")]
    pub min_cpu_cores: u32,
    /// Default 64.
    #[serde(default = "default_memory_mb")]
    pub min_memory_mb: u64,
    #[serde(default)]
    pub gpu_required: Option<GpuSpec>,
    /// Default: any architecture.
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// Default 0.001 h (3.6e9 fuel, a few seconds of wasmi on a phone core).
    #[serde(default = "default_cpu_hours")]
    pub estimated_cpu_hours: f64,
    /// Default 0.
    #[serde(default)]
    pub estimated_memory_hours: f64,
    #[serde(default)]
    pub estimated_gpu_hours: Option<f64>,
}

impl Default for ComputeRequirements {
    fn default() -> Self {
        Self {
            min_cpu_cores: default_cores(),
            min_memory_mb: default_memory_mb(),
            gpu_required: None,
            architecture: None,
            estimated_cpu_hours: default_cpu_hours(),
            estimated_memory_hours: 0.0,
            estimated_gpu_hours: None,
        }
    }
}

fn default_cores() -> u32 {
    1
}
fn default_memory_mb() -> u64 {
    64
}
fn default_cpu_hours() -> f64 {
    0.001
}

/// A GPU the job needs. JSON: `{"type": "NVIDIA", "min_vram_gb": 8}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    #[serde(rename = "type")]
    pub vendor: GpuVendor,
    pub min_vram_gb: u32,
    /// Minimum CUDA compute capability such as `"8.0"`, for NVIDIA jobs. Default: any.
    #[serde(default)]
    pub min_compute_capability: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum GpuVendor {
    NVIDIA,
    AMD,
    Intel,
    Apple,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    X86_64,
    Arm64,
    Armv7,
    Riscv64,
}

/// Disk needs. Default: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRequirements {
    #[serde(default)]
    pub min_disk_mb: u64,
}

/// Network needs; present only when the job needs the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequirements {
    #[serde(default)]
    pub min_bandwidth_mbps: u32,
    /// Whether the job needs to reach hosts outside the mesh.
    #[serde(default)]
    pub outbound: bool,
}

/// What the submitter will pay (spec §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_total: Mana,
    #[serde(default)]
    pub per_unit: Option<PricingModel>,
    #[serde(default)]
    pub early_completion_bonus: Option<Mana>,
    #[serde(default)]
    pub quality_bonus: Option<QualityBonus>,
}

/// Per-unit pricing. JSON: `{"type": "PerFrame", "amount": 50}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingModel {
    #[serde(rename = "type")]
    pub unit: PricingUnit,
    pub amount: Mana,
}

/// The unit a [`PricingModel`] charges by. `PerFrame` is the one Appendix A uses for rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PricingUnit {
    /// Per CPU/GPU hour.
    PerHour,
    /// Per operation completed.
    PerOperation,
    /// Per byte processed.
    PerByte,
    /// Per rendered frame.
    PerFrame,
    /// A fixed price.
    Fixed,
}

/// A bonus for beating the accuracy target (ML and statistical jobs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityBonus {
    pub max_bonus: Mana,
}

/// How payment is made. Only mana exists today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentType {
    #[default]
    Mana,
}

/// How many nodes check a result (spec §5.1). JSON: `"None"`, `"Sampling(3)"`, `"Full(3)"`,
/// `"ZeroKnowledge"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RedundancyLevel {
    #[default]
    None,
    Sampling(u32),
    Full(u32),
    ZeroKnowledge,
}

impl fmt::Display for RedundancyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Sampling(n) => write!(f, "Sampling({n})"),
            Self::Full(n) => write!(f, "Full({n})"),
            Self::ZeroKnowledge => f.write_str("ZeroKnowledge"),
        }
    }
}

impl std::str::FromStr for RedundancyLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let counted = |prefix: &str| -> Option<Result<u32, String>> {
            let inner = s.strip_prefix(prefix)?.strip_prefix('(')?.strip_suffix(')')?;
            Some(inner.trim().parse::<u32>().map_err(|_| format!("`{s}`: the count must be a whole number")))
        };
        match s {
            "None" => Ok(Self::None),
            "ZeroKnowledge" => Ok(Self::ZeroKnowledge),
            _ => {
                if let Some(n) = counted("Sampling") {
                    n.map(Self::Sampling)
                } else if let Some(n) = counted("Full") {
                    n.map(Self::Full)
                } else {
                    Err(format!(
                        "unknown redundancy `{s}`: use \"None\", \"Sampling(n)\", \"Full(n)\" or \"ZeroKnowledge\""
                    ))
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
enum RedundancyWire {
    None,
    Sampling(u32),
    Full(u32),
    ZeroKnowledge,
}

impl Serialize for RedundancyLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            match *self {
                Self::None => RedundancyWire::None,
                Self::Sampling(n) => RedundancyWire::Sampling(n),
                Self::Full(n) => RedundancyWire::Full(n),
                Self::ZeroKnowledge => RedundancyWire::ZeroKnowledge,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for RedundancyLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(match RedundancyWire::deserialize(d)? {
                RedundancyWire::None => Self::None,
                RedundancyWire::Sampling(n) => Self::Sampling(n),
                RedundancyWire::Full(n) => Self::Full(n),
                RedundancyWire::ZeroKnowledge => Self::ZeroKnowledge,
            })
        }
    }
}

/// Who may see the job's data (spec §1.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrivacyLevel {
    #[default]
    Public,
    Private,
    ZeroKnowledge,
}

/// An accuracy target with a bonus per percentage point above it (spec §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracySpec {
    /// A fraction in (0, 1].
    pub target: f64,
    /// Mana per percentage point above the target.
    #[serde(default)]
    pub bonus_per_percent: Mana,
}

/// How the winning bid is chosen (spec §3.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectionStrategy {
    LowestPrice,
    FastestDelivery,
    #[default]
    BestScore,
    Random,
}
