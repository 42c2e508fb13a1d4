//! The security headers of every response, and the Content-Security-Policy that confines the
//! page to its own origin and the LiveKit signalling URL.

use hyper::Uri;

/// What the page may talk to besides its own origin: the signalling URL's origin, in both its
/// WebSocket form (signalling) and its HTTP form (LiveKit's Twirp API, for a moderator's Admit and
/// Deny). Built once at start-up from `--livekit-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signalling {
    /// As the page is told to connect: `ws://` or `wss://`, authority, no trailing slash.
    pub url: String,
    /// `http://` or `https://` with the same authority.
    pub http_origin: String,
    /// `ws://` or `wss://` with the same authority.
    pub ws_origin: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("{0:?} is not a URL")]
    Invalid(String),
    #[error("{0:?}: the scheme must be ws, wss, http or https")]
    Scheme(String),
    #[error("{0:?}: a host is required")]
    Host(String),
    #[error("{0:?}: no query or fragment allowed")]
    Query(String),
}

impl Signalling {
    /// Accepts `ws(s)://host[:port][/path]` or its `http(s)` form (the SDK turns either into a
    /// WebSocket URL and appends `/rtc`).
    pub fn parse(url: &str) -> Result<Signalling, UrlError> {
        let uri: Uri = url.parse().map_err(|_| UrlError::Invalid(url.into()))?;
        let secure = match uri.scheme_str() {
            Some("wss" | "https") => true,
            Some("ws" | "http") => false,
            _ => return Err(UrlError::Scheme(url.into())),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| UrlError::Host(url.into()))?;
        if uri.query().is_some() || url.contains('#') {
            return Err(UrlError::Query(url.into()));
        }
        let (ws, http) = if secure { ("wss", "https") } else { ("ws", "http") };
        let path = uri.path().trim_end_matches('/');
        Ok(Signalling {
            url: format!("{ws}://{authority}{path}"),
            http_origin: format!("{http}://{authority}"),
            ws_origin: format!("{ws}://{authority}"),
        })
    }

    /// The base URL of LiveKit's HTTP API (Twirp lives under `/twirp/` there).
    pub fn http_url(&self) -> String {
        let path = &self.url[self.ws_origin.len()..];
        format!("{}{path}", self.http_origin)
    }
}

/// The page's Content-Security-Policy. Scripts, styles and the E2EE worker come from the page's
/// own origin only (no inline script, no `eval`); network access is the own origin (config and
/// guest exchange) and the signalling origin; media elements play `MediaStream`s, which CSP
/// does not govern. Nothing may frame the page.
pub fn content_security_policy(signalling: &Signalling) -> String {
    [
        "default-src 'none'".to_owned(),
        "script-src 'self'".to_owned(),
        "worker-src 'self'".to_owned(),
        "style-src 'self'".to_owned(),
        "img-src 'self'".to_owned(),
        "media-src 'self'".to_owned(),
        format!("connect-src 'self' {} {}", signalling.ws_origin, signalling.http_origin),
        "base-uri 'none'".to_owned(),
        "form-action 'none'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
    ]
    .join("; ")
}

/// How long a response may be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// The page (its address held a token), the config and the guest exchange: never stored.
    NoStore,
    /// Scripts and styles: may be stored, but revalidated on every use, so an upgraded image
    /// serves its own files at once.
    Revalidate,
}

/// Headers every response carries, `csp` included.
pub fn security_headers(csp: &str, caching: Caching) -> Vec<(&'static str, String)> {
    vec![
        ("content-security-policy", csp.to_owned()),
        ("referrer-policy", "no-referrer".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
        ("x-frame-options", "DENY".to_owned()),
        ("cross-origin-opener-policy", "same-origin".to_owned()),
        ("cross-origin-resource-policy", "same-origin".to_owned()),
        (
            "permissions-policy",
            "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=()".to_owned(),
        ),
        (
            "cache-control",
            match caching {
                Caching::NoStore => "no-store",
                Caching::Revalidate => "no-cache",
            }
            .to_owned(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalling_url_forms() {
        let s = Signalling::parse("wss://meet.example.com").expect("parse");
        assert_eq!(s.url, "wss://meet.example.com");
        assert_eq!(s.http_origin, "https://meet.example.com");
        assert_eq!(s.ws_origin, "wss://meet.example.com");
        assert_eq!(s.http_url(), "https://meet.example.com");
        let s = Signalling::parse("http://192.0.2.1:7880/lk/").expect("parse");
        assert_eq!(s.url, "ws://192.0.2.1:7880/lk");
        assert_eq!(s.http_url(), "http://192.0.2.1:7880/lk");
        assert_eq!(s.ws_origin, "ws://192.0.2.1:7880");
        for bad in [
            "ftp://x",
            "meet.example.com",
            "wss://",
            "wss://x/?a=b",
            "wss://x/#f",
            "",
        ] {
            assert!(Signalling::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn csp_allows_only_self_and_the_signalling_origin() {
        let s = Signalling::parse("wss://meet.example.com/").expect("parse");
        let csp = content_security_policy(&s);
        assert_eq!(
            csp,
            "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self'; \
             media-src 'self'; connect-src 'self' wss://meet.example.com https://meet.example.com; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert!(!csp.contains("unsafe"), "no unsafe-inline or unsafe-eval");
    }

    #[test]
    fn pages_are_not_stored() {
        let h = security_headers("x", Caching::NoStore);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("cache-control"), Some("no-store"));
        assert_eq!(get("referrer-policy"), Some("no-referrer"));
        assert_eq!(get("x-content-type-options"), Some("nosniff"));
        assert_eq!(get("content-security-policy"), Some("x"));
    }
}
