//! The `icn` binary as scripts use it: exit codes, `--json` fields, records in a real store.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use icn_mesh_core::dag::{blob_cid, record_cid};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn path(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn icn() -> Command {
    let mut cmd = Command::cargo_bin("icn").expect("icn binary");
    // Never touch the real per-user data directory.
    cmd.env("ICN_DATA", std::env::temp_dir().join("icn-cli-tests-must-pass-data"));
    cmd
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = icn().args(args).output().expect("icn runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write fixture");
    p.display().to_string()
}

#[test]
fn keygen_prints_a_did_and_writes_a_private_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.key").display().to_string();
    let r = run(&["keygen", "--out", &key, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.json["did"].as_str().expect("did").starts_with("did:key:z6Mk"));
    let again = run(&["keygen", "--out", &key, "--json"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

#[test]
fn validate_lists_every_problem_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all: Value =
        serde_json::from_str(include_str!("../../core/tests/fixtures/appendix_a.json")).expect("appendix");
    let ml = write(dir.path(), "ml.json", all["example_ml_training_job"].to_string().as_bytes());
    let r = run(&["job", "validate", &ml, "--json"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["valid"], false);
    let codes: Vec<&str> = r.json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes, ["J001", "J002"]);
    let human = icn().args(["job", "validate", &ml]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(stderr.contains("J002 InsufficientBudget at `budget`"), "{stderr}");

    let ok = run(&[
        "job",
        "validate",
        &path("examples/specs/sieve.json"),
        "--module",
        &path("examples/jobs/sieve.wasm"),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let broken = write(dir.path(), "broken.json", b"{\"runtime\": {\"type\": \"Lambda\"}}");
    let r = run(&["job", "validate", &broken, "--json"]);
    assert_eq!((r.code, r.json["problems"][0]["code"].as_str()), (2, Some("J001")));
}

#[test]
fn run_local_runs_the_examples_and_records_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let input_file = write(dir.path(), "in.bin", &input);
    let out_file = dir.path().join("out.txt").display().to_string();
    let r = run(&[
        "job",
        "run-local",
        &path("examples/specs/sha256.json"),
        "--module",
        &path("examples/jobs/sha256.wasm"),
        "--input",
        &input_file,
        "--output",
        &out_file,
        "--data",
        &data,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected: String = Sha256::digest(&input).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(std::fs::read_to_string(&out_file).expect("output"), expected);
    // The documented --json fields, with real values.
    for field in [
        "status",
        "failure",
        "code",
        "message",
        "fuel_used",
        "peak_memory_bytes",
        "output_bytes",
        "output_cid",
        "result_cid",
        "wall_ms",
    ] {
        assert!(r.json.get(field).is_some(), "missing {field}: {}", r.json);
    }
    assert_eq!(r.json["status"], "completed");
    assert_eq!(r.json["failure"], Value::Null);
    assert_eq!(r.json["output_bytes"], 64);
    assert_eq!(r.json["output_cid"], blob_cid(expected.as_bytes()).to_string());
    assert!(r.json["fuel_used"].as_u64().expect("fuel") > 1_000_000);
    assert_eq!(r.json["input_cid"], blob_cid(&input).to_string());

    // The result record is in the store, verifies, links to the job and the output.
    let result = r.json["result_cid"].as_str().expect("result cid");
    let show = run(&["dag", "show", result, "--data", &data, "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert_eq!(show.json["kind"], "result");
    assert_eq!(show.json["payload"]["status"], "completed");
    assert_eq!(show.json["payload"]["job"]["/"], r.json["job_cid"]);
    assert_eq!(show.json["links"].as_array().expect("links").len(), 2);
    // `dag export` gives the exact block: hashing it gives the CID back.
    let block = icn().args(["dag", "export", result, "--data", &data]).output().expect("export");
    assert_eq!(record_cid(&block.stdout).to_string(), result);
    let job = icn()
        .args(["dag", "export", r.json["job_cid"].as_str().expect("job"), "--data", &data])
        .output()
        .expect("export");
    assert_eq!(record_cid(&job.stdout).to_string(), r.json["job_cid"].as_str().expect("job"));
    let input_block = icn()
        .args(["dag", "export", r.json["input_cid"].as_str().expect("input"), "--data", &data])
        .output()
        .expect("export");
    assert_eq!(input_block.stdout, input);

    // Once the module is in the store, the spec's CID is enough.
    let module_cid = blob_cid(&std::fs::read(path("examples/jobs/sha256.wasm")).expect("module")).to_string();
    let spec = write(
        dir.path(),
        "by-cid.json",
        format!(
            r#"{{"runtime": {{"type": "WASM", "module": "{module_cid}"}}, "budget": {{"max_total": 1}}}}"#
        )
        .as_bytes(),
    );
    let r = run(&["job", "run-local", &spec, "--input", &input_file, "--data", &data, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn run_local_renders_a_mandelbrot_tile_and_runs_a_ccl_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let input = write(dir.path(), "tile.txt", b"128 96 0 0 128 96 200");
    let pgm = dir.path().join("tile.pgm").display().to_string();
    let r = run(&[
        "job",
        "run-local",
        &path("examples/specs/mandelbrot.json"),
        "--module",
        &path("examples/jobs/mandelbrot.wasm"),
        "--input",
        &input,
        "--output",
        &pgm,
        "--data",
        &data,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let image = std::fs::read(&pgm).expect("pgm");
    assert!(image.starts_with(b"P5\n128 96\n255\n"));
    assert_eq!(image.len(), b"P5\n128 96\n255\n".len() + 128 * 96);

    let r = run(&[
        "job",
        "run-local",
        &path("examples/specs/echo-ccl.json"),
        "--module",
        &path("examples/jobs/echo.wasm"),
        "--data",
        &data,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["output_cid"], blob_cid(b"hello from a contract").to_string());
}

#[test]
fn failures_exit_1_and_refusals_exit_2_with_their_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let spin = write(
        dir.path(),
        "spin.wasm",
        &wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))"#)
            .expect("wat"),
    );
    let tiny = write(
        dir.path(),
        "tiny.json",
        br#"{"runtime": {"type": "WASM"}, "compute": {"estimated_cpu_hours": 0.00001}, "budget": {"max_total": 1}}"#,
    );
    let r = run(&["job", "run-local", &tiny, "--module", &spin, "--data", &data, "--json"]);
    assert_eq!(
        (r.code, r.json["status"].as_str(), r.json["failure"].as_str(), r.json["code"].as_str()),
        (1, Some("failed"), Some("CpuTimeout"), Some("J004")),
        "{}",
        r.json
    );
    assert!(r.json["result_cid"].is_string(), "a failed run is recorded too");

    // The module file does not match the CID the spec names.
    let wrong = write(
        dir.path(),
        "wrong.json",
        br#"{"runtime": {"type": "WASM", "module": "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"}, "budget": {"max_total": 1}}"#,
    );
    let r = run(&["job", "run-local", &wrong, "--module", &spin, "--data", &data, "--json"]);
    assert_eq!((r.code, r.json["code"].as_str()), (2, Some("J001")));
    assert!(r.json["message"].as_str().expect("message").contains("but the spec names"));

    // A forbidden import is refused before anything runs.
    let wasi = write(
        dir.path(),
        "wasi.wasm",
        &wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#)
            .expect("wat"),
    );
    let r = run(&["job", "run-local", &tiny, "--module", &wasi, "--data", &data, "--json"]);
    assert_eq!(
        (r.code, r.json["code"].as_str(), r.json["result_cid"].clone()),
        (2, Some("J008"), Value::Null)
    );

    // Docker jobs need a host that has Docker.
    let all: Value =
        serde_json::from_str(include_str!("../../core/tests/fixtures/appendix_a.json")).expect("appendix");
    let mut render = all["example_rendering_job"].clone();
    render["deadline"] = serde_json::json!(4_000_000_000u64);
    let render = write(dir.path(), "render.json", render.to_string().as_bytes());
    let r = run(&["job", "run-local", &render, "--data", &data, "--json"]);
    assert_eq!((r.code, r.json["code"].as_str()), (2, Some("J003")));

    // Garbage for a module, a missing file, malformed JSON.
    let garbage = write(dir.path(), "garbage.wasm", b"\0asm\x01\0\0\0\x01\xff\xff");
    let r = run(&["job", "run-local", &tiny, "--module", &garbage, "--data", &data, "--json"]);
    assert_eq!((r.code, r.json["code"].as_str()), (2, Some("J001")));
    let r = run(&["job", "run-local", &tiny, "--module", "/nonexistent.wasm", "--data", &data, "--json"]);
    assert_eq!((r.code, r.json["code"].as_str()), (2, Some("J001")));
    let bad_json = write(dir.path(), "bad.json", b"{\"runtime\": ");
    let r = run(&["job", "run-local", &bad_json, "--module", &spin, "--data", &data]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("J001"), "{}", r.stderr);
}

#[test]
fn human_output_ends_with_the_result_cid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let out = icn()
        .args([
            "job",
            "run-local",
            &path("examples/specs/sieve.json"),
            "--module",
            &path("examples/jobs/sieve.wasm"),
            "--data",
            &data,
        ])
        .write_stdin("")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("78498 primes <= 1000000"), "{stdout}");
    let last = stdout.lines().last().expect("a line");
    assert!(last.starts_with("bafyrei"), "{stdout}");
    let show = run(&["dag", "show", last, "--data", &data]);
    assert_eq!(show.code, 0);
}
