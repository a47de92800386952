//! Writes the C header for `src/c_api.rs` to `bindings/c/icn_mesh.h` (only when it changes, so the
//! file's time moves only with its content). CI regenerates it and fails on a difference.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src/c_api.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/c_api.rs"))
        .generate()
        .expect("cbindgen parses src/c_api.rs");
    let mut text = Vec::new();
    header.write(&mut text);
    let out = crate_dir.join("../bindings/c/icn_mesh.h");
    if std::fs::read(&out).ok().as_deref() != Some(text.as_slice()) {
        std::fs::create_dir_all(out.parent().expect("bindings/c")).expect("create bindings/c");
        std::fs::write(&out, &text).expect("write bindings/c/icn_mesh.h");
    }
}
