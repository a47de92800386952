//! Helpers shared by the multi-process tests: the binary, child processes that die with the test,
//! and waiting for the files daemons write (`DIR/address`, `DIR/did`).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub fn icn() -> &'static str {
    env!("CARGO_BIN_EXE_icn")
}

/// Child processes killed (SIGKILL) and reaped when dropped, whatever the test's outcome.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The trimmed contents of `path` once a process has written it (20 s at most).
pub fn wait_for(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return t.trim().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}
