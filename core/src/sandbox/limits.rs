//! Every limit the sandbox enforces, its default, and the memory limiter that also records the peak.
//!
//! wasmi enforces no limit unless asked; the sandbox always asks. Where each limit is checked:
//! - `max_module_bytes`, `EnforcedLimits::strict()` (functions, globals, tables, segments, params):
//!   at admission, before anything is instantiated (J008 / J001).
//! - `memory_bytes`, `max_table_elements`: by [`MemoryLimiter`] on every grow, including the initial
//!   allocation at instantiation (J009).
//! - `fuel`: per slice by wasmi's fuel metering (J004, `CpuTimeout`).
//! - `max_output_bytes`, `max_log_bytes`, `max_log_lines`: in the `icn.*` host functions (J009).
//! - `max_recursion_depth`: by wasmi's call stack (a trap, `CrashOrPanic`).
//! - `deadline`: between slices (`DeadlineExceeded`, J010).

use wasmi::ResourceLimiter;
use wasmi_core::LimiterError;

/// Limits for one execution. `Default` is what a phone-sized node gets with no other information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Total fuel for the job. Default 3.6e9 (the spec default of 0.001 CPU hours).
    pub fuel: u64,
    /// Fuel per slice: the granularity of pause, cancel and progress. Default 4M (a few ms).
    pub slice_fuel: u64,
    /// Linear memory cap in bytes. Default 64 MiB.
    pub memory_bytes: u64,
    /// Elements across a table's life. Default 10,000.
    pub max_table_elements: u64,
    /// Output cap. Default 64 MiB; writing past it stops the job (J009) and keeps what fit.
    pub max_output_bytes: u64,
    /// Log volume kept; lines beyond it are counted, not kept. Default 64 KiB.
    pub max_log_bytes: u64,
    /// Log lines kept. Default 1,000.
    pub max_log_lines: u32,
    /// Bytes of one log line kept. Default 1 KiB.
    pub max_log_line_bytes: u32,
    /// Largest module admitted. Default 16 MiB.
    pub max_module_bytes: usize,
    /// Nested calls before a stack-overflow trap. Default 1,000 (wasmi's).
    pub max_recursion_depth: usize,
    /// Wall-clock instant after which the job stops (the spec's deadline). Default: none.
    pub deadline: Option<std::time::Instant>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            fuel: 3_600_000_000,
            slice_fuel: 4_000_000,
            memory_bytes: 64 << 20,
            max_table_elements: 10_000,
            max_output_bytes: 64 << 20,
            max_log_bytes: 64 << 10,
            max_log_lines: 1_000,
            max_log_line_bytes: 1 << 10,
            max_module_bytes: 16 << 20,
            max_recursion_depth: 1_000,
            deadline: None,
        }
    }
}

/// Caps memory and tables, remembering the largest memory size it allowed and whether it refused.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimiter {
    pub memory_cap: u64,
    pub table_cap: u64,
    pub peak_memory: u64,
    /// The largest size a refused grow asked for, if any grow was refused.
    pub refused_memory: Option<u64>,
}

impl MemoryLimiter {
    pub fn new(memory_cap: u64, table_cap: u64) -> Self {
        Self { memory_cap, table_cap, ..Self::default() }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let desired = desired as u64;
        let allowed = desired <= self.memory_cap && maximum.is_none_or(|m| desired <= m as u64);
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        } else {
            self.refused_memory = Some(self.refused_memory.unwrap_or(0).max(desired));
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(desired as u64 <= self.table_cap && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
