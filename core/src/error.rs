//! The spec's error codes (Appendix B) and the `Problem` type every user-facing check returns.
//!
//! Everything a user can cause — a bad spec, a hostile module, a budget that cannot pay — ends up as a
//! `Problem`: a stable code, the field or part at fault, and a message that says what to fix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Error codes of spec Appendix B. The string form (`"J001"`) is stable: scripts match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// InvalidJobSpec — fix the specification.
    J001,
    /// InsufficientBudget — increase the budget.
    J002,
    /// NoExecutorAvailable — wait or adjust requirements.
    J003,
    /// ExecutionTimeout — retry with a longer deadline or more fuel.
    J004,
    /// ValidationFailed — check determinism.
    J005,
    /// DisputeRaised — await resolution.
    J006,
    /// PaymentFailed — check mana balance.
    J007,
    /// SandboxViolation — review security policy.
    J008,
    /// ResourceExhausted — increase limits.
    J009,
    /// DeadlineExceeded — extend the deadline.
    J010,
}

impl ErrorCode {
    /// The code as written in the spec, e.g. `"J001"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::J001 => "J001",
            Self::J002 => "J002",
            Self::J003 => "J003",
            Self::J004 => "J004",
            Self::J005 => "J005",
            Self::J006 => "J006",
            Self::J007 => "J007",
            Self::J008 => "J008",
            Self::J009 => "J009",
            Self::J010 => "J010",
        }
    }

    /// The spec's name for the error.
    pub fn name(self) -> &'static str {
        match self {
            Self::J001 => "InvalidJobSpec",
            Self::J002 => "InsufficientBudget",
            Self::J003 => "NoExecutorAvailable",
            Self::J004 => "ExecutionTimeout",
            Self::J005 => "ValidationFailed",
            Self::J006 => "DisputeRaised",
            Self::J007 => "PaymentFailed",
            Self::J008 => "SandboxViolation",
            Self::J009 => "ResourceExhausted",
            Self::J010 => "DeadlineExceeded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing wrong with what a user handed us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub code: ErrorCode,
    /// Dotted path of the field at fault (`budget.max_total`), or the part (`module`) for non-spec input.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    pub fn new(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} {}: {}", self.code, self.code.name(), self.message)
        } else {
            write!(f, "{} {} at `{}`: {}", self.code, self.code.name(), self.field, self.message)
        }
    }
}

impl std::error::Error for Problem {}

/// Why an execution failed (spec §7.1). The names are the spec's; scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    // Executor failures
    OutOfMemory,
    CpuTimeout,
    DiskFull,
    NetworkError,
    CrashOrPanic,
    // Job failures
    InvalidInput,
    UnsupportedOperation,
    DeterminismViolation,
    // System failures
    ValidatorUnavailable,
    DAGWriteFailure,
    ManaInsufficient,
    /// Not in §7.1's list, but named by §4.2's monitor: the wall-clock deadline passed.
    DeadlineExceeded,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfMemory => "OutOfMemory",
            Self::CpuTimeout => "CpuTimeout",
            Self::DiskFull => "DiskFull",
            Self::NetworkError => "NetworkError",
            Self::CrashOrPanic => "CrashOrPanic",
            Self::InvalidInput => "InvalidInput",
            Self::UnsupportedOperation => "UnsupportedOperation",
            Self::DeterminismViolation => "DeterminismViolation",
            Self::ValidatorUnavailable => "ValidatorUnavailable",
            Self::DAGWriteFailure => "DAGWriteFailure",
            Self::ManaInsufficient => "ManaInsufficient",
            Self::DeadlineExceeded => "DeadlineExceeded",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
