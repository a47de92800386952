//! `cargo run -p uniffi-bindgen -- generate --library LIB --language kotlin --out-dir DIR`: the
//! generator at exactly the workspace's UniFFI version, so the bindings match the library.
fn main() {
    uniffi::uniffi_bindgen_main()
}
