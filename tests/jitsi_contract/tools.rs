//! What the contract test needs from outside the repository: docker-jitsi-meet's image sources
//! at the pinned tag, the `tpl` that renders their templates, Lightbend Config (the HOCON
//! parser of jicofo and the videobridge), all through `tests/tools/build.sh --jitsi`; and the
//! real programs that read the rendered configuration (Debian's nginx and prosody, Lua, node,
//! a JDK). When something is missing the test skips loudly, and fails under `CI`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tools {
    /// docker-jitsi-meet at `stable-11146-2` (the images the operator pins).
    pub djm: PathBuf,
    /// `tpl`, built from jitsi/tpl at the version docker-jitsi-meet's base image installs.
    pub tpl: PathBuf,
    /// com.typesafe:config's jar.
    pub hocon: PathBuf,
}

/// Programs the test runs, with the Debian package that provides each (what `.ci/run` installs).
const PROGRAMS: &[(&str, &str)] = &[
    ("nginx", "nginx"),
    ("prosodyctl", "prosody"),
    ("lua5.4", "lua5.4"),
    ("luac5.4", "lua5.4"),
    ("node", "nodejs"),
    ("java", "default-jdk-headless"),
    ("javac", "default-jdk-headless"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("chroot", "coreutils"),
    ("ip", "iproute2"),
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The tools, or why they cannot be had.
pub fn find() -> Result<Tools, String> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(p, _)| !on_path(p))
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing programs: {}", missing.join(", ")));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--jitsi")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} --jitsi failed ({}):\n{}",
            script.display(),
            out.status,
            stderr.trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| -> Result<PathBuf, String> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .ok_or_else(|| format!("build.sh --jitsi printed no {key}= line:\n{stdout}{stderr}"))
    };
    Ok(Tools {
        djm: get("djm")?,
        tpl: get("tpl")?,
        hocon: get("hocon")?,
    })
}

/// Whether CI is running (then a skip is a failure).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reports that the contract test cannot run: a loud skip, or a failure under CI.
pub fn unavailable(why: &str) {
    let banner = "!".repeat(78);
    let msg = format!(
        "\n{banner}\n!! SKIPPED: the Jitsi contract test cannot run here. Nothing about the Jitsi \
         containers' configuration was checked.\n!! {}\n{banner}\n",
        why.trim().replace('\n', "\n!! ")
    );
    assert!(
        !under_ci(),
        "CI is set, so a skipped Jitsi contract test is a failure:{msg}"
    );
    eprintln!("{msg}");
}
