//! Build script: links the `botwire` binary with packed relative
//! relocations (`DT_RELR`) where the linker knows them (GNU ld 2.38 and
//! later). A Rust executable holds tens of thousands of relative
//! relocations, for vtables and static tables; in the classic format their
//! table is read at every start and stays resident (1.4 MiB here), packed it
//! is a few kilobytes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    let knows_relr = std::process::Command::new("ld")
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pack-relative-relocs"));
    if knows_relr {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
