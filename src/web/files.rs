//! Which request paths map to which files of the built page. The directory holds a flat set of
//! files (`index.html`, `app.js`, `e2ee-worker.js`, ...); every other single-segment path is a
//! room and gets `index.html`.

use std::path::{Path, PathBuf};

/// The page every room path serves.
pub const INDEX: &str = "index.html";

/// What a GET path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A file of the page, by name.
    File(String),
    /// `/` or `/<room>`: the page itself.
    Page,
    NotFound,
}

/// Classifies a path (without query). File names are plain: letters, digits, `.`, `-`, `_`,
/// not starting with a dot, so nothing outside the directory can be named.
pub fn target(path: &str, exists: impl Fn(&str) -> bool) -> Target {
    let Some(rest) = path.strip_prefix('/') else {
        return Target::NotFound;
    };
    if rest.is_empty() {
        return Target::Page;
    }
    if rest.contains('/') {
        return Target::NotFound;
    }
    let plain = !rest.starts_with('.') && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain && rest != INDEX && exists(rest) {
        return Target::File(rest.to_owned());
    }
    Target::Page
}

/// The file's path in `dir` (names come from [`target`], which allows no separators).
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Content type by extension; the page uses only these.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rooms_and_refusals() {
        let exists = |n: &str| ["app.js", "e2ee-worker.js", "index.html", ".hidden"].contains(&n);
        assert_eq!(target("/app.js", exists), Target::File("app.js".into()));
        assert_eq!(target("/e2ee-worker.js", exists), Target::File("e2ee-worker.js".into()));
        assert_eq!(target("/", exists), Target::Page);
        assert_eq!(target("/standup", exists), Target::Page);
        assert_eq!(target("/index.html", exists), Target::Page, "one way to get the page");
        assert_eq!(target("/.hidden", exists), Target::Page, "dot files are never served");
        assert_eq!(target("/team%20room", exists), Target::Page);
        assert_eq!(target("/a/b", exists), Target::NotFound);
        assert_eq!(target("/../etc/passwd", exists), Target::NotFound);
        assert_eq!(target("relative", exists), Target::NotFound);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
