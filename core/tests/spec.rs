//! Job specs: the Appendix A examples, validation codes, and the JSON / postcard / DAG-CBOR forms.

use icn_mesh_core::spec::{
    JobCategory, JobSpec, PricingUnit, RedundancyLevel, Runtime, ValidationContext, validate,
};
use icn_mesh_core::{ErrorCode, Problem};
use proptest::prelude::*;

/// 2026-11-25, after the render example's deadline.
const NOW: u64 = 1_795_600_000;
const CX: ValidationContext = ValidationContext { now: NOW, code_supplied: false };
const MODULE_CID: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

fn appendix(name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/appendix_a.json")).expect("Appendix A is JSON");
    all[name].clone()
}

fn parse(value: &serde_json::Value) -> JobSpec {
    JobSpec::from_json(&value.to_string()).unwrap_or_else(|p| panic!("{p}"))
}

fn codes(problems: &[Problem]) -> Vec<(ErrorCode, &str)> {
    problems.iter().map(|p| (p.code, p.field.as_str())).collect()
}

fn problems_of(json: serde_json::Value) -> Vec<Problem> {
    match JobSpec::from_json(&json.to_string()) {
        Ok(spec) => validate(&spec, &CX),
        Err(p) => vec![p],
    }
}

fn minimal() -> serde_json::Value {
    serde_json::json!({
        "runtime": {"type": "WASM", "module": MODULE_CID},
        "budget": {"max_total": 10}
    })
}

#[test]
fn the_rendering_example_parses_and_only_its_deadline_is_wrong() {
    let spec = parse(&appendix("example_rendering_job"));
    assert!(
        matches!(&spec.runtime, Runtime::Docker { image, tag, .. } if image == "blender/blender" && tag == "3.6")
    );
    assert_eq!(spec.redundancy, RedundancyLevel::Sampling(3));
    assert_eq!(
        spec.budget.as_ref().and_then(|b| b.per_unit).map(|u| (u.unit, u.amount)),
        Some((PricingUnit::PerFrame, 50))
    );
    let problems = validate(&spec, &CX);
    assert_eq!(codes(&problems), vec![(ErrorCode::J010, "deadline")]);
    assert!(problems[0].message.contains("2025-01-01T00:00:00Z"), "{}", problems[0]);

    let mut completed = appendix("example_rendering_job");
    completed["deadline"] = serde_json::json!(NOW + 86_400);
    assert_eq!(validate(&parse(&completed), &CX), vec![]);
}

#[test]
fn the_ml_example_parses_and_lacks_a_budget_and_a_module_cid() {
    let spec = parse(&appendix("example_ml_training_job"));
    assert_eq!(spec.compute.min_memory_mb, 32768);
    assert_eq!(spec.compute.estimated_gpu_hours, Some(24.0));
    let problems = validate(&spec, &CX);
    assert_eq!(codes(&problems), vec![(ErrorCode::J001, "runtime.module"), (ErrorCode::J002, "budget")]);
    assert!(problems[0].message.contains("bafybeig..."), "{}", problems[0]);

    let mut completed = appendix("example_ml_training_job");
    completed["runtime"]["module"] = serde_json::json!(MODULE_CID);
    completed["budget"] = serde_json::json!({"max_total": 2400});
    assert_eq!(validate(&parse(&completed), &CX), vec![]);
}

#[test]
fn defaults_are_the_documented_ones() {
    let spec = parse(&minimal());
    let Runtime::WASM { function, memory_pages, .. } = &spec.runtime else { panic!("WASM") };
    assert_eq!((function.as_str(), *memory_pages), ("run", 1024));
    assert_eq!(spec.compute.min_cpu_cores, 1);
    assert_eq!(spec.compute.min_memory_mb, 64);
    assert_eq!(spec.fuel_budget(), 3_600_000_000);
    assert_eq!(spec.redundancy, RedundancyLevel::None);
    assert!(spec.determinism);
    assert_eq!(spec.wasm_memory_limit_bytes(), Some(64 << 20));
}

#[test]
fn every_problem_is_reported_at_once_with_its_code() {
    let problems = problems_of(serde_json::json!({
        "runtime": {"type": "WASM", "module": "", "memory_pages": 0},
        "compute": {"min_cpu_cores": 0, "estimated_cpu_hours": -1.0, "min_memory_mb": 999999999999u64},
        "budget": {"max_total": 0},
        "deadline": 1,
        "redundancy": "Full(1)",
        "min_reputation": 1.5,
        "accuracy": {"target": 0.0}
    }));
    assert_eq!(
        codes(&problems),
        vec![
            (ErrorCode::J001, "runtime.module"),
            (ErrorCode::J001, "runtime.memory_pages"),
            (ErrorCode::J001, "compute.min_cpu_cores"),
            (ErrorCode::J001, "compute.min_memory_mb"),
            (ErrorCode::J001, "compute.estimated_cpu_hours"),
            (ErrorCode::J002, "budget.max_total"),
            (ErrorCode::J010, "deadline"),
            (ErrorCode::J001, "redundancy"),
            (ErrorCode::J001, "min_reputation"),
            (ErrorCode::J001, "accuracy.target"),
        ]
    );
    // Each message says what to do, not only what is wrong.
    for p in &problems {
        assert!(p.message.len() > 20, "{p}");
    }
}

#[test]
fn malformed_json_unknown_types_and_fields_are_j001_with_a_location() {
    for (json, needle) in [
        ("{", "EOF"),
        ("[]", "JobSpec"),
        (r#"{"runtime": {"type": "Lambda", "fn": "x"}}"#, "Lambda"),
        (r#"{"runtime": {"type": "WASM"}, "redundency": "None"}"#, "redundency"),
        (r#"{"runtime": {"type": "WASM"}, "redundancy": "Sampling(x)"}"#, "Sampling(x)"),
        (r#"{"runtime": {"type": "WASM"}, "redundancy": "Most"}"#, "unknown redundancy"),
        (r#"{"runtime": {"type": "WASM"}, "compute": {"min_memory_mb": -5}}"#, "-5"),
        (r#"{"budget": {"max_total": 1}}"#, "runtime"),
    ] {
        let p = JobSpec::from_json(json).expect_err(json);
        assert_eq!(p.code, ErrorCode::J001);
        assert!(p.message.contains(needle), "{json}: {p}");
        assert!(p.message.contains("line"), "{json}: {p}");
    }
}

#[test]
fn budgets_that_cannot_pay_are_j002() {
    let mut spec = minimal();
    spec["budget"] = serde_json::json!({"max_total": 100, "per_unit": {"type": "PerFrame", "amount": 10}});
    spec["category"] = serde_json::json!({
        "type": "Rendering", "frames": [{"start": 1, "end": 20}], "format": "Png"
    });
    let problems = problems_of(spec.clone());
    assert_eq!(codes(&problems), vec![(ErrorCode::J002, "budget.max_total")]);
    assert!(problems[0].message.contains("20 frames"), "{}", problems[0]);
    spec["budget"]["early_completion_bonus"] = serde_json::json!(1000);
    spec["budget"]["max_total"] = serde_json::json!(1000);
    assert_eq!(problems_of(spec), vec![]);
    let mut no_budget = minimal();
    no_budget.as_object_mut().expect("object").remove("budget");
    assert_eq!(codes(&problems_of(no_budget)), vec![(ErrorCode::J002, "budget")]);
}

#[test]
fn code_cids_must_be_raw_sha256_cidv1() {
    for (cid, needle) in [
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "CIDv0"),
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "raw-block"),
        ("not-a-cid", "not a CID"),
    ] {
        let mut spec = minimal();
        spec["runtime"]["module"] = serde_json::json!(cid);
        let problems = problems_of(spec);
        assert_eq!(codes(&problems), vec![(ErrorCode::J001, "runtime.module")], "{cid}");
        assert!(problems[0].message.contains(needle), "{}", problems[0]);
    }
    let mut spec = minimal();
    spec["runtime"]["module"] = serde_json::json!("");
    assert_eq!(validate(&parse(&spec), &ValidationContext { now: NOW, code_supplied: true }), vec![]);
}

#[test]
fn every_category_of_section_2_2_parses() {
    let categories = serde_json::json!([
        {"type": "Rendering", "frames": [{"start": 1, "end": 100}], "format": "Png", "quality": "Final"},
        {"type": "MachineLearning", "task": "Training", "model": {"name": "resnet"},
         "dataset": {"cid": MODULE_CID}, "metrics": ["Accuracy", "Loss"]},
        {"type": "Scientific", "simulation": "MonteCarlo", "parameters": {"steps": 1e6}, "iterations": 10},
        {"type": "DataProcessing", "input_format": "Csv", "output_format": "Json",
         "transformation": {"module": MODULE_CID}},
        {"type": "MapReduce", "mapper": {"module": MODULE_CID}, "reducer": {"module": MODULE_CID, "function": "reduce"},
         "partitions": 8},
        {"type": "WebScraping", "urls": ["https://example.org"], "rate_limit": {"requests_per_second": 1}},
        {"type": "Federation", "task": "Aggregation", "participants": [], "threshold": 0.66},
        {"type": "Verification", "proof": {"system": "groth16", "proof": MODULE_CID}, "public_inputs": ["1"]},
        {"type": "Microtask", "operations": [{"op": "add", "args": [1, 2]}], "max_duration_ms": 100}
    ]);
    let mut names = Vec::new();
    for category in categories.as_array().expect("array") {
        let mut spec = minimal();
        spec["category"] = category.clone();
        if category["type"] == "WebScraping" {
            spec["network"] = serde_json::json!({"outbound": true});
        }
        let parsed = parse(&spec);
        assert_eq!(validate(&parsed, &CX), vec![], "{category}");
        let c = parsed.category.clone().expect("category");
        names.push(c.type_name());
        round_trips(&parsed);
    }
    assert_eq!(names.len(), 9);
    let mut scraping = minimal();
    scraping["category"] = categories[5].clone();
    assert_eq!(codes(&problems_of(scraping)), vec![(ErrorCode::J001, "network")]);
}

fn round_trips(spec: &JobSpec) {
    let json = spec.to_json_pretty();
    assert_eq!(&JobSpec::from_json(&json).expect("JSON round trip"), spec, "{json}");
    assert_eq!(&JobSpec::from_wire(&spec.to_wire()).expect("postcard round trip"), spec);
    let cbor = serde_ipld_dagcbor::to_vec(spec).expect("DAG-CBOR");
    let back: JobSpec = serde_ipld_dagcbor::from_slice(&cbor).expect("DAG-CBOR back");
    assert_eq!(&back, spec);
}

#[test]
fn json_uses_the_appendix_a_shapes() {
    let mut spec = parse(&appendix("example_rendering_job"));
    round_trips(&spec);
    let json: serde_json::Value = serde_json::from_str(&spec.to_json_pretty()).expect("json");
    assert_eq!(json["runtime"]["type"], "Docker");
    assert_eq!(json["redundancy"], "Sampling(3)");
    assert_eq!(json["budget"]["per_unit"], serde_json::json!({"type": "PerFrame", "amount": 50}));
    assert_eq!(json["compute"]["gpu_required"]["type"], "NVIDIA");
    spec.runtime = Runtime::CCL {
        contract: MODULE_CID.into(),
        function: "vote".into(),
        args: icn_mesh_core::spec::Args(b"yes".to_vec()),
    };
    round_trips(&spec);
    let json: serde_json::Value = serde_json::from_str(&spec.to_json_pretty()).expect("json");
    assert_eq!(
        json["runtime"],
        serde_json::json!({"type": "CCL", "contract": MODULE_CID, "function": "vote", "args": "yes"})
    );
    assert!(matches!(spec.category, None | Some(JobCategory::Rendering { .. })));
}

#[test]
fn the_wire_format_is_pinned() {
    // A changed postcard layout must be a visible, deliberate diff: update this snapshot and bump
    // the protocol version together.
    let spec = parse(&minimal());
    let hex: String = spec.to_wire().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, WIRE_SNAPSHOT, "postcard layout of JobSpec changed");
}

const WIRE_SNAPSHOT: &str = "0000003b6261666b726569667a6a7574337465326e6879656b6b6c737332376e68336b37327973636f377933326b6f616f356565693636776f6633366e35650372756e80080001400000fca9f1d24d62503f0000000000000000000000010a000000000000000001020000";

#[test]
fn truncated_or_garbage_wire_bytes_are_errors() {
    let bytes = parse(&minimal()).to_wire();
    for end in 0..bytes.len() {
        assert!(JobSpec::from_wire(&bytes[..end]).is_err(), "prefix of {end} bytes");
    }
    assert!(JobSpec::from_wire(&[0xff; 64]).is_err());
}

proptest! {
    #[test]
    fn redundancy_text_round_trips(n in 0u32..1000, kind in 0u8..4) {
        let level = match kind {
            0 => RedundancyLevel::None,
            1 => RedundancyLevel::Sampling(n),
            2 => RedundancyLevel::Full(n),
            _ => RedundancyLevel::ZeroKnowledge,
        };
        prop_assert_eq!(level.to_string().parse::<RedundancyLevel>(), Ok(level));
    }

    #[test]
    fn validation_never_panics_on_numbers(
        cores in any::<u32>(), mem in any::<u64>(), hours in any::<f64>(), pages in any::<u32>(),
        total in any::<u64>(), deadline in any::<u64>(), rep in any::<f64>(),
    ) {
        let json = serde_json::json!({
            "runtime": {"type": "WASM", "module": MODULE_CID, "memory_pages": pages},
            "compute": {"min_cpu_cores": cores, "min_memory_mb": mem,
                        "estimated_cpu_hours": if hours.is_finite() { hours } else { 1.0 }},
            "budget": {"max_total": total},
            "deadline": deadline,
            "min_reputation": if rep.is_finite() { rep } else { 0.5 },
        });
        let spec = parse(&json);
        let _ = validate(&spec, &CX);
        let _ = spec.fuel_budget();
        let _ = spec.wasm_memory_limit_bytes();
    }
}

#[test]
fn huge_floats_survive_a_json_round_trip_exactly() {
    // Found by fuzz/spec_json: a 42-digit `estimated_gpu_hours` parsed to one f64 and, printed and
    // parsed again, to its neighbour. serde_json's `float_roundtrip` makes parsing exact.
    let spec = JobSpec::from_json(include_str!("fixtures/spec-huge-float.json")).expect("parses");
    let again = JobSpec::from_json(&spec.to_json_pretty()).expect("parses again");
    assert_eq!(again.to_wire(), spec.to_wire());
}
