//! The prosody module Conclave ships (`src/engine/jitsi/mod_conclave_room_limits.lua`) run by a real
//! Lua 5.4 (prosody's language) against stand-ins for the three prosody APIs it touches
//! (`module:hook`, `module:get_option_string`, `util.jid`). What this proves is the module's own
//! logic: which rooms get which `_data.max_occupants` from which file. That Jitsi's
//! `muc_max_occupants` then enforces the field is Jitsi's code, not exercised here.

use std::path::Path;
use std::process::Command;

const HARNESS: &str = r#"
package.preload["util.jid"] = function()
    return { split = function(jid) return jid:match("^([^@]+)@") end }
end
local hooks = {}
module = {
    get_option_string = function(_, _, default) return os.getenv("LIMITS_FILE") or default end,
    hook = function(_, name, fn) hooks[name] = fn end,
    log = function() end,
}
dofile(arg[1])
for _, jid in ipairs({"standup@muc.meet.example.com", "all-hands@muc.meet.example.com",
                      "other@muc.meet.example.com", "zero@muc.meet.example.com"}) do
    local room = { jid = jid, _data = {} }
    hooks["muc-room-created"]({ room = room })
    print(jid:match("^([^@]+)") .. " " .. tostring(room._data.max_occupants))
end
"#;

fn lua() -> Option<&'static str> {
    ["lua5.4", "lua"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("-v").output().is_ok_and(|o| o.status.success()))
}

fn run(module: &Path, limits: Option<&Path>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let harness = dir.path().join("harness.lua");
    std::fs::write(&harness, HARNESS).expect("harness");
    let Some(lua) = lua() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "lua5.4 is required in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: no lua5.4 on this machine; install it to run the prosody module test");
        return String::new();
    };
    let mut cmd = Command::new(lua);
    cmd.arg(&harness).arg(module);
    match limits {
        Some(path) => cmd.env("LIMITS_FILE", path),
        None => cmd.env("LIMITS_FILE", dir.path().join("missing")),
    };
    let out = cmd.output().expect("lua runs");
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn module() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/jitsi/mod_conclave_room_limits.lua")
}

#[test]
fn rooms_get_the_limit_of_their_line_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = dir.path().join("limits");
    // What the operator renders, plus lines it never writes, which must be ignored.
    let rendered = conclave::engine::jitsi::rooms::limits_file(&std::collections::BTreeMap::from([
        ("all-hands".to_string(), 300),
        ("standup".to_string(), 25),
    ]));
    std::fs::write(&limits, format!("{rendered}zero=0\nbad line\nother=-5\n")).expect("limits");
    let out = run(&module(), Some(&limits));
    if out.is_empty() {
        return;
    }
    assert_eq!(
        out, "standup 25\nall-hands 300\nother nil\nzero nil\n",
        "per-room limits from the file; malformed, negative and zero lines ignored"
    );
}

#[test]
fn a_missing_file_limits_nothing() {
    let out = run(&module(), None);
    if out.is_empty() {
        return;
    }
    assert!(out.lines().all(|l| l.ends_with(" nil")), "{out}");
}
