//! Any bytes as a WASM module: admission must refuse with a code or admit; an admitted module runs
//! under a small fuel and memory budget and must end in an outcome, never a panic or a host fault.
//!
//! Admission catches panics raised inside wasmi's compiler (wasmi 2.0.0 has some; see
//! `sandbox/admission.rs`). libFuzzer's panic hook aborts on every panic, so this target lets panics
//! from wasmi's own files unwind to that catch; any other panic still aborts and is reported.
#![no_main]

use std::sync::{Arc, Once, OnceLock};

use icn_mesh_core::sandbox::{Control, Sandbox, SandboxLimits};
use libfuzzer_sys::fuzz_target;

fn limits() -> SandboxLimits {
    SandboxLimits {
        fuel: 200_000,
        slice_fuel: 10_000,
        memory_bytes: 1 << 20,
        max_output_bytes: 4096,
        ..SandboxLimits::default()
    }
}

fn let_wasmi_panics_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/wasmi")) {
                abort_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_wasmi_panics_unwind();
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    let sandbox = SANDBOX.get_or_init(|| Sandbox::new(&limits()));
    if let Ok(module) = sandbox.admit(data, "run") {
        let outcome = sandbox.execute(&module, Arc::from(&b"fuzz input"[..]), &limits(), &Control::default(), &mut |_| {});
        assert!(outcome.fuel_used <= limits().fuel);
        assert!(outcome.output.len() <= 4096);
        assert!(outcome.peak_memory_bytes <= 1 << 20);
    }
});
