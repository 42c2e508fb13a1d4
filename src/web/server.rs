//! The HTTP server of `conclave web`: the page, its files, its configuration, the guest
//! exchange and the probes. Every response carries the security headers; nothing logged names a
//! participant or holds a token.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::files::{self, Target};
use super::headers::{self, Caching};
use super::limits::{GuestLimits, Refused};
use super::twirp::Credentials;
use crate::engine::livekit::token::{self, GuestError};

/// The page fetches its settings here (no inline script under the CSP).
pub const CONFIG_PATH: &str = "/_conclave/config";
/// Guests POST their guest token and name here.
pub const GUEST_PATH: &str = "/_conclave/guest";
/// Largest guest exchange body (a token and a name).
const MAX_GUEST_BODY: usize = 16 << 10;

pub struct State {
    pub static_dir: PathBuf,
    pub csp: String,
    /// `{"livekitUrl": ...}`, served at [`CONFIG_PATH`].
    pub config_json: Bytes,
    pub credentials: Credentials,
    /// False until the rooms file was applied once (always true without one).
    pub synced: Arc<AtomicBool>,
    pub guest_limits: GuestLimits,
}

/// Serves until `shutdown` completes.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an http connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Routes one request.
pub async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/healthz", &Method::GET) => text(state, StatusCode::OK, "ok"),
        ("/readyz", &Method::GET) => {
            let page = tokio::fs::metadata(files::path(&state.static_dir, files::INDEX))
                .await
                .is_ok();
            if page && state.synced.load(Ordering::Relaxed) {
                text(state, StatusCode::OK, "ok")
            } else if !page {
                text(state, StatusCode::SERVICE_UNAVAILABLE, "the page's files are missing")
            } else {
                text(state, StatusCode::SERVICE_UNAVAILABLE, "rooms not yet in sync")
            }
        }
        (CONFIG_PATH, &Method::GET) => respond(
            state,
            StatusCode::OK,
            "application/json",
            Caching::NoStore,
            state.config_json.clone(),
        ),
        (GUEST_PATH, &Method::POST) => guest(req, state).await,
        (CONFIG_PATH | GUEST_PATH | "/healthz" | "/readyz", _) => not_allowed(state),
        (_, &Method::GET | &Method::HEAD) => file(&path, method == Method::HEAD, state).await,
        _ => not_allowed(state),
    }
}

async fn file(path: &str, head: bool, state: &State) -> Response<Full<Bytes>> {
    let dir = &state.static_dir;
    let target = files::target(path, |name| files::path(dir, name).is_file());
    let (name, caching) = match target {
        Target::File(name) => (name, Caching::Revalidate),
        Target::Page => (files::INDEX.to_owned(), Caching::NoStore),
        Target::NotFound => return text(state, StatusCode::NOT_FOUND, "not found"),
    };
    match tokio::fs::read(files::path(dir, &name)).await {
        Ok(bytes) => {
            let body = if head { Bytes::new() } else { Bytes::from(bytes) };
            respond(state, StatusCode::OK, files::content_type(&name), caching, body)
        }
        Err(e) => {
            tracing::error!(file = %name, error = %e, "the page's files are not readable");
            text(state, StatusCode::SERVICE_UNAVAILABLE, "the page is not available")
        }
    }
}

#[derive(Deserialize)]
struct GuestRequest {
    guest: String,
    name: String,
}

/// Exchanges a guest token for an access token with a fresh identity.
async fn guest(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error_json(state, StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON");
    }
    if let Err(refused) = state.guest_limits.check_all() {
        return too_many(state, refused, "too many guests are joining right now");
    }
    let body = match Limited::new(req.into_body(), MAX_GUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_json(state, StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
    };
    let Ok(request) = serde_json::from_slice::<GuestRequest>(&body) else {
        return error_json(
            state,
            StatusCode::BAD_REQUEST,
            "expected {\"guest\": ..., \"name\": ...}",
        );
    };
    let creds = &state.credentials;
    let Ok(guest) = token::verify(&request.guest, &creds.api_key, creds.api_secret.as_bytes()) else {
        return error_json(
            state,
            StatusCode::FORBIDDEN,
            "this guest link is not valid, or not valid at this time",
        );
    };
    let identity = token::new_guest_identity();
    let claims = match token::guest_access_claims(&guest, &identity, &request.name) {
        Ok(c) => c,
        Err(GuestError::NotAGuestToken | GuestError::Metadata(_)) => {
            return error_json(state, StatusCode::FORBIDDEN, "this is not a guest link");
        }
        Err(e) => return error_json(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Err(refused) = state.guest_limits.check_link(&request.guest) {
        return too_many(state, refused, "too many guests are joining with this link");
    }
    match token::sign(&claims, creds.api_secret.as_bytes()) {
        Ok(access) => {
            tracing::info!(room = %claims.video.room, lobby = claims.video.can_subscribe == Some(false), "guest token exchanged");
            let body = serde_json::json!({ "token": access }).to_string();
            respond(
                state,
                StatusCode::OK,
                "application/json",
                Caching::NoStore,
                Bytes::from(body),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "signing a guest's access token failed");
            error_json(state, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn respond(
    state: &State,
    status: StatusCode,
    content_type: &str,
    caching: Caching,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status).header(CONTENT_TYPE, content_type);
    for (name, value) in headers::security_headers(&state.csp, caching) {
        builder = builder.header(name, value);
    }
    builder.body(Full::new(body)).unwrap_or_else(|_| {
        // Only reachable with an invalid header value, which the constants above are not.
        Response::new(Full::new(Bytes::new()))
    })
}

fn text(state: &State, status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    respond(
        state,
        status,
        "text/plain; charset=utf-8",
        Caching::NoStore,
        Bytes::from(format!("{msg}\n")),
    )
}

fn error_json(state: &State, status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": msg }).to_string();
    respond(state, status, "application/json", Caching::NoStore, Bytes::from(body))
}

/// 429 with `Retry-After`, and the same wait in words for the page to show.
fn too_many(state: &State, refused: Refused, what: &str) -> Response<Full<Bytes>> {
    let secs = refused.retry_after_secs();
    tracing::info!(retry_after_secs = secs, "guest exchange refused: {what}");
    let mut r = error_json(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        &format!("{what}; try again in {secs} s"),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, hyper::header::HeaderValue::from(secs));
    r
}

fn not_allowed(state: &State) -> Response<Full<Bytes>> {
    let mut r = text(state, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD, POST"));
    r
}
