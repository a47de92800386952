//! The C API: opaque handles, explicit free functions, every error a code and a message, no panic
//! across the boundary. cbindgen writes `bindings/c/icn_mesh.h` from this file (see `build.rs`).
//!
//! Return codes: 0 success (a completed run), 1 a run that failed, 2 refused or an error — with the
//! error written to the out-string as JSON `{"code": "J00x", "message": "…"}` (for `icn_run_local`,
//! the refused run-local report, which has the same two fields). Strings the library returns are
//! freed with `icn_string_free`, the node with `icn_node_close`. NULL pointers and invalid UTF-8
//! are errors, never crashes.

// The only unsafe code in the workspace: a C boundary cannot be written without it. Every block
// says why it holds.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use icn_mesh_core::ErrorCode;
use icn_mesh_core::local::RunStatus;

use crate::node::{CoreError, NodeCore};

/// A node opened by `icn_node_open`; free it with `icn_node_close`.
#[derive(Debug)]
pub struct IcnNode {
    core: NodeCore,
}

const OK: i32 = 0;
const FAILED: i32 = 1;
const ERROR: i32 = 2;

/// A Rust string as a C string the caller frees with `icn_string_free` (interior NULs, which JSON
/// never has, are replaced).
fn to_c(text: String) -> *mut c_char {
    CString::new(text.replace('\0', "\u{FFFD}")).map_or(std::ptr::null_mut(), CString::into_raw)
}

fn error_json(e: &CoreError) -> String {
    serde_json::json!({ "code": e.code, "message": e.message }).to_string()
}

/// Writes `text` to `*out` if `out` is not NULL.
///
/// # Safety
/// `out` is NULL or points to writable storage for a pointer.
unsafe fn put(out: *mut *mut c_char, text: String) {
    if !out.is_null() {
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { *out = to_c(text) };
    }
}

/// A UTF-8 string from C.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string valid for reads.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, CoreError> {
    if ptr.is_null() {
        return Err(CoreError::new(ErrorCode::J001, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|e| CoreError::new(ErrorCode::J001, format!("{what} is not valid UTF-8: {e}")))
}

/// Bytes from C; NULL with length 0 is an empty slice.
///
/// # Safety
/// `ptr` is NULL or valid for `len` bytes of reads.
unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], CoreError> {
    match (ptr.is_null(), len) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(CoreError::new(ErrorCode::J001, format!("{what} is NULL but its length is {len}"))),
        // SAFETY: non-NULL and valid for `len` bytes per the contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(ptr, len) }),
    }
}

/// Runs `body`, turning a panic into an error return: nothing unwinds into C.
/// `out` gets the body's text (if any) or the error.
fn guarded(out: *mut *mut c_char, body: impl FnOnce() -> Result<(i32, Option<String>), CoreError>) -> i32 {
    if !out.is_null() {
        // SAFETY: `out` is NULL or writable, per every public function's contract.
        unsafe { *out = std::ptr::null_mut() };
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok((code, text))) => {
            if let Some(text) = text {
                // SAFETY: as above.
                unsafe { put(out, text) };
            }
            code
        }
        Ok(Err(e)) => {
            // SAFETY: as above.
            unsafe { put(out, error_json(&e)) };
            ERROR
        }
        Err(_) => {
            let e = CoreError::new(ErrorCode::J009, "internal error (a bug in icn-mesh; please report it)");
            // SAFETY: as above.
            unsafe { put(out, error_json(&e)) };
            ERROR
        }
    }
}

/// The library's version, a static string (do not free it).
#[unsafe(no_mangle)]
pub extern "C" fn icn_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Opens (or creates) the node in `data_dir`: its key and store. On success returns 0 and sets
/// `*out`; otherwise returns 2 and sets `*err` to a JSON error to free with `icn_string_free`.
///
/// # Safety
/// `data_dir` is NULL or a NUL-terminated string; `out` and `err` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn icn_node_open(
    data_dir: *const c_char,
    out: *mut *mut IcnNode,
    err: *mut *mut c_char,
) -> i32 {
    if !out.is_null() {
        // SAFETY: checked non-NULL, writable per the contract.
        unsafe { *out = std::ptr::null_mut() };
    }
    guarded(err, || {
        if out.is_null() {
            return Err(CoreError::new(ErrorCode::J001, "out is NULL"));
        }
        // SAFETY: per the contract.
        let dir = unsafe { text(data_dir, "data_dir") }?;
        let node = Box::new(IcnNode { core: NodeCore::open(Path::new(dir))? });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(node) };
        Ok((OK, None))
    })
}

/// Runs a job on this node, now: `spec_json` is a job spec (Appendix A JSON), `module` the WASM
/// module or CCL contract, `input` its input (NULL with length 0 for none). Returns 0 completed,
/// 1 failed, 2 refused, and sets `*result_json` to the report `icn job run-local --json` prints.
///
/// # Safety
/// `node` is NULL or from `icn_node_open`; `spec_json` is NULL or NUL-terminated; `module` and
/// `input` are NULL or valid for their lengths; `result_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn icn_run_local(
    node: *mut IcnNode,
    spec_json: *const c_char,
    module: *const u8,
    module_len: usize,
    input: *const u8,
    input_len: usize,
    result_json: *mut *mut c_char,
) -> i32 {
    guarded(result_json, || {
        // SAFETY: per the contract, `node` is NULL or a live handle.
        let node = unsafe { node.as_ref() }.ok_or_else(|| CoreError::new(ErrorCode::J001, "node is NULL"))?;
        // SAFETY: per the contract.
        let (spec, module, input) = unsafe {
            (
                text(spec_json, "spec_json")?,
                bytes(module, module_len, "module")?,
                bytes(input, input_len, "input")?,
            )
        };
        let (report, _) = node.core.run_local(spec, module, input);
        let code = match report.status {
            RunStatus::Completed => OK,
            RunStatus::Failed => FAILED,
            RunStatus::Refused => ERROR,
        };
        let json = serde_json::to_string(&report)
            .map_err(|e| CoreError::new(ErrorCode::J009, format!("cannot write the report: {e}")))?;
        Ok((code, Some(json)))
    })
}

/// Feeds a partial device-state update to the policy: JSON with any of `charging`,
/// `battery_percent`, `battery_temp_c`, `thermal`, `screen_on`, `metered` (a field left out keeps
/// its last value). Returns 0 and sets `*decision_json` to `{"decision": "run"|"pause"|"stop",
/// "reason": …}`, or 2 with a JSON error.
///
/// # Safety
/// `node` is NULL or from `icn_node_open`; `state_json` is NULL or NUL-terminated;
/// `decision_json` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn icn_node_set_device_state(
    node: *mut IcnNode,
    state_json: *const c_char,
    decision_json: *mut *mut c_char,
) -> i32 {
    guarded(decision_json, || {
        // SAFETY: per the contract.
        let node = unsafe { node.as_ref() }.ok_or_else(|| CoreError::new(ErrorCode::J001, "node is NULL"))?;
        // SAFETY: per the contract.
        let state = unsafe { text(state_json, "state_json") }?;
        let verdict = node.core.set_device_state_json(state)?;
        let json = serde_json::json!({ "decision": verdict.decision.name(), "reason": verdict.reason });
        Ok((OK, Some(json.to_string())))
    })
}

/// Frees a string the library returned. NULL is fine.
///
/// # Safety
/// `s` is NULL or a string from this library, not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn icn_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: made by `CString::into_raw` in `to_c`, freed once per the contract.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Closes the node (a running job is cancelled, the store flushed). NULL is fine.
///
/// # Safety
/// `node` is NULL or from `icn_node_open`, not yet closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn icn_node_close(node: *mut IcnNode) {
    if !node.is_null() {
        // SAFETY: made by `Box::into_raw` in `icn_node_open`, closed once per the contract.
        let node = unsafe { Box::from_raw(node) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(node)));
    }
}
