//! Any bytes as a job spec: parse, validate, and every form must round-trip without panicking.
#![no_main]

use icn_mesh_core::spec::{JobSpec, ValidationContext, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = JobSpec::from_json(text) {
            let _ = validate(&spec, &ValidationContext { now: 1_800_000_000, code_supplied: false });
            let _ = spec.fuel_budget();
            let back = JobSpec::from_json(&spec.to_json_pretty()).expect("our own JSON parses");
            let wire = JobSpec::from_wire(&spec.to_wire()).expect("our own postcard parses");
            // NaN-free floats compare equal after a round trip (JSON cannot carry NaN at all).
            assert_eq!(back.to_wire(), spec.to_wire());
            assert_eq!(wire.to_wire(), spec.to_wire());
        }
    }
    // The wire decoder sees untrusted bytes from peers.
    let _ = JobSpec::from_wire(data);
});
