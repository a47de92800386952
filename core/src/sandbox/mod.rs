//! The WASM sandbox: wasmi (no JIT, no WASI), fuel-metered, memory-capped, run in fuel slices.
//!
//! A [`Sandbox`] holds the engine configuration: fuel on, eager compilation (so fuel does not depend
//! on which functions were called first), strict enforced limits, no start functions, canonical NaNs
//! (the `deterministic` wasmi feature). [`Sandbox::admit`] checks a module once and compiles it into
//! an engine of its own (so its code is freed with it); [`Sandbox::execute`]
//! runs it on the calling thread in slices of `slice_fuel`, and between slices obeys a [`Control`]
//! (pause, resume, cancel) and reports [`Progress`]. [`Sandbox::spawn`] does the same on a thread of
//! its own, for callers that must not block.
//!
//! Determinism rule: every WASM job is deterministic by construction — no clock, no randomness, no
//! host state but the input, fuel counted identically on every node, and every NaN produced by
//! arithmetic canonicalised (so ARM and x86 give the same bits). `determinism: true` therefore needs
//! no extra check for WASM and CCL jobs; floats are allowed.

mod abi;
mod admission;
mod limits;

use std::borrow::Borrow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmi::{
    CompilationMode, Config, EnforcedLimits, Engine, Linker, Store, TypedResumableCall,
    TypedResumableCallOutOfFuel,
};

pub use abi::{IMPORT_MODULE, IMPORTS, LogLine};
pub use admission::AdmittedModule;
pub use limits::SandboxLimits;

use crate::error::{ErrorCode, FailureReason, Problem};
use abi::{HostState, HostStop};

/// Largest input a job may be given (the guest ABI counts bytes in i32).
pub const MAX_INPUT_BYTES: usize = i32::MAX as usize;

/// The engine configuration and limits of a node. Cheap to share; build one per node.
///
/// Each admitted module gets an engine of its own: wasmi 2.0's code map is append-only, so compiled
/// code lives as long as its engine. A node-wide engine would keep every module it ever ran; a
/// per-module engine frees a module's code when the module and its runs are dropped (or, for the
/// one module [`Sandbox::admit_by_cid`] keeps, when another takes its place).
pub struct Sandbox {
    config: Config,
    max_module_bytes: usize,
    /// The last module admitted by [`Sandbox::admit_by_cid`], under its CID.
    last: Mutex<Option<(cid::Cid, AdmittedModule)>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("max_module_bytes", &self.max_module_bytes).finish_non_exhaustive()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new(&SandboxLimits::default())
    }
}

impl Sandbox {
    /// A sandbox whose engine enforces the structural parts of `limits` (module size, recursion).
    pub fn new(limits: &SandboxLimits) -> Self {
        let mut config = Config::default();
        config
            .consume_fuel(true)
            .compilation_mode(CompilationMode::Eager)
            .enforced_limits(EnforcedLimits::strict())
            .allow_start_fn(false)
            .set_max_recursion_depth(limits.max_recursion_depth)
            .wasm_multi_memory(false);
        Self { config, max_module_bytes: limits.max_module_bytes, last: Mutex::new(None) }
    }

    /// [`Sandbox::admit`] for a module whose bytes the caller has checked are `cid`'s, reusing the
    /// module admitted last this way when it is the same one with the same entry. A node runs many
    /// jobs of one module (a job's shards, a stream of microtasks), and admission (validation and
    /// compilation) was 9% of an executor's CPU per trivial job (bench `mesh throughput`). Each run
    /// still gets a store and an instance of its own, so nothing passes from one job to the next.
    pub fn admit_by_cid(
        &self,
        cid: &cid::Cid,
        module: &[u8],
        entry: &str,
    ) -> Result<AdmittedModule, Problem> {
        let last = || self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kept, admitted)) = last().as_ref()
            && kept == cid
            && admitted.entry == entry
        {
            return Ok(admitted.clone());
        }
        let admitted = self.admit(module, entry)?;
        *last() = Some((*cid, admitted.clone()));
        Ok(admitted)
    }

    /// Validates, compiles and checks a module (see `admission`).
    pub fn admit(&self, module: &[u8], entry: &str) -> Result<AdmittedModule, Problem> {
        let engine = Engine::new(&self.config);
        let mut linker = Linker::new(&engine);
        // The names are fixed and unique; defining them cannot clash.
        abi::add_to_linker(&mut linker).unwrap_or_else(|e| unreachable!("icn host functions: {e}"));
        admission::admit(&engine, Arc::new(linker), module, entry, self.max_module_bytes)
    }

    /// Runs an admitted module to the end on this thread.
    pub fn execute(
        &self,
        module: &AdmittedModule,
        input: Arc<[u8]>,
        limits: &SandboxLimits,
        control: &Control,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Outcome {
        Execution::new(module, input, limits, control).run(on_progress)
    }

    /// Begins a run on this thread with a first slice of at most `first_slice_fuel`: a short job
    /// ends within it, and the caller is spared handing it to another thread. A longer one comes
    /// back [`Begun::Going`], to [`Started::finish`] on a thread that may block. Fuel used is the
    /// same either way (see `tests/sandbox.rs`).
    pub fn start(
        &self,
        module: AdmittedModule,
        input: Arc<[u8]>,
        limits: SandboxLimits,
        control: Arc<Control>,
        first_slice_fuel: u64,
    ) -> Begun {
        let mut run = Execution::new(module, input, limits, control);
        run.slice_fuel = first_slice_fuel.clamp(1, run.limits().slice_fuel.max(1));
        let call = match run.begin() {
            Ok(call) => call,
            Err(end) => return Begun::Done(run.outcome(end)),
        };
        match run.ended(call) {
            Slice::Ended(end) => Begun::Done(run.outcome(end)),
            Slice::OutOfFuel(pending) => {
                run.slice_fuel = run.limits().slice_fuel;
                Begun::Going(Box::new(Started { run, pending }))
            }
        }
    }

    /// Runs an admitted module on a new thread. Progress arrives on the handle's channel.
    pub fn spawn(
        self: &Arc<Self>,
        module: AdmittedModule,
        input: Arc<[u8]>,
        limits: SandboxLimits,
    ) -> RunHandle {
        let control = Arc::new(Control::default());
        let (tx, progress) = mpsc::channel();
        let sandbox = Arc::clone(self);
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("icn-wasm".into())
            .spawn(move || {
                sandbox.execute(&module, input, &limits, &thread_control, &mut |p| {
                    let _ = tx.send(*p);
                })
            })
            .map_err(|e| e.to_string());
        RunHandle { control, progress, thread }
    }
}

/// How [`Sandbox::start`] left a run.
#[allow(missing_debug_implementations)]
pub enum Begun {
    /// It ended within its first slice.
    Done(Outcome),
    /// It needs more fuel: finish it on a thread that may block.
    Going(Box<Started>),
}

/// A run that has had its first slice, to go on wherever [`Started::finish`] is called.
#[allow(missing_debug_implementations)]
pub struct Started {
    run: Execution<AdmittedModule, SandboxLimits, Arc<Control>>,
    pending: TypedResumableCallOutOfFuel<i32>,
}

impl Started {
    /// Runs the rest to the end on this thread.
    pub fn finish(self: Box<Self>, on_progress: &mut dyn FnMut(&Progress)) -> Outcome {
        let Started { mut run, pending } = *self;
        let end = run.go_on(pending, on_progress);
        run.outcome(end)
    }
}

/// A job running on its own thread.
#[derive(Debug)]
pub struct RunHandle {
    pub control: Arc<Control>,
    pub progress: mpsc::Receiver<Progress>,
    thread: Result<std::thread::JoinHandle<Outcome>, String>,
}

impl RunHandle {
    /// Waits for the job to end.
    pub fn join(self) -> Outcome {
        match self.thread {
            Ok(handle) => {
                handle.join().unwrap_or_else(|_| Outcome::host_fault("the execution thread panicked"))
            }
            Err(e) => Outcome::host_fault(&format!("could not start the execution thread: {e}")),
        }
    }
}

/// Pause, resume and cancel, obeyed between fuel slices.
#[derive(Debug, Default)]
pub struct Control {
    /// Fast path: 0 = run, otherwise look at `state`.
    flags: AtomicU8,
    state: Mutex<ControlState>,
    wake: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct ControlState {
    paused: bool,
    cancelled: bool,
}

impl Control {
    pub fn pause(&self) {
        self.update(|s| s.paused = true);
    }

    pub fn resume(&self) {
        self.update(|s| s.paused = false);
    }

    pub fn cancel(&self) {
        self.update(|s| s.cancelled = true);
    }

    pub fn is_cancelled(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).cancelled
    }

    fn update(&self, change: impl FnOnce(&mut ControlState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        self.flags.store(u8::from(state.paused) | (u8::from(state.cancelled) << 1), Ordering::Release);
        self.wake.notify_all();
    }

    /// Blocks while paused, calling `notify(true)` before waiting and `notify(false)` after (without
    /// holding the lock, so `notify` may itself pause or resume). Returns `true` if the run must stop.
    fn checkpoint(&self, mut notify: impl FnMut(bool)) -> bool {
        if self.flags.load(Ordering::Acquire) == 0 {
            return false;
        }
        let state = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.cancelled {
            return true;
        }
        if !state.paused {
            return false;
        }
        notify(true);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.paused && !state.cancelled {
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let cancelled = state.cancelled;
        drop(state);
        notify(false);
        cancelled
    }
}

/// What a running job has done so far; sent after every slice and on pause/resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub fuel_used: u64,
    pub fuel_budget: u64,
    /// What the guest last reported through `icn.progress`.
    pub permille: u16,
    pub output_bytes: u64,
    pub paused: bool,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Completed,
    Failed,
    Cancelled,
}

/// Everything an execution produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExecStatus,
    pub failure: Option<FailureReason>,
    /// Code and explanation when the job did not complete.
    pub problem: Option<Problem>,
    /// The entry's return value, if it returned.
    pub exit_code: Option<i32>,
    pub output: Vec<u8>,
    pub output_truncated: bool,
    pub fuel_used: u64,
    pub peak_memory_bytes: u64,
    pub progress_permille: u16,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u64,
    pub slices: u64,
    pub wall: Duration,
}

impl Outcome {
    fn host_fault(message: &str) -> Self {
        Self {
            status: ExecStatus::Failed,
            failure: Some(FailureReason::CrashOrPanic),
            problem: Some(Problem::new(ErrorCode::J008, "", message)),
            exit_code: None,
            output: Vec::new(),
            output_truncated: false,
            fuel_used: 0,
            peak_memory_bytes: 0,
            progress_permille: 0,
            logs: Vec::new(),
            logs_dropped: 0,
            slices: 0,
            wall: Duration::ZERO,
        }
    }
}

/// One run of one module: the store, the fuel account and the slice loop. It borrows or owns its
/// module, limits and control (`Sandbox::execute` borrows; a [`Started`] run owns them, so it can
/// go on on another thread).
struct Execution<M, L, C> {
    module: M,
    store: Store<HostState>,
    limits: L,
    control: C,
    /// The most fuel one slice gets (the limits' `slice_fuel`, or less for a first slice).
    slice_fuel: u64,
    /// Fuel handed to wasmi and not yet accounted for.
    fuel_given: u64,
    fuel_used: u64,
    slices: u64,
    started: Instant,
}

enum End {
    Returned(i32),
    Failed(FailureReason, Problem),
    Cancelled,
}

/// How one slice of a call ended.
enum Slice {
    Ended(End),
    /// Out of the slice's fuel: resume it with more.
    OutOfFuel(TypedResumableCallOutOfFuel<i32>),
}

impl<M: Borrow<AdmittedModule>, L: Borrow<SandboxLimits>, C: Borrow<Control>> Execution<M, L, C> {
    fn new(module: M, input: Arc<[u8]>, limits: L, control: C) -> Self {
        let mut store = Store::new(module.borrow().module.engine(), HostState::new(input, limits.borrow()));
        store.limiter(|state| &mut state.limiter);
        let slice_fuel = limits.borrow().slice_fuel;
        Self {
            module,
            store,
            limits,
            control,
            slice_fuel,
            fuel_given: 0,
            fuel_used: 0,
            slices: 0,
            started: Instant::now(),
        }
    }

    fn limits(&self) -> &SandboxLimits {
        self.limits.borrow()
    }

    fn run(mut self, on_progress: &mut dyn FnMut(&Progress)) -> Outcome {
        let end = match self.begin().map(|call| self.ended(call)) {
            Ok(Slice::OutOfFuel(pending)) => self.go_on(pending, on_progress),
            Ok(Slice::Ended(end)) | Err(end) => end,
        };
        self.outcome(end)
    }

    /// What the run came to.
    fn outcome(mut self, end: End) -> Outcome {
        self.settle_fuel();
        let memory_now =
            self.store.data().memory.map_or(0, |m| m.size(&self.store) * crate::spec::WASM_PAGE_BYTES);
        let (status, failure, problem, exit_code) = match end {
            End::Returned(0) => (ExecStatus::Completed, None, None, Some(0)),
            // It asked for memory, was refused, and gave up: out of memory, whatever code it chose.
            End::Returned(code) if self.store.data().limiter.refused_memory.is_some() => {
                let End::Failed(reason, problem) =
                    self.memory_exhausted(self.store.data().limiter.refused_memory)
                else {
                    unreachable!("memory_exhausted always fails")
                };
                (ExecStatus::Failed, Some(reason), Some(problem), Some(code))
            }
            End::Returned(code) => (
                ExecStatus::Failed,
                Some(FailureReason::InvalidInput),
                Some(Problem::new(
                    ErrorCode::J001,
                    "",
                    format!(
                        "the job's entry returned {code}: the job reports its own failure (see its logs)"
                    ),
                )),
                Some(code),
            ),
            End::Failed(reason, problem) => (ExecStatus::Failed, Some(reason), Some(problem), None),
            End::Cancelled => (
                ExecStatus::Cancelled,
                None,
                Some(Problem::new(ErrorCode::J004, "", "the execution was cancelled by the node")),
                None,
            ),
        };
        let state = self.store.data();
        Outcome {
            status,
            failure,
            problem,
            exit_code,
            output: state.output.clone(),
            output_truncated: state.output_truncated,
            fuel_used: self.fuel_used,
            peak_memory_bytes: state.limiter.peak_memory.max(memory_now),
            progress_permille: state.progress,
            logs: state.logs.clone(),
            logs_dropped: state.logs_dropped,
            slices: self.slices,
            wall: self.started.elapsed(),
        }
    }

    /// Moves what wasmi burned of the fuel it was given into `fuel_used`.
    fn settle_fuel(&mut self) {
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_used += self.fuel_given.saturating_sub(left);
        self.fuel_given = left;
    }

    /// Hands wasmi its next slice: at least `required`, at most what the budget has left.
    fn refuel(&mut self, required: u64) -> bool {
        self.settle_fuel();
        let remaining = self.limits().fuel.saturating_sub(self.fuel_used);
        let slice = self.slice_fuel.max(required).min(remaining);
        if slice == 0 || slice < required {
            return false;
        }
        self.slices += 1;
        self.fuel_given = slice;
        self.store.set_fuel(slice).is_ok()
    }

    fn progress(&self, paused: bool) -> Progress {
        let state = self.store.data();
        Progress {
            fuel_used: self.fuel_used,
            fuel_budget: self.limits().fuel,
            permille: state.progress,
            output_bytes: state.output.len() as u64,
            paused,
        }
    }

    /// Instantiates the module and calls its entry with a first slice of fuel.
    fn begin(&mut self) -> Result<Result<TypedResumableCall<i32>, wasmi::Error>, End> {
        if !self.refuel(0) {
            return Err(self.out_of_fuel());
        }
        let module = self.module.borrow();
        let instance = match module.linker.instantiate_and_start(&mut self.store, &module.module) {
            Ok(instance) => instance,
            Err(e) => return Err(self.instantiation_failed(e)),
        };
        let memory = instance.get_memory(&self.store, "memory");
        self.store.data_mut().memory = memory;
        let Ok(entry) = instance.get_typed_func::<(), i32>(&self.store, &self.module.borrow().entry) else {
            // Admission checked the export and its type.
            return Err(End::Failed(
                FailureReason::CrashOrPanic,
                Problem::new(ErrorCode::J001, "runtime.function", "the entry function disappeared"),
            ));
        };
        Ok(entry.call_resumable(&mut self.store, ()))
    }

    /// How a call ended, or the call to resume if it ran out of its slice's fuel.
    fn ended(&self, call: Result<TypedResumableCall<i32>, wasmi::Error>) -> Slice {
        match call {
            Ok(TypedResumableCall::Finished(code)) => Slice::Ended(End::Returned(code)),
            Ok(TypedResumableCall::OutOfFuel(pending)) => Slice::OutOfFuel(pending),
            Ok(TypedResumableCall::HostTrap(pending)) => {
                Slice::Ended(self.host_stopped(pending.host_error()))
            }
            Err(e) => Slice::Ended(self.trapped(&e)),
        }
    }

    /// The slice loop, from a call out of fuel: between slices, progress, the control and the
    /// deadline, then the next slice.
    fn go_on(
        &mut self,
        mut pending: TypedResumableCallOutOfFuel<i32>,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> End {
        loop {
            self.settle_fuel();
            on_progress(&self.progress(false));
            let stop = self.control.borrow().checkpoint(|paused| on_progress(&self.progress(paused)));
            if stop {
                return End::Cancelled;
            }
            if self.limits().deadline.is_some_and(|d| Instant::now() >= d) {
                return End::Failed(
                    FailureReason::DeadlineExceeded,
                    Problem::new(
                        ErrorCode::J010,
                        "deadline",
                        "the job's deadline passed while it ran: extend the deadline or make the job smaller",
                    ),
                );
            }
            if !self.refuel(pending.required_fuel()) {
                return self.out_of_fuel();
            }
            let call = pending.resume(&mut self.store);
            pending = match self.ended(call) {
                Slice::Ended(end) => return end,
                Slice::OutOfFuel(pending) => pending,
            };
        }
    }

    fn out_of_fuel(&self) -> End {
        End::Failed(
            FailureReason::CpuTimeout,
            Problem::new(
                ErrorCode::J004,
                "compute.estimated_cpu_hours",
                format!(
                    "the job used its whole fuel budget ({} fuel) without finishing: raise estimated_cpu_hours \
                     if it is meant to run longer, or look for an endless loop",
                    self.limits().fuel
                ),
            ),
        )
    }

    fn memory_exhausted(&self, asked: Option<u64>) -> End {
        let cap = self.limits().memory_bytes;
        let asked = asked.map_or_else(String::new, |a| format!(" (it asked for {} KiB)", a / 1024));
        End::Failed(
            FailureReason::OutOfMemory,
            Problem::new(
                ErrorCode::J009,
                "runtime.memory_pages",
                format!(
                    "the job needed more than its {} KiB memory cap{asked}: raise memory_pages and min_memory_mb",
                    cap / 1024
                ),
            ),
        )
    }

    fn instantiation_failed(&self, e: wasmi::Error) -> End {
        if let Some(asked) = self.store.data().limiter.refused_memory {
            return self.memory_exhausted(Some(asked));
        }
        if e.as_trap_code() == Some(wasmi::TrapCode::OutOfFuel) {
            return self.out_of_fuel();
        }
        End::Failed(
            FailureReason::CrashOrPanic,
            Problem::new(ErrorCode::J009, "module", format!("the module could not be instantiated: {e}")),
        )
    }

    fn host_stopped(&self, error: &wasmi::Error) -> End {
        match error.downcast_ref::<HostStop>() {
            Some(HostStop::OutputLimit) => End::Failed(
                FailureReason::DiskFull,
                Problem::new(
                    ErrorCode::J009,
                    "",
                    format!(
                        "the job wrote more than the {}-byte output cap; the first {} bytes are kept",
                        self.limits().max_output_bytes,
                        self.limits().max_output_bytes
                    ),
                ),
            ),
            Some(stop @ HostStop::BadPointer(_)) => {
                End::Failed(FailureReason::CrashOrPanic, Problem::new(ErrorCode::J008, "", stop.to_string()))
            }
            None => {
                End::Failed(FailureReason::CrashOrPanic, Problem::new(ErrorCode::J008, "", error.to_string()))
            }
        }
    }

    fn trapped(&self, e: &wasmi::Error) -> End {
        use wasmi::TrapCode;
        match e.as_trap_code() {
            Some(TrapCode::OutOfFuel) => self.out_of_fuel(),
            Some(TrapCode::GrowthOperationLimited | TrapCode::OutOfSystemMemory) => {
                self.memory_exhausted(self.store.data().limiter.refused_memory)
            }
            Some(TrapCode::StackOverflow) => End::Failed(
                FailureReason::CrashOrPanic,
                Problem::new(
                    ErrorCode::J009,
                    "",
                    format!(
                        "the job trapped: call stack exhausted (more than {} nested calls); look for unbounded \
                         recursion",
                        self.limits().max_recursion_depth
                    ),
                ),
            ),
            Some(code) => End::Failed(
                FailureReason::CrashOrPanic,
                Problem::new(ErrorCode::J001, "", format!("the job trapped: {code}")),
            ),
            None => End::Failed(
                FailureReason::CrashOrPanic,
                Problem::new(ErrorCode::J008, "", format!("the job stopped: {e}")),
            ),
        }
    }
}
