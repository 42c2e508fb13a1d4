//! Which environment variables an image reads: a name is read when a template under the image's
//! `rootfs` (or the base image's) uses `.Env.NAME`, or a script uses `$NAME` / `${NAME}`. A few
//! variables are read by programs whose source is not in docker-jitsi-meet; they are listed
//! with their reader.

use std::fs;
use std::path::Path;

/// Variables read outside docker-jitsi-meet's own files, with the reader.
const EXTERNAL: &[(&str, &str)] = &[
    (
        "S6_YES_I_WANT_A_WORLD_WRITABLE_RUN_BECAUSE_KUBERNETES",
        "s6-overlay's /init (accepts the kubelet's world-writable emptyDir at /run)",
    ),
    ("TZ", "glibc and the JVM"),
];

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether `text` uses `name` as a template or shell variable.
fn uses(text: &str, name: &str) -> bool {
    let bytes = text.as_bytes();
    for prefix in [".Env.", "$", "${"] {
        let needle = format!("{prefix}{name}");
        let mut from = 0;
        while let Some(i) = text[from..].find(&needle) {
            let end = from + i + needle.len();
            if bytes.get(end).is_none_or(|c| !is_ident(*c)) {
                return true;
            }
            from = end;
        }
    }
    false
}

fn any_file_uses(dir: &Path, name: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            any_file_uses(&p, name)
        } else {
            fs::read_to_string(&p).is_ok_and(|t| uses(&t, name))
        }
    })
}

/// Whether anything in `image` (a docker-jitsi-meet image directory) reads `name`.
pub fn read_by(djm: &Path, image: &str, name: &str) -> bool {
    EXTERNAL.iter().any(|(n, _)| *n == name)
        || any_file_uses(&djm.join(image).join("rootfs"), name)
        || any_file_uses(&djm.join("base/rootfs"), name)
}

#[test]
fn recognises_template_and_shell_uses_only_as_whole_names() {
    assert!(uses("{{ .Env.XMPP_DOMAIN | default \"x\" }}", "XMPP_DOMAIN"));
    assert!(uses("if [[ -z \"$JVB_AUTH_PASSWORD\" ]]", "JVB_AUTH_PASSWORD"));
    assert!(uses("echo ${XMPP_HIDDEN_DOMAIN}", "XMPP_HIDDEN_DOMAIN"));
    assert!(!uses("{{ .Env.XMPP_DOMAIN_PREFIX }}", "XMPP_DOMAIN"));
    assert!(!uses("XMPP_SERVER is documented here", "XMPP_SERVER"));
}
