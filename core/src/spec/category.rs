//! Job categories (spec §2.2) and the small types they carry.
//!
//! The spec names these types without defining them; each is given the smallest shape that lets a
//! coordinator shard or price the job (frame ranges, partitions, participants) and no more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::repr::type_tagged_enum;

type_tagged_enum! {
    /// What kind of work a job is (spec §2.2). JSON: `{"type": "Rendering", "frames": [...], ...}`.
    #[derive(Debug, Clone, PartialEq)]
    pub enum JobCategory {
        /// Frames to render; shards by frame range.
        Rendering { frames: Vec<FrameSpec>, format: RenderFormat, #[serde(default)] quality: QualityLevel },
        MachineLearning {
            task: MlTask,
            model: ModelSpec,
            dataset: DatasetSpec,
            #[serde(default)]
            metrics: Vec<MetricType>,
        },
        Scientific {
            simulation: SimulationType,
            #[serde(default)]
            parameters: BTreeMap<String, f64>,
            iterations: u64,
        },
        DataProcessing { input_format: DataFormat, output_format: DataFormat, transformation: CodeSpec },
        /// Map and reduce modules; shards into `partitions` map jobs.
        MapReduce { mapper: CodeSpec, reducer: CodeSpec, partitions: u32 },
        WebScraping {
            urls: Vec<String>,
            #[serde(default)]
            selectors: Vec<String>,
            rate_limit: RateLimit,
        },
        Federation { task: FederationTask, participants: Vec<String>, threshold: f64 },
        Verification {
            proof: ProofSpec,
            /// Field elements as decimal strings (they exceed 64 bits).
            #[serde(default)]
            public_inputs: Vec<String>,
        },
        Microtask { operations: Vec<MicroOp>, max_duration_ms: u64 },
    }
}

impl JobCategory {
    /// The Appendix A name of the category.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Rendering { .. } => "Rendering",
            Self::MachineLearning { .. } => "MachineLearning",
            Self::Scientific { .. } => "Scientific",
            Self::DataProcessing { .. } => "DataProcessing",
            Self::MapReduce { .. } => "MapReduce",
            Self::WebScraping { .. } => "WebScraping",
            Self::Federation { .. } => "Federation",
            Self::Verification { .. } => "Verification",
            Self::Microtask { .. } => "Microtask",
        }
    }
}

/// An inclusive range of frames, `start..=end`, every `step`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    pub start: u32,
    pub end: u32,
    #[serde(default = "one")]
    pub step: u32,
}

fn one() -> u32 {
    1
}

impl FrameSpec {
    /// Number of frames in the range (0 if it is empty or `step` is 0).
    pub fn count(&self) -> u64 {
        if self.step == 0 || self.end < self.start {
            0
        } else {
            u64::from((self.end - self.start) / self.step) + 1
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderFormat {
    Png,
    Jpeg,
    Exr,
    Pgm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QualityLevel {
    Draft,
    #[default]
    Standard,
    Final,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlTask {
    Training,
    FineTuning,
    Inference,
    Evaluation,
}

/// A model, by CID or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub cid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub framework: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub cid: String,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricType {
    Accuracy,
    Loss,
    F1,
    Precision,
    Recall,
    Perplexity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SimulationType {
    MonteCarlo,
    MolecularDynamics,
    Climate,
    FluidDynamics,
    NBody,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataFormat {
    Csv,
    Json,
    Parquet,
    Text,
    Binary,
}

/// Code to run: a WASM module by CID and its entry point (used by MapReduce and DataProcessing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeSpec {
    pub module: String,
    #[serde(default = "super::default_entry")]
    pub function: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FederationTask {
    Consensus,
    Validation,
    Aggregation,
    Training,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofSpec {
    /// Proof system, e.g. `"groth16"`.
    pub system: String,
    /// CID of the proof bytes.
    pub proof: String,
}

/// One operation of a microtask: a name and integer arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroOp {
    pub op: String,
    #[serde(default)]
    pub args: Vec<i64>,
}
