//! Links the WinFsp DLL lazily on real Windows (MSVC) builds; nothing to do elsewhere.

fn main() {
    #[cfg(windows)]
    {
        let msvc = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("msvc");
        if msvc && std::env::var_os("CARGO_FEATURE_WINFSP_CHECK").is_none() {
            winfsp::build::winfsp_link_delayload();
        }
    }
}
