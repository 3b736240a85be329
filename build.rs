//! Links the binary against the LibTorch that torch-sys found, with an rpath so it runs without
//! LD_LIBRARY_PATH (cargo ignores `[env] LD_LIBRARY_PATH` for `cargo run/test`).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // torchwatch_build_info reports the LibTorch version: the wheel's torch/version.py, next to lib/.
    let version_file = lib.map(|lib| std::path::Path::new(&lib).join("../version.py"));
    let torch_version = version_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("__version__"))?;
            Some(line.split('\'').nth(1)?.split('+').next()?.to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(path) = version_file {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=TORCHWATCH_TORCH_VERSION={torch_version}");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
