//! Any bytes as a WASM module: admission must refuse with a code or admit; an admitted module runs
//! under a small fuel and memory budget and must end in an outcome, never a panic or a host fault.
//!
//!
//! No panic is allowed, wasmi's included: the phone library aborts on a panic (profile `mobile`), so
//! admission must refuse, by validating first, every module wasmi 2.0.0 would panic on. (Desktop
//! builds also catch a wasmi panic in admission; this target does not rely on it.)
#![no_main]

use std::sync::{Arc, OnceLock};

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

fuzz_target!(|data: &[u8]| {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    let sandbox = SANDBOX.get_or_init(|| Sandbox::new(&limits()));
    if let Ok(module) = sandbox.admit(data, "run") {
        let outcome = sandbox.execute(&module, Arc::from(&b"fuzz input"[..]), &limits(), &Control::default(), &mut |_| {});
        assert!(outcome.fuel_used <= limits().fuel);
        assert!(outcome.output.len() <= 4096);
        assert!(outcome.peak_memory_bytes <= 1 << 20);
    }
});
