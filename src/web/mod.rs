//! `conclave web`: the join page of a LiveKit Bridge and the little server behind it.
//!
//! It serves the built page (a directory of static files, so building Conclave needs no node),
//! tells the page where LiveKit's signalling is, exchanges guest tokens for access tokens, and
//! keeps the SFU's rooms equal to the operator's list of open rooms. It holds the Bridge's
//! LiveKit API key and secret (from the environment) and nothing else: no Kubernetes access.

pub mod files;
pub mod headers;
pub mod limits;
pub mod rooms;
pub mod server;
pub mod twirp;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hyper::body::Bytes;

use headers::Signalling;
use twirp::{Credentials, RoomService};

/// Where the Docker image puts the built page.
pub const DEFAULT_STATIC_DIR: &str = "/usr/share/conclave/web";
/// LiveKit refuses shorter secrets; so does `conclave web`, before anyone tries to join.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// The signalling URL the page connects to.
    pub livekit_url: String,
    /// LiveKit's HTTP API as `conclave web` reaches it (in a cluster: the SFU Service);
    /// default: the HTTP form of `livekit_url`.
    pub livekit_api_url: Option<String>,
    pub static_dir: PathBuf,
    pub rooms_file: Option<PathBuf>,
    pub rooms_interval: Duration,
    pub credentials: Credentials,
    pub guest_limits: limits::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("--livekit-url: {0}")]
    Url(#[from] headers::UrlError),
    #[error("the LiveKit API key is empty (set LIVEKIT_API_KEY)")]
    NoKey,
    #[error("the LiveKit API secret is shorter than {MIN_SECRET_LEN} characters (LIVEKIT_API_SECRET)")]
    ShortSecret,
    #[error("{0}")]
    Twirp(#[from] twirp::TwirpError),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server (and the rooms loop, with a rooms file) until `shutdown` completes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), WebError> {
    let signalling = Signalling::parse(&options.livekit_url)?;
    if options.credentials.api_key.is_empty() {
        return Err(WebError::NoKey);
    }
    if options.credentials.api_secret.len() < MIN_SECRET_LEN {
        return Err(WebError::ShortSecret);
    }
    let synced = Arc::new(AtomicBool::new(options.rooms_file.is_none()));
    let rooms_task = match &options.rooms_file {
        Some(path) => {
            let api = options.livekit_api_url.clone().unwrap_or_else(|| signalling.http_url());
            let service = RoomService::new(&api, options.credentials.clone())?;
            tracing::info!(rooms_file = %path.display(), livekit_api = %api, "keeping the SFU's rooms equal to the rooms file");
            Some(tokio::spawn(rooms::run(
                path.clone(),
                service,
                options.rooms_interval,
                synced.clone(),
            )))
        }
        None => None,
    };
    if tokio::fs::metadata(options.static_dir.join(files::INDEX))
        .await
        .is_err()
    {
        tracing::warn!(static_dir = %options.static_dir.display(), "no index.html: the page is not built here; /readyz stays unready");
    }
    let state = Arc::new(server::State {
        static_dir: options.static_dir.clone(),
        csp: headers::content_security_policy(&signalling),
        config_json: Bytes::from(serde_json::json!({ "livekitUrl": signalling.url }).to_string()),
        credentials: options.credentials,
        synced,
        guest_limits: limits::GuestLimits::new(options.guest_limits),
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: options.listen,
            source,
        })?;
    tracing::info!(livekit_url = %signalling.url, "serving the join page on {}", listener.local_addr()?);
    server::serve(listener, state, shutdown).await;
    if let Some(task) = rooms_task {
        task.abort();
    }
    Ok(())
}
