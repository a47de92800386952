//! Where the library's `tracing` output goes: logcat on Android (tracing-android), the unified log
//! on Apple platforms (tracing-oslog), stderr elsewhere. The app calls [`init_logging`] once.

use std::sync::Once;

static INIT: Once = Once::new();

/// Routes the library's logs to the platform's log, at `level` (`error`, `warn`, `info`, `debug`,
/// `trace`; anything else means `info`). Later calls do nothing.
#[uniffi::export]
pub fn init_logging(level: String) {
    INIT.call_once(|| {
        install(&level);
        #[cfg(any(target_os = "android", target_vendor = "apple"))]
        log_panics();
    });
}

/// On a phone stderr goes nowhere, and the phone build aborts on a panic (`panic = "abort"`, see
/// the `mobile` profile): the panic's message and place are written to the platform's log first,
/// so the crash report has a cause.
#[cfg(any(target_os = "android", target_vendor = "apple"))]
fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("icn-mesh panicked (a bug; please report it): {info}");
        previous(info);
    }));
}

/// A plain level filter, not `EnvFilter`: its regex engine would add a quarter of a megabyte to
/// the phone's library.
fn filter(level: &str) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

#[cfg(target_os = "android")]
fn install(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if let Ok(layer) = tracing_android::layer("icn-mesh") {
        let _ = tracing_subscriber::registry().with(filter(level)).with(layer).try_init();
    }
}

#[cfg(target_vendor = "apple")]
fn install(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let layer = tracing_oslog::OsLogger::new("org.icn-mesh", "default");
    let _ = tracing_subscriber::registry().with(filter(level)).with(layer).try_init();
}

#[cfg(not(any(target_os = "android", target_vendor = "apple")))]
fn install(level: &str) {
    let _ = tracing_subscriber::fmt().with_max_level(filter(level)).with_writer(std::io::stderr).try_init();
}
