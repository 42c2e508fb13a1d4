//! Operating the operator against the real control plane: health and metrics over HTTP, leader
//! election between operator processes (takeover after a crash and after a graceful stop, and
//! no object written by two replicas at once, from the API server's audit log), namespace
//! scoping, and graceful shutdown on SIGTERM.
//!
//! Every operator here watches its own test's namespace only, so operators of tests running in
//! parallel never touch each other's objects.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::operator::{Operator, http_get};
use common::{cluster, create_tls_secret, label_bridge};
use conclave::api::Bridge;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly: comments are `# HELP` or `# TYPE`, and every
/// other non-empty line is `name{label="value",...} value`.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            let kind = words.next();
            let name = words.next().unwrap_or_default();
            assert!(
                matches!(kind, Some("HELP" | "TYPE")) && valid_name(name),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(valid_name(key), "bad label name {key:?} in {line:?}");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => {
                                let (_, c) = chars.next().unwrap_or_else(|| panic!("bad escape in {line:?}"));
                                value.push(if c == 'n' { '\n' } else { c });
                            }
                            Some((i, '"')) => break i,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    };
                    labels.insert(key.to_string(), value);
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                (name, labels)
            }
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// A Bridge with one SFU replica on NodePort `port`: each test uses its own range, since
/// NodePorts are allocated cluster-wide and the tests share one control plane.
fn bridge(name: &str, domain: &str, tls_secret: Option<&str>, port: u16) -> Bridge {
    let mut spec = json!({"domain": domain, "sfu": {"replicas": 1, "media": {"exposure": "NodePort", "port": port}}});
    if let Some(secret) = tls_secret {
        spec["tls"] = json!({"secretName": secret});
    }
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("bridge")
}

async fn wait_status(bridges: &Api<Bridge>, name: &str) -> Bridge {
    wait_for(
        &format!("Bridge {name} to get a status"),
        Duration::from_secs(60),
        || async {
            bridges
                .get(name)
                .await
                .ok()
                .filter(|b| b.status.as_ref().is_some_and(|s| s.observed_generation.is_some()))
        },
    )
    .await
}

#[tokio::test]
async fn health_and_metrics() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "metrics").await;
    let operator = Operator::launch("conclave-op-metrics", None, &["--watch-namespace", &ns], &[], None);
    let port = operator.http_port().await;
    operator.wait_ready(port).await;
    assert_eq!(http_get(port, "/healthz").expect("healthz").0, 200);
    assert_eq!(http_get(port, "/nothing-here").expect("404").0, 404);

    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(
            &PostParams::default(),
            &bridge("meet", "meet.example.com", Some("byo-tls"), 31100),
        )
        .await
        .expect("bridge");
    wait_status(&bridges, "meet").await;

    let capacity = [("namespace", ns.as_str()), ("bridge", "meet"), ("state", "available")];
    let text = wait_for("Bridge metrics", Duration::from_secs(30), || async {
        let (status, body) = http_get(port, "/metrics").ok()?;
        let samples = parse_metrics(&body);
        let reconciled = find(&samples, "conclave_reconciles_total", &[("kind", "Bridge")])?.value > 0.0;
        (status == 200 && reconciled && find(&samples, "conclave_bridge_capacity_participants", &capacity).is_some())
            .then_some(body)
    })
    .await;
    let samples = parse_metrics(&text);
    let value = |name: &str, labels: &[(&str, &str)]| {
        find(&samples, name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from\n{text}"))
            .value
    };
    assert!(value("conclave_reconcile_duration_seconds_count", &[("kind", "Bridge")]) > 0.0);
    assert!(value("conclave_reconcile_duration_seconds_sum", &[("kind", "Bridge")]) > 0.0);
    assert!(
        value(
            "conclave_reconcile_duration_seconds_bucket",
            &[("kind", "Bridge"), ("le", "+Inf")]
        ) > 0.0
    );
    assert_eq!(value("conclave_bridge_capacity_participants", &capacity), 100.0);
    assert_eq!(
        value(
            "conclave_bridge_capacity_participants",
            &[("namespace", ns.as_str()), ("bridge", "meet"), ("state", "reserved")]
        ),
        0.0
    );
    // prosody, jicofo, web and coturn.
    assert!(value("conclave_managed_objects", &[("kind", "Deployment")]) >= 4.0);
    assert_eq!(value("conclave_leader", &[]), 1.0);
    assert!(
        text.lines()
            .any(|l| l == "# TYPE conclave_reconcile_duration_seconds histogram"),
        "the duration is a histogram:\n{text}"
    );

    // A deleted Bridge's capacity series goes away.
    bridges
        .delete("meet", &Default::default())
        .await
        .expect("delete bridge");
    wait_for("capacity series removed", Duration::from_secs(30), || async {
        let (_, body) = http_get(port, "/metrics").ok()?;
        find(
            &parse_metrics(&body),
            "conclave_bridge_capacity_participants",
            &capacity,
        )
        .is_none()
        .then_some(())
    })
    .await;
}

/// The Lease's holder, if any.
async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

/// Successful writes in `ns` other than to Leases (contending for the Lease is the mechanism
/// itself): (user, first request received, last response sent).
fn write_windows(events: &[serde_json::Value], ns: &str, users: &[&str]) -> Vec<(String, String, String)> {
    let mut windows: BTreeMap<String, (String, String)> = BTreeMap::new();
    for e in events {
        let user = e["user"]["username"].as_str().unwrap_or_default();
        let write = matches!(
            e["verb"].as_str(),
            Some("create" | "update" | "patch" | "delete" | "deletecollection")
        );
        let ok = e["responseStatus"]["code"].as_i64().is_some_and(|c| c < 400);
        if !users.contains(&user)
            || e["stage"] != "ResponseComplete"
            || !write
            || !ok
            || e["objectRef"]["namespace"] != ns
            || e["objectRef"]["resource"] == "leases"
        {
            continue;
        }
        let received = e["requestReceivedTimestamp"].as_str().unwrap_or_default().to_string();
        let done = e["stageTimestamp"].as_str().unwrap_or_default().to_string();
        let w = windows
            .entry(user.to_string())
            .or_insert((received.clone(), done.clone()));
        w.0 = w.0.clone().min(received);
        w.1 = w.1.clone().max(done);
    }
    let mut v: Vec<_> = windows.into_iter().map(|(u, (a, b))| (u, a, b)).collect();
    v.sort_by(|x, y| x.1.cmp(&y.1));
    v
}

#[tokio::test]
async fn leader_election() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "leader").await;
    let lease = format!("conclave-{ns}");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let args = [
        "--leader-elect",
        "--lease-namespace",
        &ns,
        "--lease-name",
        &lease,
        "--watch-namespace",
        &ns,
    ];
    let user = |id: &str| format!("conclave-{id}-{ns}");
    let mut replicas: BTreeMap<&str, Operator> = ["op-a", "op-b"]
        .into_iter()
        .map(|id| (id, Operator::launch(&user(id), None, &args, &[("POD_NAME", id)], None)))
        .collect();

    let first = wait_for("a leader", Duration::from_secs(30), || async {
        holder(&leases, &lease).await.filter(|h| h == "op-a" || h == "op-b")
    })
    .await;
    let second = if first == "op-a" { "op-b" } else { "op-a" };
    // Standbys are ready too: otherwise a rolling update would wait for them for ever.
    for op in replicas.values() {
        let port = op.http_port().await;
        op.wait_ready(port).await;
    }

    // Only the leader reconciles.
    bridges
        .create(&PostParams::default(), &bridge("meet", "meet.example.com", None, 31200))
        .await
        .expect("bridge");
    wait_status(&bridges, "meet").await;
    replicas[first.as_str()]
        .wait_log("reconciled", Duration::from_secs(30))
        .await;
    assert_eq!(
        replicas[second].log_count(&["reconciled"]),
        0,
        "the standby reconciles nothing"
    );

    // The leader dies: the standby takes over once the lease expires and reconciles a change.
    let killed = Instant::now();
    replicas.get_mut(first.as_str()).expect("leader").kill();
    bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sfu": {"replicas": 2}}})),
        )
        .await
        .expect("scale");
    wait_for("the standby to hold the lease", Duration::from_secs(20), || async {
        (holder(&leases, &lease).await.as_deref() == Some(second)).then_some(())
    })
    .await;
    let lease_taken = killed.elapsed();
    wait_for(
        "the new leader to create meet-sfu-1",
        Duration::from_secs(20),
        || async { statefulsets.get_opt("meet-sfu-1").await.ok().flatten() },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL: lease after {lease_taken:?}, change reconciled after {takeover:?}");
    assert!(
        takeover < Duration::from_secs(15),
        "a standby takes over within 15 s of the leader dying (took {takeover:?})"
    );

    // A graceful stop hands over at once: the leader releases the lease.
    let third = "op-c";
    replicas.insert(
        third,
        Operator::launch(&user(third), None, &args, &[("POD_NAME", third)], None),
    );
    replicas[third]
        .wait_log("watching lease", Duration::from_secs(30))
        .await;
    let stopped = Instant::now();
    replicas[second].sigterm();
    wait_for("op-c to hold the lease", Duration::from_secs(15), || async {
        (holder(&leases, &lease).await.as_deref() == Some(third)).then_some(())
    })
    .await;
    let handover = stopped.elapsed();
    let leader = replicas.get_mut(second).expect("second leader");
    let status = leader.wait_exit(Duration::from_secs(10)).await;
    eprintln!("takeover after SIGTERM: {handover:?}");
    assert!(status.success(), "a gracefully stopped leader exits 0, got {status}");
    assert!(leader.log_count(&["released the lease"]) > 0);
    assert!(
        handover < Duration::from_secs(2),
        "a standby takes over within 2 s of a graceful stop (took {handover:?})"
    );
    bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sfu": {"replicas": 1}}})),
        )
        .await
        .expect("scale down");
    wait_for("op-c to prune meet-sfu-1", Duration::from_secs(30), || async {
        statefulsets
            .get_opt("meet-sfu-1")
            .await
            .ok()
            .and_then(|s| s.is_none().then_some(()))
    })
    .await;

    // A leader that started from listed caches converges like one that saw every change: once
    // it has reconciled without writing, a change that alters no child costs no write.
    let c = &replicas[third];
    wait_for("op-c to converge", Duration::from_secs(30), || {
        let n = c.log_count(&["reconciled writes=0 "]);
        async move { (n > 0).then_some(()) }
    })
    .await;
    let seen = c.log().len();
    label_bridge(&bridges, "meet", "touched", "yes").await;
    let after = wait_for("op-c to reconcile the label change", Duration::from_secs(30), || {
        let lines: Vec<String> = c.log()[seen..]
            .iter()
            .filter(|l| l.contains("reconciled"))
            .cloned()
            .collect();
        async move { (!lines.is_empty()).then_some(lines) }
    })
    .await;
    assert!(
        after.iter().all(|l| l.contains("reconciled writes=0 ")),
        "a converged Bridge costs no writes after a takeover: {after:#?}"
    );

    // From the API server's own record: the replicas wrote one after another, never at once.
    let users: Vec<String> = [first.as_str(), second, third].iter().map(|id| user(id)).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let windows = wait_for(
        "every leader's writes in the audit log",
        Duration::from_secs(30),
        || {
            let windows = write_windows(&cp.audit_events(), &ns, &user_refs);
            async move { (windows.len() == 3).then_some(windows) }
        },
    )
    .await;
    assert_eq!(
        windows.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        user_refs,
        "leaders wrote in the order they led: {windows:?}"
    );
    for pair in windows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let end = chrono::DateTime::parse_from_rfc3339(&a.2).expect("timestamp");
        let start = chrono::DateTime::parse_from_rfc3339(&b.1).expect("timestamp");
        assert!(end < start, "{} wrote until {end} but {} began at {start}", a.0, b.0);
    }
}

#[tokio::test]
async fn watch_namespace() {
    let cp = cluster();
    let client = cp.client().await;
    let watched = testenv::namespace(&client, "watched").await;
    let other = testenv::namespace(&client, "unwatched").await;
    let _operator = Operator::launch("conclave-op-scoped", None, &["--watch-namespace", &watched], &[], None);

    // The unwatched Bridge goes first: once the watched one has a status, the operator has
    // seen both, so the other's lack of one is not a matter of waiting longer.
    let ignored: Api<Bridge> = Api::namespaced(client.clone(), &other);
    ignored
        .create(
            &PostParams::default(),
            &bridge("meet", "other.example.com", None, 31300),
        )
        .await
        .expect("unwatched bridge");
    let served: Api<Bridge> = Api::namespaced(client.clone(), &watched);
    served
        .create(&PostParams::default(), &bridge("meet", "meet.example.com", None, 31400))
        .await
        .expect("watched bridge");
    wait_status(&served, "meet").await;
    let b = ignored.get("meet").await.expect("unwatched bridge");
    assert!(
        b.status.is_none(),
        "a Bridge outside the watch namespace is left alone: {:?}",
        b.status
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &other);
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing is created outside the watch namespace"
    );
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "sigterm").await;
    let mut operator = Operator::launch("conclave-op-sigterm", None, &["--watch-namespace", &ns], &[], None);
    let port = operator.http_port().await;
    operator.wait_ready(port).await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(&PostParams::default(), &bridge("meet", "meet.example.com", None, 31500))
        .await
        .expect("bridge");
    operator.wait_log("reconciled", Duration::from_secs(60)).await;

    let signalled = Instant::now();
    operator.sigterm();
    let status = operator.wait_exit(Duration::from_secs(5)).await;
    eprintln!("stopped {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(operator.log_count(&["controllers stopped"]) > 0);
    assert!(operator.log_count(&["conclave operator stopped"]) > 0);
}

#[test]
fn leader_election_needs_a_lease_namespace() {
    let out = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["run", "--leader-elect"])
        .env_remove("POD_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("conclave runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--lease-namespace"), "{stderr}");
}
