//! The chaos test: a seeded churn of Bridges and Meetings (created, edited, deleted; children
//! deleted by hand) while the operator is SIGKILLed at random moments, and kube-apiserver and
//! etcd are killed and restarted (down 5–15 s) under a running operator. Then the invariants
//! (see `chaos/invariants.rs`): no orphaned, duplicated or missing child, no generated value
//! ever changed, every Meeting's links verify and name exactly its participants, everything
//! converged within 60 s of the last fault.
//!
//! `CONCLAVE_CHAOS_SEED=<n>` replays a run (the seed is printed first): the same operations,
//! kill moments and outages in the same order (what the operator was doing at each moment
//! depends on timing and can differ). `CONCLAVE_CHAOS_SIZE=full` runs the large size.
//!
//! After each restart of kube-apiserver or etcd a Meeting created on a Ready Bridge gets its
//! links within 30 s, and `/healthz` answers 200 throughout (a short outage must not make a
//! liveness probe kill a working operator).

mod common;
#[path = "chaos/invariants.rs"]
mod invariants;
#[path = "chaos/outage.rs"]
mod outage;
#[path = "chaos/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster;
use common::operator::Operator;
use invariants::converge;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use outage::{Late, Outage, restart};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use workload::{Model, Op};

/// How much chaos.
#[derive(Debug)]
struct Size {
    name: &'static str,
    /// Bridges at the start, and at most.
    bridges: usize,
    max_bridges: usize,
    /// Meetings at the start.
    meetings: usize,
    steps: usize,
    kills: usize,
    api_restarts: usize,
    etcd_restarts: usize,
}

const CI: Size = Size {
    name: "ci",
    bridges: 2,
    max_bridges: 3,
    meetings: 3,
    steps: 40,
    kills: 15,
    api_restarts: 1,
    etcd_restarts: 1,
};

const FULL: Size = Size {
    name: "full",
    bridges: 3,
    max_bridges: 5,
    meetings: 6,
    steps: 160,
    kills: 60,
    api_restarts: 3,
    etcd_restarts: 2,
};

/// Every this many steps the operation takes something away from a Bridge (see
/// `Model::shrink`).
const SHRINK_EVERY: usize = 8;

/// The invariants are checked after every this many kills too, not only at the end.
const CHECKPOINT_EVERY: usize = 5;

/// Every fault is followed by convergence within this.
const CONVERGE: Duration = Duration::from_secs(60);
/// A Meeting created after an API server restart has its links within this.
const LINKS_AFTER_OUTAGE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Kill,
    Restart(&'static str),
}

/// Which step ends with which fault: the kills spread over all steps, the last step always a
/// kill (so the operator that must converge is a fresh one after every kind of fault); the
/// control-plane restarts in the first three quarters, never on a kill's step.
fn schedule(size: &Size, rng: &mut StdRng) -> BTreeMap<usize, Fault> {
    let mut at = BTreeMap::from([(size.steps - 1, Fault::Kill)]);
    let restarts =
        std::iter::repeat_n("kube-apiserver", size.api_restarts).chain(std::iter::repeat_n("etcd", size.etcd_restarts));
    for component in restarts {
        loop {
            let step = rng.random_range(size.steps / 8..size.steps * 3 / 4);
            if let std::collections::btree_map::Entry::Vacant(e) = at.entry(step) {
                e.insert(Fault::Restart(component));
                break;
            }
        }
    }
    while at.values().filter(|f| **f == Fault::Kill).count() < size.kills {
        let step = rng.random_range(0..size.steps);
        at.entry(step).or_insert(Fault::Kill);
    }
    at
}

/// The tests of this binary stop parts of the control plane: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let _serial = SERIAL.lock().await;
    let size = match std::env::var("CONCLAVE_CHAOS_SIZE").as_deref() {
        Ok("full") => FULL,
        Ok("ci") | Err(_) => CI,
        Ok(other) => panic!("CONCLAVE_CHAOS_SIZE={other}: use ci or full"),
    };
    let seed: u64 = match std::env::var("CONCLAVE_CHAOS_SEED") {
        Ok(s) => s.parse().expect("CONCLAVE_CHAOS_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("chaos: seed {seed} (CONCLAVE_CHAOS_SEED={seed} replays it), size {size:?}");
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = schedule(&size, &mut rng);

    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "chaos").await;
    let kubeconfig = cp.kubeconfig_as("conclave-chaos", &["system:masters"]);
    let start = |n: usize| {
        Operator::launch(
            &format!("chaos-operator-{n}"),
            Some(&kubeconfig),
            &["--watch-namespace", &ns],
            &[],
            None,
        )
    };
    let mut generation = 0;
    let mut operator = start(generation);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let recorder = invariants::Recorder::default();
    let watching = recorder.watch(secrets.clone());

    // The starting population, converged before the chaos begins.
    let mut model = Model::new(&ns, size.max_bridges, 30000);
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for slot in 0..size.bridges {
        let op = model.create_bridge(slot, &mut rng);
        workload::apply(&client, &model, &op).await;
    }
    let names: Vec<String> = model.bridges.keys().cloned().collect();
    for i in 0..size.meetings {
        let op = model.create_meeting(names[i % names.len()].clone(), &mut rng);
        workload::apply(&client, &model, &op).await;
    }
    let settled = converge(&client, &model, Instant::now(), Duration::from_secs(180)).await;
    eprintln!("chaos: starting population converged in {settled:.1?}");
    recorder.sample(&secrets).await;

    let mut kills = 0;
    let mut outages = Vec::new();
    let mut last_fault = Instant::now();
    let mut checkpoints = Vec::new();
    for step in 0..size.steps {
        let op = if step % SHRINK_EVERY == SHRINK_EVERY - 1 {
            model.shrink(&mut rng)
        } else {
            model.next(&mut rng)
        };
        *ops.entry(op.kind()).or_default() += 1;
        eprintln!("chaos: step {step}: {op:?}");
        workload::apply(&client, &model, &op).await;
        recorder.sample(&secrets).await;
        // The fault comes while the operator works on the operation (or is still starting).
        let pause = Duration::from_millis(rng.random_range(0..1500));
        tokio::time::sleep(pause).await;
        match faults.get(&step) {
            Some(Fault::Kill) => {
                operator.kill();
                outages
                    .iter_mut()
                    .filter_map(|o: &mut Outage| o.late.as_mut())
                    .for_each(Late::cut);
                kills += 1;
                generation += 1;
                eprintln!("chaos: step {step}: SIGKILL after {pause:?} (kill {kills})");
                operator = start(generation);
                last_fault = Instant::now();
                // Every few kills, a checkpoint: everything holds within a minute of this kill
                // (the operator just started, with fresh watches whatever came before).
                if kills % CHECKPOINT_EVERY == 0 && step + 1 < size.steps {
                    let took = converge(&client, &model, last_fault, CONVERGE).await;
                    eprintln!("chaos: step {step}: checkpoint, converged {took:.1?} after the kill");
                    checkpoints.push(took);
                }
            }
            Some(Fault::Restart(component)) => {
                let down = Duration::from_millis(rng.random_range(5000..=15000));
                let probe_bridge = invariants::ready_bridge(&client, &model, CONVERGE).await;
                let probe = model.create_meeting(probe_bridge, &mut rng);
                eprintln!("chaos: step {step}: {component} down for {down:?}, then {probe:?}");
                let outage = restart(cp, &client, &operator, &model, component, down, &probe).await;
                eprintln!(
                    "chaos: {component} ready {:.1?} after its start; /healthz {:?}; links of the new Meeting after {}",
                    outage.back_after,
                    outage.healthz,
                    outage
                        .links_after
                        .map_or_else(|| format!("not within {LINKS_AFTER_OUTAGE:?}"), |d| format!("{d:.1?}"))
                );
                outages.push(outage);
                last_fault = Instant::now();
            }
            None => {}
        }
    }

    // Everything converges within a minute of the last fault.
    let converged = converge(&client, &model, last_fault, CONVERGE).await;
    recorder.sample(&secrets).await;
    watching.abort();
    let (checked, leaks) = invariants::check_allowing_leaks(&client, &model)
        .await
        .expect("still converged");
    let changed = recorder.changed();

    eprintln!("chaos: seed {seed}, size {}", size.name);
    eprintln!("chaos: operations {ops:?}");
    eprintln!(
        "chaos: {kills} SIGKILLs of the operator, {} control-plane restarts",
        outages.len()
    );
    for o in &outages {
        eprintln!(
            "chaos:   {} down {:.1?}, API ready {:.1?} after its start, /healthz {:?}, links of a new Meeting after {}",
            o.component,
            o.down,
            o.back_after,
            o.healthz,
            o.links()
        );
    }
    eprintln!(
        "chaos: {} checkpoints, converged within {:.1?} of the kill before each",
        checkpoints.len(),
        checkpoints.iter().max().copied().unwrap_or_default()
    );
    eprintln!(
        "chaos: converged {converged:.1?} after the last fault; {} children, {} SFU StatefulSets, {} links verified; {} generated values tracked, {} changed",
        checked.children,
        checked.sfu_statefulsets,
        checked.links,
        recorder.tracked(),
        changed.len()
    );
    for l in &leaks {
        eprintln!(
            "chaos: at the end, Bridge {} still waits for NodePort {} (Service {}), which Kubernetes leaked; it reports PortInUse",
            l.bridge, l.port, l.service
        );
    }
    assert!(changed.is_empty(), "generated values changed: {changed:#?}");
    for o in &outages {
        // A short outage must not make a liveness probe kill a working operator.
        assert_eq!(
            o.healthz.keys().copied().collect::<Vec<_>>(),
            vec![200],
            "/healthz during and after a {:?} outage of {}: {:?}",
            o.down,
            o.component,
            o.healthz
        );
        assert!(
            o.links_after.is_some(),
            "a Meeting created after {} came back had no links within {LINKS_AFTER_OUTAGE:?}",
            o.component
        );
    }
    assert!(kills >= size.kills, "{kills} kills");
}

/// A Bridge deleted and created again under the same name while the garbage collector is
/// stalled (it lagged for minutes after API server restarts in a chaos run): the new Bridge
/// replaces what its predecessor left under its children's names instead of waiting, never
/// uses the predecessor's keys, and what the new one does not want is pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namesake_while_the_garbage_collector_is_stalled() {
    let _serial = SERIAL.lock().await;
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "namesake").await;
    let _operator = Operator::start("conclave-namesake-test", &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model::new(&ns, 1, 30070);
    let op = model.create_bridge(0, &mut rng);
    let Op::CreateBridge(bridge) = op.clone() else {
        unreachable!()
    };
    shape(&mut model, &bridge, 2, true);
    workload::apply(&client, &model, &op).await;
    let first = model.create_meeting(bridge.clone(), &mut rng);
    workload::apply(&client, &model, &first).await;
    converge(&client, &model, Instant::now(), Duration::from_secs(120)).await;
    let key = |s: Secret| s.data.expect("data")["jwt-app-secret"].0.clone();
    let old_key = key(secrets
        .get(&format!("{bridge}-secrets"))
        .await
        .expect("generated Secret"));

    let stop = tokio::task::spawn_blocking(move || cp.stop_component("kube-controller-manager", Duration::ZERO));
    stop.await.expect("thread").expect("stop the controller manager");
    // The same Bridge again, with one SFU replica fewer and no TURN, and a new Meeting.
    let bridges: Api<conclave::api::Bridge> = Api::namespaced(client.clone(), &ns);
    let meetings: Api<conclave::api::Meeting> = Api::namespaced(client.clone(), &ns);
    for m in model.meetings.keys() {
        meetings
            .delete(m, &Default::default())
            .await
            .expect("delete the Meeting");
    }
    bridges
        .delete(&bridge, &Default::default())
        .await
        .expect("delete the Bridge");
    let mut model = Model::new(&ns, 1, 30070);
    let op = model.create_bridge(0, &mut rng);
    shape(&mut model, &bridge, 1, false);
    workload::apply(&client, &model, &op).await;
    let second = model.create_meeting(bridge.clone(), &mut rng);
    workload::apply(&client, &model, &second).await;
    let Op::CreateMeeting(second) = second else {
        unreachable!()
    };

    // With the collector still stopped: the new Bridge gets keys of its own, never the
    // predecessor's, and does not show the predecessor's status (its workloads cannot run
    // without the controller manager, so it is not Ready; a status written by name for the old
    // Bridge once made it look Ready).
    let b = bridges.get(&bridge).await.expect("the new Bridge");
    let generated = testenv::wait_for(
        "the new Bridge's own generated Secret",
        Duration::from_secs(90),
        || async {
            let s = secrets.get_opt(&format!("{bridge}-secrets")).await.ok()??;
            let owner = s.metadata.owner_references.clone().unwrap_or_default();
            (owner.first().map(|o| &o.uid) == b.metadata.uid.as_ref()).then_some(s)
        },
    )
    .await;
    assert_ne!(key(generated.clone()), old_key, "the predecessor's key is never reused");
    let b = bridges.get(&bridge).await.expect("the new Bridge");
    assert!(
        common::condition(&b, "Ready").is_none_or(|(s, _)| s != "True"),
        "the new Bridge is not Ready while its workloads cannot start: {:?}",
        b.status
    );

    // Once the collector runs again, the rest of the predecessor's goes too, the new Bridge
    // becomes Ready and the new Meeting's links verify with its key.
    tokio::task::spawn_blocking(move || cp.start_component("kube-controller-manager", Duration::from_secs(120)))
        .await
        .expect("thread")
        .expect("start the controller manager");
    testenv::wait_for("the new Meeting's links", Duration::from_secs(90), || async {
        invariants::has_links(&client, &model, &second).await.then_some(())
    })
    .await;
    let generated_now = secrets
        .get(&format!("{bridge}-secrets"))
        .await
        .expect("generated Secret");
    assert_eq!(key(generated_now), key(generated), "the new key stays");
    converge(&client, &model, Instant::now(), Duration::from_secs(120)).await;
}

fn shape(model: &mut Model, bridge: &str, replicas: i32, turn: bool) {
    let b = model.bridges.get_mut(bridge).expect("in the model");
    (b.replicas, b.max_replicas, b.turn) = (replicas, replicas, turn);
}
