//! API outages: after kube-apiserver or etcd comes back, the watches relist at once, so a
//! Meeting created afterwards gets its links and a deleted or edited child comes back within
//! seconds, and `/healthz` stays truthful: healthy through a short outage, unhealthy once the
//! watches have failed for longer than the bound (a second operator runs with a 3 s bound to
//! show that side within the test's time).
//!
//! Its own test binary: it restarts its control plane's API server and etcd.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::operator::{Operator, http_get};
use common::{cluster, create_tls_secret, wait_ready};
use conclave::api::{Bridge, Meeting};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// How long the API server or etcd is down.
const DOWN: Duration = Duration::from_secs(8);
/// The API server's second outage, right after the first.
const SECOND_DOWN: Duration = Duration::from_secs(5);
/// What "within seconds" must mean even on a busy machine; kube-runtime's default backoff
/// (800 ms doubling to 30 s, reset after 120 s) took 20–50 s here.
const RESUMED: Duration = Duration::from_secs(30);

fn meeting(name: &str) -> Meeting {
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting", "metadata": {"name": name},
        "spec": {"bridge": "meet", "participants": [{"name": "alice"}]}
    }))
    .expect("meeting")
}

/// Creates Meeting `name` (retrying while the API server settles) and returns how long its
/// links took after the create succeeded (at most [`RESUMED`], or the test fails, showing the
/// Meeting's and its Bridge's conditions).
async fn links_after_create(meetings: &Api<Meeting>, bridges: &Api<Bridge>, name: &str) -> Duration {
    wait_for(&format!("creating Meeting {name}"), Duration::from_secs(30), || async {
        meetings
            .create(&PostParams::default(), &meeting(name))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let started = Instant::now();
    loop {
        let m = meetings.get(name).await.ok();
        if m.as_ref()
            .and_then(|m| m.status.as_ref()?.credentials_secret.as_ref())
            .is_some()
        {
            return started.elapsed();
        }
        if started.elapsed() > RESUMED {
            let bridge = bridges.get("meet").await.ok();
            panic!(
                "Meeting {name} had no links {RESUMED:?} after its create; its status: {:#?}; Bridge meet's conditions: {:#?}",
                m.and_then(|m| m.status),
                bridge.and_then(|b| b.status).map(|s| s.conditions)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/healthz` of `port` every 100 ms until `stop`, counting non-200 answers (a refused
/// connection counts as unhealthy too).
fn watch_health(port: u16, stop: Arc<AtomicBool>) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let unhealthy = Arc::new(AtomicUsize::new(0));
    let count = unhealthy.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if !matches!(http_get(port, "/healthz"), Ok((200, _))) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (unhealthy, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_at_once_after_api_server_and_etcd_restarts() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "outage").await;
    let idle_ns = testenv::namespace(&client, "outage-bound").await;
    let operator = Operator::start("conclave-outage-test", &ns);
    // The same operator with a 3 s bound, in a namespace of its own.
    let strict = Operator::launch(
        "conclave-outage-strict",
        None,
        &["--watch-namespace", &idle_ns, "--watch-failure-bound", "3s"],
        &[],
        None,
    );
    let (port, strict_port) = (operator.http_port().await, strict.http_port().await);
    operator.wait_ready(port).await;
    strict.wait_ready(strict_port).await;

    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "meet"},
        "spec": {"domain": "meet.example.com", "tls": {"secretName": "byo-tls"}, "turn": {"enabled": false},
                 "sfu": {"media": {"port": 31800}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    wait_ready(&bridges, "meet").await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    links_after_create(&meetings, &bridges, "before").await;

    // The API server dies and comes back after DOWN, twice in a row: a second outage soon
    // after a first is where a backoff that only resets after a quiet spell (kube-runtime's
    // default: 120 s) had grown to half a minute.
    let stop = Arc::new(AtomicBool::new(false));
    let (unhealthy, poller) = watch_health(port, stop.clone());
    let (strict_unhealthy, strict_poller) = watch_health(strict_port, stop.clone());
    for (round, down) in [(1, DOWN), (2, SECOND_DOWN)] {
        let restarted = Instant::now();
        tokio::task::spawn_blocking(move || cp.restart_component("kube-apiserver", down, true))
            .await
            .expect("restart task")
            .expect("kube-apiserver restarts");
        eprintln!(
            "kube-apiserver down {}s, ready again after {:.1}s",
            down.as_secs(),
            restarted.elapsed().as_secs_f64()
        );
        let took = links_after_create(&meetings, &bridges, &format!("after-apiserver-{round}")).await;
        eprintln!(
            "links {:.2}s after creating a Meeting once kube-apiserver was back (outage {round})",
            took.as_secs_f64()
        );
    }

    // A deleted child comes back, and so does a hand-edited one.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .delete("meet-web", &Default::default())
        .await
        .expect("delete a child");
    let deleted = Instant::now();
    wait_for("meet-web restored", RESUMED, || async {
        let d = deployments.get_opt("meet-web").await.ok()??;
        d.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;
    eprintln!("deleted child restored after {:.2}s", deleted.elapsed().as_secs_f64());
    deployments
        .patch(
            "meet-jicofo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("edit a child");
    let edited = Instant::now();
    wait_for("meet-jicofo's replicas restored", RESUMED, || async {
        let d = deployments.get("meet-jicofo").await.ok()?;
        (d.spec.replicas == Some(1)).then_some(())
    })
    .await;
    eprintln!("edited child restored after {:.2}s", edited.elapsed().as_secs_f64());
    // The restored web Deployment's pod has to be scheduled and started again (by a
    // kube-controller-manager that may still be taking its lease back after the restarts):
    // until then the Bridge is rightly not Ready, and a new Meeting on it rightly waits.
    wait_ready(&bridges, "meet").await;

    // The strict operator has been unhealthy during the outage and is healthy again after it.
    wait_for("the strict operator healthy again", Duration::from_secs(60), || async {
        (http_get(strict_port, "/healthz").ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(
        strict_unhealthy.load(Ordering::SeqCst) > 0,
        "an operator whose watches failed for longer than its bound reported unhealthy"
    );

    // etcd dies and comes back.
    tokio::task::spawn_blocking(move || cp.restart_component("etcd", DOWN, true))
        .await
        .expect("restart task")
        .expect("etcd restarts");
    let took = links_after_create(&meetings, &bridges, "after-etcd").await;
    eprintln!(
        "links {:.2}s after creating a Meeting once etcd was back",
        took.as_secs_f64()
    );

    stop.store(true, Ordering::SeqCst);
    poller.join().expect("poller");
    strict_poller.join().expect("poller");
    assert_eq!(
        unhealthy.load(Ordering::SeqCst),
        0,
        "/healthz stayed 200 through both short outages"
    );
    assert_eq!(http_get(strict_port, "/healthz").expect("healthz").0, 200);
}
