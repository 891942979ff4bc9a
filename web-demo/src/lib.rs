//! The web demo's files, embedded in the binary that serves them.
//!
//! The page, its JavaScript glue, the vendored chart library and the
//! wasm-bindgen module (built from `browser/` by this crate's build
//! script) are compiled in, so the coordinator serves every asset itself:
//! the demo works on a home network with no internet.

/// One file of the demo.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// URL path, starting with `/`.
    pub path: &'static str,
    /// `Content-Type` to serve it with.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
}

macro_rules! static_file {
    ($path:literal, $type:literal) => {
        Asset {
            path: concat!("/", $path),
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/static/", $path)),
        }
    };
}

/// Path of the browser module (the wasm the workers in tabs run).
pub const MODULE_PATH: &str = "/pkg/hearth_worker_bg.wasm";

/// The wasm-bindgen module: `hearth-browser` built for wasm32.
pub const MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pkg/hearth_worker_bg.wasm"));

/// Every file of the demo.
pub const ASSETS: &[Asset] = &[
    static_file!("index.html", "text/html; charset=utf-8"),
    static_file!("bench.html", "text/html; charset=utf-8"),
    static_file!("app.js", "text/javascript; charset=utf-8"),
    static_file!("auth.js", "text/javascript; charset=utf-8"),
    static_file!("bench.js", "text/javascript; charset=utf-8"),
    static_file!("worker.js", "text/javascript; charset=utf-8"),
    static_file!("helper.js", "text/javascript; charset=utf-8"),
    static_file!("digit.js", "text/javascript; charset=utf-8"),
    static_file!("style.css", "text/css; charset=utf-8"),
    static_file!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    static_file!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    static_file!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
    Asset {
        path: "/pkg/hearth_worker.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/pkg/hearth_worker.js")),
    },
    Asset {
        path: MODULE_PATH,
        content_type: "application/wasm",
        bytes: MODULE,
    },
];

/// The asset at URL `path` (`/` is the page).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_the_module_is_wasm() {
        assert!(MODULE.starts_with(b"\0asm"));
        assert_eq!(asset("/").map(|a| a.path), Some("/index.html"));
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
        assert!(asset("/../Cargo.toml").is_none());
        let glue = asset("/pkg/hearth_worker.js")
            .map(|a| a.bytes)
            .unwrap_or(b"");
        let glue = String::from_utf8_lossy(glue);
        for export in ["BrowserWorker", "WebModel", "digest"] {
            assert!(glue.contains(export), "the JS glue lacks {export}");
        }
    }
}
