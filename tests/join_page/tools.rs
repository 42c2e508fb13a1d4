//! The programs the browser test needs, found or built outside the namespace (which has no
//! network): `livekit-server` from the Go module proxy into the tools cache, the page from
//! `web/` with npm, Debian's Chromium and coturn.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The livekit-server version Conclave pins (later tags need LiveKit's pion forks, which the
/// module proxy does not serve).
pub const LIVEKIT_VERSION: &str = "v1.13.5";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tools_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONCLAVE_TOOLS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("conclave/tools")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The LiveKit tool set's directory (livekit-server and lkclient) from `tests/tools/build.sh
/// livekit`, when the script builds that set; `None` when it does not.
fn livekit_set() -> Option<Result<PathBuf, String>> {
    let script = repo().join("tests/tools/build.sh");
    let text = std::fs::read_to_string(&script).ok()?;
    if !text.contains("livekit)") {
        return None;
    }
    let out = match Command::new("bash").arg(&script).arg("livekit").output() {
        Ok(out) => out,
        Err(e) => return Some(Err(format!("running {}: {e}", script.display()))),
    };
    if !out.status.success() {
        return Some(Err(format!(
            "tests/tools/build.sh livekit: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Some(Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())))
}

/// lkclient, the Go test client: from `tests/tools/build.sh livekit` when the script builds
/// it (then it is required), else one already in the tools cache, else none.
pub fn lkclient() -> Result<Option<PathBuf>, String> {
    if let Some(set) = livekit_set() {
        let path = set?.join("lkclient");
        return path
            .is_file()
            .then_some(Some(path.clone()))
            .ok_or(format!("{} is missing", path.display()));
    }
    let found = std::fs::read_dir(tools_cache())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lkclient"))
        .find(|p| p.is_file());
    Ok(found)
}

/// `livekit-server`: `$CONCLAVE_LIVEKIT_SERVER`, else `tests/tools/build.sh livekit`'s when the
/// script builds it, else one in the tools cache (whoever built it, under the same name), else
/// built now with `go install` from the module proxy.
pub fn livekit_server() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CONCLAVE_LIVEKIT_SERVER") {
        return Ok(PathBuf::from(p));
    }
    if let Some(set) = livekit_set() {
        return Ok(set?.join("livekit-server"));
    }
    let cache = tools_cache();
    let ours = cache.join(format!("livekit-{LIVEKIT_VERSION}")).join("livekit-server");
    if ours.is_file() {
        return Ok(ours);
    }
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for e in entries.flatten() {
            let candidate = e.path().join("livekit-server");
            if candidate.is_file() && e.file_name().to_string_lossy().contains(LIVEKIT_VERSION) {
                return Ok(candidate);
            }
        }
    }
    let go = on_path("go").ok_or("no livekit-server in the tools cache and no `go` to build it")?;
    let gobin = ours.with_file_name(".gobin");
    eprintln!("[join-page] building livekit-server {LIVEKIT_VERSION} with go install (several minutes cold)");
    let status = Command::new(go)
        .args([
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            &format!("github.com/livekit/livekit-server/cmd/server@{LIVEKIT_VERSION}"),
        ])
        .env("GOBIN", &gobin)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .status()
        .map_err(|e| format!("go install: {e}"))?;
    if !status.success() {
        return Err(format!("go install livekit-server {LIVEKIT_VERSION}: {status}"));
    }
    std::fs::rename(gobin.join("server"), &ours).map_err(|e| format!("moving the built server: {e}"))?;
    let _ = std::fs::remove_dir(&gobin);
    Ok(ours)
}

/// Chromium: `$CONCLAVE_CHROMIUM`, else Debian's binary (not its wrapper script, whose flags
/// the driver sets itself).
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONCLAVE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    on_path("chromium").or_else(|| on_path("chromium-browser"))
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
