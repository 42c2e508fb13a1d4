//! The operator's Kubernetes API client: kube's, over HTTP/2 when the API server offers it.
//!
//! kube-client's own stack speaks HTTP/1.1, one request at a time per connection, so every
//! watch and every reconcile waiting on the API server held a TLS connection of its own (92
//! at the scale test's CI size), each with its read, write and TLS buffers, kept in the pool
//! for 90 s after a burst. Over HTTP/2 every request and watch shares one connection, as
//! client-go's do.
//!
//! The stack is kube's own layers (base URI, authentication, impersonation headers, retries
//! of 429 and 503) around hyper's client with HTTP/2 enabled. Through a proxy the operator
//! keeps kube's stack. A client certificate from an exec plugin is used, but not renewed when
//! it expires, which kube's stack would do: such kubeconfigs are for people, not operators.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A ping on an idle connection this often, and the connection given up when the answer
/// takes longer than the timeout: a watch on a connection that died without a reset (the API
/// server's host gone) would otherwise wait for its server-side timeout, minutes.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client for `config`.
pub fn client(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let tls = config.rustls_client_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}
