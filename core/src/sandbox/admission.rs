//! Module admission: everything checked before a module may be instantiated.
//!
//! In order: size cap, a pre-scan for inputs wasmi 2.0.0 mishandles, wasmi validation and eager compilation under `EnforcedLimits::strict()` (no
//! start function), imports (only the `icn` functions, with their exact types), exports (`memory`
//! and the entry, of type `() -> i32`). Each refusal is a [`Problem`] with its code.

use std::sync::Arc;

use wasmi::errors::ErrorKind;
use wasmi::{Engine, ExternType, Linker, Module, ValType};

use crate::error::{ErrorCode, Problem};

use super::abi::{HostState, IMPORT_MODULE, IMPORTS};

/// A module that passed admission, ready to instantiate any number of times.
#[derive(Debug, Clone)]
pub struct AdmittedModule {
    /// Compiled into an engine of its own (see `Sandbox`).
    pub(crate) module: Module,
    pub(crate) linker: Arc<Linker<HostState>>,
    pub(crate) entry: String,
}

impl AdmittedModule {
    /// The entry function the module will be run from.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

pub(crate) fn admit(
    engine: &Engine,
    linker: Arc<Linker<HostState>>,
    bytes: &[u8],
    entry: &str,
    max_bytes: usize,
) -> Result<AdmittedModule, Problem> {
    if bytes.len() > max_bytes {
        return Err(Problem::new(
            ErrorCode::J008,
            "module",
            format!(
                "the module is {} bytes, over this node's {max_bytes}-byte limit: shrink it (strip debug \
                 sections, -Oz) or split the job",
                bytes.len()
            ),
        ));
    }
    prescan(bytes)?;
    validate(bytes)?;
    // wasmi 2.0.0 can panic on some malformed modules instead of returning an error (our fuzzer found
    // a translator underflow). `validate` refuses every module known to do it before wasmi sees it;
    // this catch is the second line for builds that unwind (desktop, C). The phone library aborts on
    // a panic (profile `mobile`), so there the validation is the defence. The engine is this module's
    // own and is dropped with it, so nothing half-built survives a panic.
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Module::new(engine, bytes)));
    let module = match compiled {
        Ok(result) => result.map_err(compile_problem)?,
        Err(_) => {
            return Err(Problem::new(
                ErrorCode::J001,
                "module",
                "the module is not valid WebAssembly: the compiler gave up on it (wasmi panicked); rebuild it \
                 with a standard toolchain"
                    .to_owned(),
            ));
        }
    };
    check_imports(&module)?;
    check_exports(&module, entry)?;
    Ok(AdmittedModule { module, linker, entry: entry.to_owned() })
}

/// Validates the whole module with wasmparser, the parser wasmi itself uses, under the proposals the
/// sandbox's engine accepts, before wasmi compiles it. wasmi validates as it translates, operator by
/// operator, and its translator can trip over malformed code before its validator reports it (the
/// "out of bounds StackPos" panic of `tests/fixtures/wasmi-translator-stackpos-panic.wasm`); a
/// module that passes this has well-formed stacks everywhere. Costs one extra pass over the code.
fn validate(bytes: &[u8]) -> Result<(), Problem> {
    use wasmparser::WasmFeatures as F;
    // wasmi 2.0.0's `Config::default_features`, less multi-memory (off in `Sandbox::new`).
    let features = F::MUTABLE_GLOBAL
        | F::MULTI_VALUE
        | F::SATURATING_FLOAT_TO_INT
        | F::SIGN_EXTENSION
        | F::BULK_MEMORY
        | F::REFERENCE_TYPES
        | F::GC_TYPES
        | F::TAIL_CALL
        | F::EXTENDED_CONST
        | F::FLOATS;
    wasmparser::Validator::new_with_features(features).validate_all(bytes).map(drop).map_err(|e| {
        Problem::new(
            ErrorCode::J001,
            "module",
            format!("the module is not valid WebAssembly: {e}; rebuild it with a standard toolchain"),
        )
    })
}

/// Refuses what wasmi 2.0.0 would panic on instead of rejecting. Found by our `module_admission`
/// fuzzer: a code section that declares no functions but carries bytes makes wasmi's average-size
/// check divide by zero. Such a section is malformed anyway. Any other parse error is left for wasmi
/// to report in its own words.
fn prescan(bytes: &[u8]) -> Result<(), Problem> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CodeSectionStart { count: 0, size, .. }) if size > 0 => {
                return Err(Problem::new(
                    ErrorCode::J001,
                    "module",
                    format!(
                        "the module is not valid WebAssembly: its code section declares no functions but holds \
                         {size} bytes; rebuild it"
                    ),
                ));
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn compile_problem(e: wasmi::Error) -> Problem {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::UserLimits(_) | ErrorKind::ImplementationLimits(_) => Problem::new(
            ErrorCode::J008,
            "module",
            format!("the module exceeds the sandbox's structural limits: {text}"),
        ),
        _ if text.contains("start function") => Problem::new(
            ErrorCode::J008,
            "module",
            "the module has a start function, which would run outside fuel slicing: move its work into the \
             entry function"
                .to_owned(),
        ),
        _ => Problem::new(
            ErrorCode::J001,
            "module",
            format!(
                "the module is not valid WebAssembly: {text}; rebuild it for wasm32 (no SIMD, no threads)"
            ),
        ),
    }
}

fn check_imports(module: &Module) -> Result<(), Problem> {
    let mut refused = Vec::new();
    for import in module.imports() {
        let name = format!("{}.{}", import.module(), import.name());
        let expected =
            IMPORTS.iter().find(|(n, ..)| *n == import.name()).filter(|_| import.module() == IMPORT_MODULE);
        let ok = match (expected, import.ty()) {
            (Some((_, params, results)), ExternType::Func(ty)) => {
                ty.params().len() == *params
                    && ty.results().len() == *results
                    && ty.params().iter().chain(ty.results()).all(|t| *t == ValType::I32)
            }
            _ => false,
        };
        if !ok {
            refused.push(if expected.is_some() { format!("{name} (wrong type)") } else { name });
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Problem::new(
            ErrorCode::J008,
            "module",
            format!(
                "the module imports what the sandbox does not offer: {}. Only icn.input_len, icn.get_input, \
                 icn.put_output, icn.log and icn.progress exist (no WASI, no clock, no randomness)",
                refused.join(", ")
            ),
        ))
    }
}

fn check_exports(module: &Module, entry: &str) -> Result<(), Problem> {
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(Problem::new(
            ErrorCode::J001,
            "module",
            "the module does not export its memory as `memory`: link with --export-memory (clang/lld do by default)"
                .to_owned(),
        ));
    }
    match module.get_export(entry) {
        Some(ExternType::Func(ty)) if ty.params().is_empty() && ty.results() == [ValType::I32] => Ok(()),
        Some(ExternType::Func(ty)) => Err(Problem::new(
            ErrorCode::J001,
            "runtime.function",
            format!(
                "the entry `{entry}` has type {:?} -> {:?}; it must take nothing and return i32 (0 = success)",
                ty.params(),
                ty.results()
            ),
        )),
        _ => Err(Problem::new(
            ErrorCode::J001,
            "runtime.function",
            format!(
                "the module exports no function `{entry}`: export it (-Wl,--export={entry}) or fix the name"
            ),
        )),
    }
}
