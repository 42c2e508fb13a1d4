//! The operator's one HTTP server: `/healthz`, `/readyz` and `/metrics`, nothing else.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

/// How long, by default, a watch may fail without a break before `/healthz` reports the
/// operator unhealthy. Far longer than a short API outage (the watches resume within seconds of
/// the API server coming back), so a liveness probe never restarts a working operator through
/// one; short enough that a stuck operator is restarted within minutes (with the default probe,
/// period 10 s and 3 failures, about 90 s after its watches began to fail).
pub const WATCH_FAILURE_BOUND: Duration = Duration::from_secs(60);

/// A watch that has reported no error for this long is working again. A watch that recovers
/// without a relist reports nothing, while a failing one reports an error at least every
/// retry: at most the watch backoff's cap (2 s) plus the client's connect timeout (10 s).
pub const WATCH_RECOVERED_AFTER: Duration = Duration::from_secs(20);

/// What the probes report.
#[derive(Debug)]
pub struct Health {
    live: AtomicBool,
    ready: AtomicBool,
    failure_bound: Duration,
    /// Per watch: since when it has been failing and when it last failed.
    watches: Mutex<BTreeMap<&'static str, Failing>>,
}

#[derive(Clone, Copy, Debug)]
struct Failing {
    since: Instant,
    last: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(WATCH_FAILURE_BOUND)
    }
}

impl Health {
    /// Health that turns unhealthy once a watch has failed for longer than `failure_bound`.
    pub fn new(failure_bound: Duration) -> Health {
        Health {
            live: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            failure_bound,
            watches: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the operator's loops still run; false once they have ended.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// Whether every cache has synced.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// A watch met an error (the API server unreachable, a refused request, a dropped stream).
    pub fn watch_failed(&self, watch: &'static str) {
        let now = Instant::now();
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let failing = watches.entry(watch).or_insert(Failing { since: now, last: now });
        if now.duration_since(failing.last) >= WATCH_RECOVERED_AFTER {
            failing.since = now;
        }
        failing.last = now;
    }

    /// A watch delivered objects: it works.
    pub fn watch_worked(&self, watch: &'static str) {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if !watches.is_empty() {
            watches.remove(watch);
        }
    }

    /// `None` when live; otherwise why not: the loops ended, or a watch has been failing for
    /// longer than the bound (default [`WATCH_FAILURE_BOUND`]).
    pub fn unhealthy(&self) -> Option<String> {
        self.unhealthy_at(Instant::now())
    }

    fn unhealthy_at(&self, now: Instant) -> Option<String> {
        if !self.live.load(Ordering::Relaxed) {
            return Some("stopped".into());
        }
        let watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let failing: Vec<String> = watches
            .iter()
            .filter(|(_, f)| {
                now.duration_since(f.last) < WATCH_RECOVERED_AFTER && now.duration_since(f.since) > self.failure_bound
            })
            .map(|(name, f)| format!("{name} for {} s", now.duration_since(f.since).as_secs()))
            .collect();
        (!failing.is_empty()).then(|| format!("watches failing: {}", failing.join(", ")))
    }
}

/// Serves until `shutdown` completes. Connections are HTTP/1 with a header timeout, so a client
/// that opens a socket and sends nothing cannot pin a task forever.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning on the error.
                tracing::warn!(error = %e, "accepting an http connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
    }
    match req.uri().path() {
        "/healthz" => match health.unhealthy() {
            None => text(StatusCode::OK, "ok\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/readyz" if health.ready() => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n".into()),
        "/metrics" => match metrics.encode() {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                if let Ok(value) = metrics::CONTENT_TYPE.parse() {
                    response.headers_mut().insert(CONTENT_TYPE, value);
                }
                response
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_beyond_the_bound_is_unhealthy_until_it_recovers() {
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.unhealthy_at(t0), None);
        h.watch_failed("meetings");
        let failing = |h: &Health, since: Instant, last: Instant| {
            h.watches
                .lock()
                .expect("lock")
                .insert("meetings", Failing { since, last });
        };
        // Failing, but not for longer than the bound: a short outage.
        failing(&h, t0, t0 + Duration::from_secs(15));
        assert_eq!(h.unhealthy_at(t0 + Duration::from_secs(16)), None);
        // Failing without a break for longer than the bound.
        failing(&h, t0, t0 + Duration::from_secs(65));
        let why = h.unhealthy_at(t0 + Duration::from_secs(66)).expect("unhealthy");
        assert!(why.contains("meetings for 66 s"), "{why}");
        // No error for a while: the watch resumed without a relist.
        assert_eq!(
            h.unhealthy_at(t0 + Duration::from_secs(65) + WATCH_RECOVERED_AFTER),
            None
        );
        // Objects delivered: working at once.
        failing(&h, t0, t0 + Duration::from_secs(65));
        h.watch_worked("meetings");
        assert_eq!(h.unhealthy_at(t0 + Duration::from_secs(66)), None);
        h.set_live(false);
        assert_eq!(h.unhealthy_at(t0).as_deref(), Some("stopped"));
    }

    #[test]
    fn a_new_failure_after_a_quiet_spell_starts_a_new_streak() {
        let h = Health::default();
        h.watch_failed("nodes");
        let first = h.watches.lock().expect("lock")["nodes"];
        // Pretend the last error was long ago: the next one starts over.
        let long_ago = first
            .last
            .checked_sub(WATCH_RECOVERED_AFTER + Duration::from_secs(1))
            .expect("the clock started long ago");
        h.watches.lock().expect("lock").insert(
            "nodes",
            Failing {
                since: long_ago,
                last: long_ago,
            },
        );
        h.watch_failed("nodes");
        let now = h.watches.lock().expect("lock")["nodes"];
        assert!(now.since > long_ago);
    }
}
