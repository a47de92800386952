//! Shared CLI plumbing: the data directory, opening the node's store and key, printing.

use std::path::{Path, PathBuf};

use icn_mesh_core::Problem;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::store::{Store, log_path};

pub const KEY_FILE: &str = "node.key";
pub const STORE_FILE: &str = "store.redb";

/// `$XDG_DATA_HOME/icn-mesh` (or the platform's equivalent); `ICN_DATA` overrides it.
pub fn default_data_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ICN_DATA") {
        return Ok(PathBuf::from(dir));
    }
    dirs::data_dir()
        .map(|d| d.join("icn-mesh"))
        .ok_or_else(|| "no per-user data directory is known here: pass --data DIR".to_owned())
}

pub fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    match given {
        Some(dir) => Ok(dir),
        None => default_data_dir(),
    }
}

/// The store in `dir`, created if missing.
pub fn open_store(dir: &Path) -> Result<Store, String> {
    open(&dir.join(STORE_FILE)).map_err(|e| e.to_string())
}

/// Any store `icn` reads, a node's or a coordinator's (whose redo log may hold ledger and journal
/// writes too).
fn open(path: &Path) -> Result<Store, icn_mesh_core::store::StoreError> {
    Store::within(icn_mesh_coordinator::coordinator::open_db(path)?)
}

/// A store to read from, even while a daemon (`icn coordinator`, `icn node`) holds it: redb locks
/// its file for the writer, so the reader then opens a copy of the file, which holds everything
/// the daemon has made durable (its group commits flush at least every 100 ms on a coordinator and
/// a second after receipts on a node). The copy lives as long as the returned guard.
pub fn open_store_for_reading(dir: &Path) -> Result<(Store, Option<tempfile::TempDir>), String> {
    let path = dir.join(STORE_FILE);
    match open(&path) {
        Ok(store) => Ok((store, None)),
        Err(icn_mesh_core::store::StoreError::Open {
            source: redb::DatabaseError::DatabaseAlreadyOpen,
            ..
        }) => {
            let copy_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let copy = copy_dir.path().join(STORE_FILE);
            // The log first: a checkpoint between the two copies then leaves a database that holds
            // every entry of the copied log, rather than a log that starts after the database.
            let copy_file = |from: &Path, to: &Path| {
                std::fs::copy(from, to).map_err(|e| format!("cannot copy {}: {e}", from.display()))
            };
            let log = log_path(&path);
            if log.exists() {
                copy_file(&log, &log_path(&copy))?;
            }
            copy_file(&path, &copy)?;
            // Opening the copy for writing lets redb finish what the live file had in flight, and
            // replays the log.
            let store =
                open(&copy).map_err(|e| format!("{} (a copy of the live store): {e}", path.display()))?;
            Ok((store, Some(copy_dir)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The node key in `dir`, created on first use.
pub fn node_key(dir: &Path) -> Result<Keypair, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Keypair::load_or_create(&dir.join(KEY_FILE)).map_err(|e| e.to_string())
}

pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// Prints an error that is not a spec problem and returns exit code 2.
pub fn fail(message: &str) -> u8 {
    eprintln!("error: {message}");
    2
}

/// Prints problems on stderr, one per line, with their codes.
pub fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

/// A problem as JSON `{"code", "name", "field", "message"}`.
pub fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({"code": p.code, "name": p.code.name(), "field": p.field, "message": p.message})
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
