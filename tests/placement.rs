//! SFU placement heals, against the real scheduler and kwok nodes the test makes: pins stay put
//! when nodes come, a replica leaves a cordoned node (its old pod deleted gracefully, with the
//! drain budget), a deleted node, and a node its pod cannot fit on (after the grace period, on
//! the operator's clock); its advertised address follows, with an Event each time.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::operator::Operator;
use common::{cluster, create_tls_secret, label_bridge, wait_ready};
use conclave::api::Bridge;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use testenv::wait_for;

/// A kwok node in the test's own pool (label `pool=<pool>`), with an ExternalIP (and the
/// InternalIP and Hostname without which kwok rewrites its addresses).
async fn add_node(nodes: &Api<Node>, name: &str, pool: &str, ip: &str) {
    let internal = ip.replace("198.51.100.", "10.244.1.");
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "type": "kwok", "pool": pool},
        },
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": internal}, {"type": "ExternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        },
    }))
    .expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    // Ready, and without the taints the node lifecycle controller puts on a node until it has
    // seen it Ready (`not-ready`/`unreachable`, NoSchedule): until then neither the scheduler nor
    // the operator's placement may use it.
    wait_for(
        &format!("node {name} Ready and untainted"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(name).await.ok()?;
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| !t.is_empty());
            let ready = n
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && !tainted).then_some(())
        },
    )
    .await;
}

/// Replica index → (pinned node, advertised address) from the live StatefulSets.
async fn pins(statefulsets: &Api<StatefulSet>, bridge: &str, n: i32) -> BTreeMap<i32, (String, String)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let sts = statefulsets
            .get(&format!("{bridge}-sfu-{i}"))
            .await
            .expect("StatefulSet");
        let v = serde_json::to_value(&sts).expect("json");
        let node = conclave::bridge::placement::pinned_node(&v).expect("pinned");
        let pod = sts.spec.template.spec.expect("pod");
        let advertise = pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.name == "JVB_ADVERTISE_IPS")
            .and_then(|e| e.value)
            .unwrap_or_default();
        out.insert(i, (node, advertise));
    }
    out
}

/// Waits until replica `i` is pinned to a node other than `from` and the pod runs there.
async fn wait_moved(
    statefulsets: &Api<StatefulSet>,
    pods: &Api<Pod>,
    bridge: &str,
    i: i32,
    from: &str,
) -> (String, String) {
    let moved = wait_for(
        &format!("replica {i} to leave {from}"),
        Duration::from_secs(90),
        || async {
            let (node, advertise) = pins(statefulsets, bridge, i + 1).await.remove(&i)?;
            (node != from).then_some((node, advertise))
        },
    )
    .await;
    wait_for(
        &format!("replica {i}'s pod running on {}", moved.0),
        Duration::from_secs(90),
        || async {
            let p = pods.get_opt(&format!("{bridge}-sfu-{i}-0")).await.ok()??;
            let on = p.spec?.node_name? == moved.0 && p.metadata.deletion_timestamp.is_none();
            (on && p.status?.phase.as_deref() == Some("Running")).then_some(())
        },
    )
    .await;
    moved
}

/// `(reason, message)` of the operator's Events about `name`.
async fn event_notes(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn wait_move_event(client: &kube::Client, ns: &str, needle: &str) -> String {
    wait_for(
        &format!("an SFUMoved Event saying {needle:?}"),
        Duration::from_secs(60),
        || async {
            event_notes(client, ns, "pool")
                .await
                .into_iter()
                .find(|(r, n)| r == "SFUMoved" && n.contains(needle))
                .map(|(_, n)| n)
        },
    )
    .await
}

#[tokio::test]
async fn sfu_placement_is_stable_and_heals() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "placement").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chrono::Utc::now();
    let operator = Operator::with_clock("conclave-placement-test", &ns, dir.path(), now);
    let nodes: Api<Node> = Api::all(client.clone());
    let pool = ns.clone();
    add_node(&nodes, &format!("{ns}-b"), &pool, "198.51.100.2").await;
    add_node(&nodes, &format!("{ns}-c"), &pool, "198.51.100.3").await;
    create_tls_secret(&client, &ns, "byo-tls", "pool.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "pool"},
        "spec": {"domain": "pool.example.com", "tls": {"secretName": "byo-tls"}, "turn": {"enabled": false},
                 "sfu": {"replicas": 2, "maxReplicas": 3, "drainTimeout": "5m", "nodeSelector": {"pool": pool},
                         "media": {"exposure": "NodePort", "port": 31700}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    wait_ready(&bridges, "pool").await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = pins(&statefulsets, "pool", 2).await;
    let (b, c) = (format!("{ns}-b"), format!("{ns}-c"));
    assert_eq!(
        first,
        BTreeMap::from([
            (0, (b.clone(), "198.51.100.2".to_string())),
            (1, (c.clone(), "198.51.100.3".to_string()))
        ]),
        "one replica per node, each advertising its node's address"
    );

    // A node that sorts first joins the pool, and the pool grows: the new replica goes to the
    // new node (proof the operator planned with it), and nobody else moves.
    let a = format!("{ns}-a");
    add_node(&nodes, &a, &pool, "198.51.100.1").await;
    bridges
        .patch(
            "pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sfu": {"replicas": 3}}})),
        )
        .await
        .expect("grow the pool");
    wait_for("replica 2", Duration::from_secs(60), || async {
        statefulsets.get_opt("pool-sfu-2").await.ok().flatten()
    })
    .await;
    let grown = pins(&statefulsets, "pool", 3).await;
    assert_eq!(
        grown[&2],
        (a.clone(), "198.51.100.1".to_string()),
        "the new replica on the new node"
    );
    assert_eq!(grown[&0], first[&0], "pins are stable");
    assert_eq!(grown[&1], first[&1], "pins are stable");
    wait_ready(&bridges, "pool").await;

    // Record how the pods go: a replica that moves must be deleted gracefully, with its drain
    // budget (drainTimeout 5m + 30s), never killed.
    let graces: Arc<Mutex<BTreeMap<String, Option<i64>>>> = Arc::default();
    let recorder = {
        let (graces, pods) = (graces.clone(), pods.clone());
        tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default()).touched_objects().boxed();
            while let Some(Ok(p)) = events.next().await {
                if p.metadata.deletion_timestamp.is_some() {
                    let key = format!(
                        "{}@{}",
                        p.metadata.name.clone().unwrap_or_default(),
                        p.spec.and_then(|s| s.node_name).unwrap_or_default()
                    );
                    // The first deletion is the one that counts: kwok then finishes it at once.
                    graces
                        .lock()
                        .expect("lock")
                        .entry(key)
                        .or_insert(p.metadata.deletion_grace_period_seconds);
                }
            }
        })
    };

    // Cordoned: replica 0 leaves b for the least loaded node (a and c carry one replica each;
    // a by name), advertising a's address.
    nodes
        .patch(
            &b,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordon");
    let (to, advertise) = wait_moved(&statefulsets, &pods, "pool", 0, &b).await;
    assert_eq!((to.as_str(), advertise.as_str()), (a.as_str(), "198.51.100.1"));
    let note = wait_move_event(&client, &ns, "cordoned").await;
    assert!(
        note.contains(&format!("from node {b} to node {a}")) && note.contains("198.51.100.1:31700"),
        "{note}"
    );
    wait_for("the old pod's graceful deletion seen", Duration::from_secs(30), || {
        let g = graces.lock().expect("lock").get(&format!("pool-sfu-0-0@{b}")).copied();
        async move { g }
    })
    .await
    .map_or_else(
        || panic!("the old pod had no grace period"),
        |g| assert_eq!(g, 330, "drainTimeout + 30s"),
    );
    let after = pins(&statefulsets, "pool", 3).await;
    assert_eq!((&after[&1], &after[&2]), (&grown[&1], &grown[&2]), "the others stay");
    wait_ready(&bridges, "pool").await;

    // Deleted: replica 1 leaves c for a, the only eligible node left (b is cordoned).
    nodes.delete(&c, &DeleteParams::default()).await.expect("delete node");
    let (to, advertise) = wait_moved(&statefulsets, &pods, "pool", 1, &c).await;
    assert_eq!((to.as_str(), advertise.as_str()), (a.as_str(), "198.51.100.1"));
    wait_move_event(&client, &ns, "the node is gone").await;
    wait_ready(&bridges, "pool").await;

    // Does not fit: b is back, a has no room left; replica 0's pod, recreated, cannot be
    // scheduled on a. It waits out the grace period (on the operator's clock), then moves.
    nodes
        .patch(
            &b,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .expect("uncordon");
    nodes
        .patch_status(
            &a,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"allocatable": {"cpu": "100m"}}})),
        )
        .await
        .expect("shrink a");
    pods.delete("pool-sfu-0-0", &DeleteParams::default())
        .await
        .expect("delete the pod");
    wait_for("replica 0's pod unschedulable", Duration::from_secs(60), || async {
        let p = pods.get_opt("pool-sfu-0-0").await.ok()??;
        let v = serde_json::to_value(&p).ok()?;
        conclave::bridge::placement::unschedulable_since(&v)
    })
    .await;
    let seen = operator.log_count(&["reconciled", "pool"]);
    label_bridge(&bridges, "pool", "tick", "1").await;
    wait_for("a reconcile while the pod waits", Duration::from_secs(30), || {
        let n = operator.log_count(&["reconciled", "pool"]);
        async move { (n > seen).then_some(()) }
    })
    .await;
    assert_eq!(
        pins(&statefulsets, "pool", 1).await[&0].0,
        a,
        "within the grace period it waits"
    );
    operator.set_now(chrono::Utc::now() + chrono::Duration::minutes(3));
    label_bridge(&bridges, "pool", "tick", "2").await;
    let (to, advertise) = wait_moved(&statefulsets, &pods, "pool", 0, &a).await;
    assert_eq!((to.as_str(), advertise.as_str()), (b.as_str(), "198.51.100.2"));
    wait_move_event(&client, &ns, "waited too long").await;
    wait_ready(&bridges, "pool").await;

    recorder.abort();
    for n in [&a, &b] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}
