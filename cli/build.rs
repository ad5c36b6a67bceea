//! Windows (MSVC) binaries load the WinFsp DLL lazily: `backup-tool` must start, and `serve`
//! work, on a machine without WinFsp; only `mount` needs it (and says so). The build script
//! runs on the build machine, so the target is read from Cargo's variables, not `cfg`.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os == "windows" && env == "msvc" {
        let dll = match arch.as_str() {
            "x86" => "winfsp-x86.dll",
            "aarch64" => "winfsp-a64.dll",
            _ => "winfsp-x64.dll",
        };
        println!("cargo:rustc-link-lib=dylib=delayimp");
        println!("cargo:rustc-link-arg-bins=/DELAYLOAD:{dll}");
    }
}
