//! The programs the browser test needs, found or built outside the namespace (which has no
//! network): `livekit-server` and `lkclient` from `tests/tools/build.sh livekit`, the page from
//! `web/` with npm, Debian's Chromium and coturn.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The LiveKit tool set (livekit-server and lkclient), built by `tests/tools/build.sh livekit`
/// from the module proxy into the tools cache, like the control plane.
fn livekit_set() -> Result<PathBuf, String> {
    testenv::livekit_bin_dir().map_err(|e| e.to_string())
}

/// lkclient, the Go test client.
pub fn lkclient() -> Result<Option<PathBuf>, String> {
    Ok(Some(livekit_set()?.join("lkclient")))
}

/// `livekit-server`: `$CONCLAVE_LIVEKIT_SERVER`, else the one `tests/tools/build.sh livekit` built.
pub fn livekit_server() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CONCLAVE_LIVEKIT_SERVER") {
        return Ok(PathBuf::from(p));
    }
    Ok(livekit_set()?.join("livekit-server"))
}

/// A browser: `$<env>`, else Debian's binary at `debian` (not its wrapper script, whose flags
/// the driver sets itself), else the first of `names` on the PATH.
fn browser(env: &str, debian: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from(debian);
    if debian.is_file() {
        return Some(debian);
    }
    names.iter().find_map(|n| on_path(n))
}

/// Chromium: `$CONCLAVE_CHROMIUM`, Debian's, or on the PATH.
pub fn chromium() -> Option<PathBuf> {
    browser(
        "CONCLAVE_CHROMIUM",
        "/usr/lib/chromium/chromium",
        &["chromium", "chromium-browser"],
    )
}

/// Firefox ESR: `$CONCLAVE_FIREFOX`, Debian's, or on the PATH.
pub fn firefox() -> Option<PathBuf> {
    browser("CONCLAVE_FIREFOX", "/usr/lib/firefox-esr/firefox-esr", &["firefox-esr"])
}

pub fn node() -> Option<PathBuf> {
    on_path("node")
}

pub fn turnserver() -> Option<PathBuf> {
    on_path("turnserver")
}

fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let t = if p.is_dir() {
                newest(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            latest = latest.max(t);
        }
    }
    latest
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn npm(web: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!("[join-page] npm {} in web/", args.join(" "));
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .status()
        .map_err(|e| format!("npm {}: {e}", args.join(" ")))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("npm {} in web/: {status}", args.join(" ")))
}

/// Builds the page into `web/dist` unless it is newer than its sources and lockfile; installs
/// dependencies from the lockfile first when they are missing or older than it.
pub fn build_page() -> Result<PathBuf, String> {
    let web = repo().join("web");
    let dist = web.join("dist");
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    if modified(&installed) < modified(&lock) {
        npm(&web, &["ci", "--no-audit", "--no-fund"])?;
    }
    let built = modified(&dist.join("app.js"));
    let sources = [
        newest(&web.join("src")),
        modified(&lock).unwrap_or(SystemTime::UNIX_EPOCH),
    ]
    .into_iter()
    .chain(modified(&web.join("build.mjs")))
    .max()
    .unwrap_or(SystemTime::UNIX_EPOCH);
    if built.is_none_or(|b| b < sources) {
        npm(&web, &["run", "build"])?;
    }
    Ok(dist)
}
