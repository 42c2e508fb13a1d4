//! Finding the control-plane and tool binaries.
//!
//! Lookup order for each binary, following controller-runtime's envtest conventions so
//! that developers who already have envtest assets reuse them:
//!
//! 1. the binary's own variable, e.g. `TEST_ASSET_KUBE_APISERVER`;
//! 2. `$KUBEBUILDER_ASSETS/<name>`;
//! 3. the directory printed by `tests/tools/build.sh --print` (the project's cache);
//! 4. otherwise `tests/tools/build.sh` is run once per process (it builds only what is
//!    missing) and its output directory is used.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The binaries the harness knows about, with their envtest variable names.
const KNOWN: &[(&str, &str)] = &[
    ("etcd", "TEST_ASSET_ETCD"),
    ("kube-apiserver", "TEST_ASSET_KUBE_APISERVER"),
    ("kubectl", "TEST_ASSET_KUBECTL"),
    ("kube-controller-manager", "TEST_ASSET_KUBE_CONTROLLER_MANAGER"),
    ("kube-scheduler", "TEST_ASSET_KUBE_SCHEDULER"),
    ("kwok", "TEST_ASSET_KWOK"),
    ("helm", "TEST_ASSET_HELM"),
];

/// The build script, found relative to this crate so it works from any working directory.
pub(crate) fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tools/build.sh")
}

/// Whether `name` is one of the binaries with envtest-style lookup.
pub(crate) fn is_known(name: &str) -> bool {
    env_var_for(name).is_some()
}

fn env_var_for(name: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs the build script with `args` and returns the last line of its stdout (the bin dir).
/// stderr is inherited so that progress of a long cold build is visible.
fn run_build_script(args: &[&str]) -> Result<PathBuf, Error> {
    let script = build_script();
    if !script.is_file() {
        return Err(Error::Build {
            script,
            reason: "the script does not exist (is this crate outside the Conclave repository?)".into(),
        });
    }
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Build {
            script,
            reason: format!("exited with {}", out.status),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Err(Error::Build {
            script,
            reason: "it printed no directory".into(),
        }),
    }
}

/// The directory `build.sh --print` names; cached because it never changes within a process.
fn printed_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| run_build_script(&["--print"]).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)
}

/// Runs the full build at most once per process: a cold build takes many minutes, and
/// concurrent tests must not start several builds of the same files.
fn built_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| run_build_script(&[]).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)
}

/// The project's tools directory: the one `tests/tools/build.sh --print` names, holding
/// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm and
/// `cert-manager-crds/`. If anything is missing there, `tests/tools/build.sh` is run (once
/// per process; a cold build takes several minutes) to build it.
///
/// Individual binaries are looked up first in envtest's places, so existing envtest assets
/// are reused: `TEST_ASSET_ETCD`, `TEST_ASSET_KUBE_APISERVER`, `TEST_ASSET_KUBECTL`,
/// `TEST_ASSET_KUBE_CONTROLLER_MANAGER`, `TEST_ASSET_KUBE_SCHEDULER`, `TEST_ASSET_KWOK`,
/// `TEST_ASSET_HELM`, then `$KUBEBUILDER_ASSETS/<name>`, and only then this directory.
pub fn tools_bin_dir() -> Result<PathBuf, Error> {
    let dir = printed_dir()?;
    let complete = KNOWN.iter().all(|(n, _)| is_executable(&dir.join(n))) && dir.join("cert-manager-crds").is_dir();
    if complete { Ok(dir) } else { built_dir() }
}

/// The directory holding `livekit-server` and `lkclient` (Conclave's LiveKit test client),
/// from `tests/tools/build.sh livekit`, which builds what is missing or stale (lkclient is
/// rebuilt when its sources change) and prints the directory. Runs once per process; a warm
/// call takes milliseconds, a cold build several minutes.
pub fn livekit_bin_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| run_build_script(&["livekit"]).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)?;
    for name in ["livekit-server", "lkclient"] {
        if !is_executable(&dir.join(name)) {
            return Err(Error::MissingBinary {
                name: name.into(),
                searched: dir.display().to_string(),
                hint: format!("`bash {} livekit` should have built it", build_script().display()),
            });
        }
    }
    Ok(dir)
}

/// Resolves one binary by the lookup order described in the module docs.
pub(crate) fn resolve(name: &str) -> Result<PathBuf, Error> {
    let mut searched = Vec::new();

    if let Some(var) = env_var_for(name) {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            if is_executable(&p) {
                return Ok(p);
            }
            // An explicit setting that points nowhere is a mistake worth reporting rather
            // than silently falling back to another binary.
            return Err(Error::MissingBinary {
                name: name.into(),
                searched: format!("${var}={}", p.display()),
                hint: format!("${var} must name an executable file; unset it to use the defaults."),
            });
        }
        searched.push(format!("${var} (unset)"));
    }

    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let p = PathBuf::from(assets).join(name);
        if is_executable(&p) {
            return Ok(p);
        }
        searched.push(p.display().to_string());
    } else {
        searched.push("$KUBEBUILDER_ASSETS (unset)".into());
    }

    let hint = format!(
        "Run `bash {}` (builds the pinned versions from the Go module proxy), or point \
         $KUBEBUILDER_ASSETS or ${} at a directory/file that has it.",
        build_script().display(),
        env_var_for(name).unwrap_or("TEST_ASSET_<NAME>"),
    );

    match printed_dir() {
        Ok(dir) => {
            let p = dir.join(name);
            if is_executable(&p) {
                return Ok(p);
            }
            searched.push(p.display().to_string());
        }
        Err(e) => {
            return Err(Error::MissingBinary {
                name: name.into(),
                searched: format!("{} ({e})", searched.join(", ")),
                hint,
            });
        }
    }

    // Last resort: build what is missing. This can take several minutes on a cold cache.
    let built = built_dir().map_err(|e| Error::MissingBinary {
        name: name.into(),
        searched: searched.join(", "),
        hint: format!("{hint} (automatic build failed: {e})"),
    })?;
    let p = built.join(name);
    if is_executable(&p) {
        return Ok(p);
    }
    searched.push(p.display().to_string());
    Err(Error::MissingBinary {
        name: name.into(),
        searched: searched.join(", "),
        hint,
    })
}
