//! The guest ABI: the `icn` import module and the per-execution state behind it.
//!
//! ```text
//! input_len() -> len                    total input bytes
//! get_input(dst, offset, len) -> n      copy input[offset..offset+len] to memory; n copied, -1 bad pointer
//! put_output(src, len) -> rc            append memory[src..src+len]; 0 ok, -1 bad pointer;
//!                                       past the output cap: keeps what fits and stops the job (J009)
//! log(level, ptr, len)                  level 0=trace..4=error; size-limited; a bad pointer stops the job
//! progress(permille)                    0..=1000, monotonic (lower values are ignored)
//! ```
//! All arguments are i32; pointers and lengths are read as unsigned. A pointer or length outside
//! memory is never honoured: it gives -1, or a trap where the function has no return value.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use wasmi::{Caller, Linker, Memory};

use super::limits::{MemoryLimiter, SandboxLimits};

/// The import module every guest function must come from.
pub const IMPORT_MODULE: &str = "icn";

/// The functions of [`IMPORT_MODULE`] and their types, as (name, params, results) counts of i32.
pub const IMPORTS: [(&str, usize, usize); 5] =
    [("input_len", 0, 1), ("get_input", 3, 1), ("put_output", 2, 1), ("log", 3, 0), ("progress", 1, 0)];

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// 0 = trace … 4 = error.
    pub level: u8,
    pub text: String,
}

/// Why a host function stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostStop {
    OutputLimit,
    BadPointer(&'static str),
}

impl fmt::Display for HostStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutputLimit => f.write_str("output cap reached"),
            Self::BadPointer(func) => write!(f, "icn.{func} was given a pointer or length outside memory"),
        }
    }
}

impl wasmi::errors::HostError for HostStop {}

/// Everything one execution's host functions read and write.
#[derive(Debug)]
pub(crate) struct HostState {
    pub limiter: MemoryLimiter,
    pub memory: Option<Memory>,
    pub input: Arc<[u8]>,
    pub output: Vec<u8>,
    pub output_cap: usize,
    pub output_truncated: bool,
    pub logs: Vec<LogLine>,
    pub log_bytes: u64,
    pub logs_dropped: u64,
    pub log_caps: (u64, u32, u32),
    pub progress: u16,
}

impl HostState {
    pub fn new(input: Arc<[u8]>, limits: &SandboxLimits) -> Self {
        Self {
            limiter: MemoryLimiter::new(limits.memory_bytes, limits.max_table_elements),
            memory: None,
            input,
            output: Vec::new(),
            output_cap: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
            output_truncated: false,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            log_caps: (limits.max_log_bytes, limits.max_log_lines, limits.max_log_line_bytes),
            progress: 0,
        }
    }

    fn keep_log(&mut self, level: u8, bytes: &[u8]) {
        let (max_bytes, max_lines, max_line) = self.log_caps;
        let bytes = &bytes[..bytes.len().min(max_line as usize)];
        if self.logs.len() >= max_lines as usize || self.log_bytes + bytes.len() as u64 > max_bytes {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += bytes.len() as u64;
        self.logs.push(LogLine { level: level.min(4), text: String::from_utf8_lossy(bytes).into_owned() });
    }
}

/// `start..start+len` as a range, if it does not overflow.
fn span(start: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = start as u32 as usize;
    Some(start..start.checked_add(len as u32 as usize)?)
}

/// Adds the `icn` functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), wasmi::Error> {
    linker.func_wrap(IMPORT_MODULE, "input_len", |caller: Caller<'_, HostState>| -> i32 {
        i32::try_from(caller.data().input.len()).unwrap_or(i32::MAX)
    })?;

    linker.func_wrap(
        IMPORT_MODULE,
        "get_input",
        |mut caller: Caller<'_, HostState>, dst: i32, offset: i32, len: i32| -> i32 {
            let Some(memory) = caller.data().memory else { return -1 };
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let offset = offset as u32 as usize;
            let available = state.input.len().saturating_sub(offset);
            let n = (len as u32 as usize).min(available).min(i32::MAX as usize);
            let Some(target) = span(dst, n as i32).and_then(|r| mem.get_mut(r)) else { return -1 };
            // Host functions must never panic (wasmi calls them where unwinding aborts): no indexing.
            let Some(source) = state.input.get(offset..offset + n) else { return 0 };
            target.copy_from_slice(source);
            n as i32
        },
    )?;

    linker.func_wrap(
        IMPORT_MODULE,
        "put_output",
        |mut caller: Caller<'_, HostState>, src: i32, len: i32| -> Result<i32, wasmi::Error> {
            let Some(memory) = caller.data().memory else { return Ok(-1) };
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let Some(bytes) = span(src, len).and_then(|r| mem.get(r)) else { return Ok(-1) };
            let room = state.output_cap.saturating_sub(state.output.len());
            if bytes.len() <= room {
                state.output.extend_from_slice(bytes);
                Ok(0)
            } else {
                state.output.extend_from_slice(&bytes[..room]);
                state.output_truncated = true;
                Err(wasmi::Error::host(HostStop::OutputLimit))
            }
        },
    )?;

    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> Result<(), wasmi::Error> {
            let Some(memory) = caller.data().memory else { return Ok(()) };
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let Some(bytes) = span(ptr, len).and_then(|r| mem.get(r)) else {
                return Err(wasmi::Error::host(HostStop::BadPointer("log")));
            };
            state.keep_log(level.clamp(0, 4) as u8, bytes);
            Ok(())
        },
    )?;

    linker.func_wrap(IMPORT_MODULE, "progress", |mut caller: Caller<'_, HostState>, permille: i32| {
        let state = caller.data_mut();
        state.progress = state.progress.max(permille.clamp(0, 1000) as u16);
    })?;
    Ok(())
}
