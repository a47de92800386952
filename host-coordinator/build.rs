//! Link settings for the `icn` binary.

fn main() {
    // The binary is position-independent (ASLR), so the loader relocates about 11,000 pointers in
    // it at start. As DT_RELA entries (24 bytes each) that table was 273 KiB, read in full by every
    // process, an idle `icn node` included; packed as DT_RELR (glibc 2.36+, binutils 2.38+) it is
    // a few KiB. A linker without the option warns and keeps DT_RELA (GNU ld: "-z ... ignored").
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("linux-gnu") {
        println!("cargo:rustc-link-arg-bin=icn=-Wl,-z,pack-relative-relocs");
    }
}
