//! How each watch gets the objects that exist when it starts: a paged list, or the API server
//! streaming them as watch events (Kubernetes' `WatchList`, `sendInitialEvents`).
//!
//! Streaming holds one object at a time where a list holds a page (500 objects) per watch, all
//! watches at once: at 100 Bridges and 10,000 Meetings the operator's resident memory after a
//! restart was 104 MiB with lists and 82 MiB streaming (`cargo bench --bench scale`). The API
//! server gains too: it no longer builds each page. `WatchList` is on by default from
//! Kubernetes 1.34 (1.33 shipped it off, and refuses `sendInitialEvents` then). A cluster can
//! still turn the gate off, and then refuses every streaming watch: `auto` asks first.

use futures::TryStreamExt;
use kube::Client;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::watcher;

use crate::api::Bridge;

/// The field selector of the probe: no object can have this name (a name cannot end with a
/// dot), so the API server streams nothing but the end of the initial events.
pub const PROBE_SELECTOR: &str = "metadata.name=conclave.initial-list.probe.";

/// The operator's choice (`--initial-list`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Streaming where the API server is 1.34 or later, else paged lists.
    #[default]
    Auto,
    Streaming,
    Paged,
}

impl InitialList {
    /// Whether to stream. `Auto` asks the API server its version and, from 1.34, whether it
    /// serves a streaming watch (two requests, at start; see [`probe`]).
    /// `bridges` are the Bridges the operator watches, for the probe.
    pub(super) async fn streaming(self, client: &Client, bridges: Api<Bridge>) -> bool {
        match self {
            InitialList::Streaming => true,
            InitialList::Paged => false,
            InitialList::Auto => match client.apiserver_version().await {
                Ok(v) => {
                    let on = supports_streaming(&v.major, &v.minor) && probe(bridges).await;
                    tracing::info!(version = %v.git_version, streaming = on, "initial lists");
                    on
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the API server's version is unknown; paged initial lists");
                    false
                }
            },
        }
    }
}

/// Whether the API server serves a streaming watch: one of Bridges, selecting none, must end
/// its initial events with the bookmark that says so. With the `WatchList` gate off the API
/// server refuses `sendInitialEvents`, and every watch would fail for ever (never ready); a
/// probe that cannot tell (the API server unreachable) chooses paged lists, which every
/// version serves.
async fn probe(bridges: Api<Bridge>) -> bool {
    let params = WatchParams::streaming_lists().fields(PROBE_SELECTOR).timeout(10);
    let first = match bridges.watch_metadata(&params, "").await {
        Ok(events) => {
            let mut events = std::pin::pin!(events);
            events.try_next().await
        }
        Err(e) => Err(e),
    };
    match first {
        Ok(Some(WatchEvent::Bookmark(b))) if b.metadata.annotations.contains_key(INITIAL_EVENTS_END) => true,
        Ok(Some(WatchEvent::Error(e))) => {
            tracing::info!(code = e.code, reason = %e.reason, "the API server refuses streaming watches");
            false
        }
        Ok(other) => {
            tracing::info!(event = ?other.map(|_| "another event"), "no streaming watch from the API server");
            false
        }
        Err(e) => {
            tracing::info!(error = %e, "the API server refuses streaming watches");
            false
        }
    }
}

/// The annotation of the bookmark that ends a streaming watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Whether Kubernetes `major.minor` serves streaming lists by default. Managed clusters
/// report minors such as `34+`.
fn supports_streaming(major: &str, minor: &str) -> bool {
    let number = |s: &str| -> Option<u32> { s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok() };
    match (number(major), number(minor)) {
        (Some(1), Some(minor)) => minor >= 34,
        (Some(major), Some(_)) => major > 1,
        _ => false,
    }
}

/// A watch's configuration with the chosen initial list.
pub(super) fn config(streaming: bool) -> watcher::Config {
    let config = watcher::Config::default();
    if streaming { config.streaming_lists() } else { config }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_from_kubernetes_1_34() {
        assert!(supports_streaming("1", "34"));
        assert!(supports_streaming("1", "37+"));
        assert!(supports_streaming("2", "0"));
        assert!(!supports_streaming("1", "33"));
        assert!(!supports_streaming("1", "27+"));
        assert!(!supports_streaming("", ""));
    }
}
