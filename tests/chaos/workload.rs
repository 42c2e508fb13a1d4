//! The churn workload of the chaos test: a model of the Bridges and Meetings the test wants,
//! the seeded choice of the next operation, and its application to the cluster. The model is
//! the truth the invariants are checked against; every choice comes from the seeded generator
//! and the model alone (never from what the cluster answered), so a seed replays the same
//! sequence of operations.

use std::collections::BTreeMap;
use std::time::Duration;

use conclave::api::{Bridge, Meeting};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Names a Bridge can take; a deleted Bridge's name is reused by a later one, so a new Bridge
/// meets the children of its namesake while the garbage collector removes them.
const BRIDGE_SLOTS: usize = 6;

#[derive(Clone, Debug)]
pub struct BridgeModel {
    pub slot: usize,
    /// Base media port (NodePort) of this incarnation.
    pub port: i32,
    pub replicas: i32,
    pub max_replicas: i32,
    pub per_replica: i32,
    pub turn: bool,
    pub edits: u32,
}

#[derive(Clone, Debug)]
pub struct MeetingModel {
    pub bridge: String,
    pub participants: Vec<String>,
    pub guests: bool,
    pub max_participants: Option<i32>,
    next_participant: u32,
}

/// What the test wants to exist.
pub struct Model {
    pub namespace: String,
    pub bridges: BTreeMap<String, BridgeModel>,
    pub meetings: BTreeMap<String, MeetingModel>,
    max_bridges: usize,
    next_meeting: u32,
    /// Media ports: each Bridge created gets the next block of three from here.
    port_base: i32,
    created: i32,
}

/// One step of churn.
#[derive(Clone, Debug)]
pub enum Op {
    CreateBridge(String),
    EditBridge(String, &'static str),
    /// A Bridge and its Meetings.
    DeleteBridge(String, Vec<String>),
    CreateMeeting(String),
    EditMeeting(String, &'static str),
    DeleteMeeting(String),
    /// A child deleted by hand: kind and name.
    DeleteChild(&'static str, String),
}

impl Op {
    /// The operation's kind, for the tally.
    pub fn kind(&self) -> String {
        match self {
            Op::EditBridge(_, what) => format!("edit Bridge {what}"),
            Op::EditMeeting(_, what) => format!("edit Meeting: {what}"),
            other => other.plain_kind().to_string(),
        }
    }

    fn plain_kind(&self) -> &'static str {
        match self {
            Op::CreateBridge(_) => "create Bridge",
            Op::EditBridge(..) => "edit Bridge",
            Op::DeleteBridge(..) => "delete Bridge",
            Op::CreateMeeting(_) => "create Meeting",
            Op::EditMeeting(..) => "edit Meeting",
            Op::DeleteMeeting(_) => "delete Meeting",
            Op::DeleteChild(..) => "delete a child by hand",
        }
    }
}

/// Children a test may delete by hand: every kind the operator restores. The generated
/// Secret, the CA and the serving certificate are left alone: deleting them loses their
/// values for good, and the test checks that those values never change.
const BRIDGE_CHILDREN: [(&str, &str); 13] = [
    ("Deployment", "prosody"),
    ("Deployment", "jicofo"),
    ("Deployment", "web"),
    ("Service", "prosody"),
    ("Service", "web"),
    ("ConfigMap", "rooms"),
    ("ConfigMap", "web-config"),
    ("StatefulSet", "sfu-0"),
    ("StatefulSet", "sfu-1"),
    ("Service", "sfu-0"),
    ("Deployment", "turn"),
    ("ConfigMap", "turn"),
    ("NetworkPolicy", "default-deny"),
];

impl Model {
    /// A model for `namespace`; NodePorts are cluster-wide, so tests running side by side give
    /// each model its own `port_base` (the models use up to 60 ports from there).
    pub fn new(namespace: &str, max_bridges: usize, port_base: i32) -> Model {
        Model {
            namespace: namespace.to_string(),
            bridges: BTreeMap::new(),
            meetings: BTreeMap::new(),
            max_bridges: max_bridges.min(BRIDGE_SLOTS),
            next_meeting: 0,
            port_base,
            created: 0,
        }
    }

    fn free_slot(&self) -> Option<usize> {
        (0..BRIDGE_SLOTS)
            .filter(|s| !self.bridges.values().any(|b| b.slot == *s))
            .nth(0)
    }

    fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
        &items[rng.random_range(0..items.len())]
    }

    /// Chooses the next operation from the model and the generator, and applies it to the
    /// model.
    pub fn next(&mut self, rng: &mut StdRng) -> Op {
        loop {
            let roll = rng.random_range(0..100);
            let bridges: Vec<String> = self.bridges.keys().cloned().collect();
            let meetings: Vec<String> = self.meetings.keys().cloned().collect();
            let op = match roll {
                0..10 if self.bridges.len() < self.max_bridges => self.free_slot().map(|s| self.create_bridge(s, rng)),
                10..13 if bridges.len() > 1 => Some(self.delete_bridge(Model::pick(rng, &bridges).clone())),
                13..28 if !bridges.is_empty() => Some(self.edit_bridge(Model::pick(rng, &bridges).clone(), rng)),
                28..48 if !bridges.is_empty() => Some(self.create_meeting(Model::pick(rng, &bridges).clone(), rng)),
                48..53 if !meetings.is_empty() => Some(self.delete_meeting(Model::pick(rng, &meetings).clone())),
                53..75 if !meetings.is_empty() => Some(self.edit_meeting(Model::pick(rng, &meetings).clone(), rng)),
                75..90 if !bridges.is_empty() => {
                    let b = Model::pick(rng, &bridges).clone();
                    let (kind, suffix) = *Model::pick(rng, &BRIDGE_CHILDREN);
                    Some(Op::DeleteChild(kind, format!("{b}-{suffix}")))
                }
                90..100 if !meetings.is_empty() => {
                    let m = Model::pick(rng, &meetings).clone();
                    Some(Op::DeleteChild("Secret", format!("{m}-credentials")))
                }
                _ => None,
            };
            if let Some(op) = op {
                return op;
            }
        }
    }

    /// An edit that takes something away from a Bridge (TURN switched off, or the SFU pool's
    /// bound lowered), so that pruning is exercised whatever the seed: pools mostly grow
    /// under this churn otherwise.
    pub fn shrink(&mut self, rng: &mut StdRng) -> Op {
        let bridges: Vec<String> = self.bridges.keys().cloned().collect();
        if bridges.is_empty() {
            return self.next(rng);
        }
        let name = Model::pick(rng, &bridges).clone();
        let Some(b) = self.bridges.get_mut(&name) else {
            return self.next(rng);
        };
        b.edits += 1;
        if b.turn {
            b.turn = false;
            Op::EditBridge(name, "turn.enabled off")
        } else if b.max_replicas > 1 {
            b.max_replicas -= 1;
            b.replicas = b.replicas.min(b.max_replicas);
            Op::EditBridge(name, "sfu.maxReplicas lowered")
        } else {
            b.turn = true;
            Op::EditBridge(name, "turn.enabled")
        }
    }

    pub fn create_bridge(&mut self, slot: usize, rng: &mut StdRng) -> Op {
        let name = format!("b{slot}");
        let replicas = rng.random_range(1..=2);
        // A fresh block of ports for every Bridge created, even under a reused name: a
        // kube-apiserver killed between deleting a Service and releasing its NodePort leaks the
        // port until its repair loop frees it, several minutes later, and a Bridge created in
        // that time on that port meets PortInUse (reported, rightly) for the control plane's
        // reasons.
        let port = self.port_base + 3 * (self.created % 20);
        self.created += 1;
        self.bridges.insert(
            name.clone(),
            BridgeModel {
                slot,
                port,
                replicas,
                max_replicas: replicas + rng.random_range(0..=1),
                per_replica: rng.random_range(2..=6),
                turn: rng.random_bool(0.5),
                edits: 0,
            },
        );
        Op::CreateBridge(name)
    }

    fn delete_bridge(&mut self, name: String) -> Op {
        self.bridges.remove(&name);
        // Its Meetings go with it (a Meeting outliving its Bridge would need links from a key
        // that no longer exists).
        let gone: Vec<String> = self
            .meetings
            .iter()
            .filter(|(_, m)| m.bridge == name)
            .map(|(n, _)| n.clone())
            .collect();
        self.meetings.retain(|_, m| m.bridge != name);
        Op::DeleteBridge(name, gone)
    }

    fn edit_bridge(&mut self, name: String, rng: &mut StdRng) -> Op {
        let Some(b) = self.bridges.get_mut(&name) else {
            return Op::EditBridge(name, "nothing");
        };
        b.edits += 1;
        let what = match rng.random_range(0..4) {
            0 => {
                b.replicas = if b.replicas == 1 { 2 } else { 1 };
                b.max_replicas = b.max_replicas.max(b.replicas);
                "sfu.replicas"
            }
            1 => {
                b.max_replicas = if b.max_replicas > b.replicas {
                    b.replicas
                } else {
                    b.replicas + 1
                };
                "sfu.maxReplicas"
            }
            2 => {
                b.per_replica = rng.random_range(2..=6);
                "sfu.participantsPerReplica"
            }
            _ => {
                b.turn = !b.turn;
                "turn.enabled"
            }
        };
        Op::EditBridge(name, what)
    }

    pub fn create_meeting(&mut self, bridge: String, rng: &mut StdRng) -> Op {
        let name = format!("m{}", self.next_meeting);
        self.next_meeting += 1;
        let n = rng.random_range(1..=4);
        self.meetings.insert(
            name.clone(),
            MeetingModel {
                bridge,
                participants: (0..n).map(|i| format!("p{i}")).collect(),
                guests: rng.random_bool(0.3),
                max_participants: None,
                next_participant: n,
            },
        );
        Op::CreateMeeting(name)
    }

    fn delete_meeting(&mut self, name: String) -> Op {
        self.meetings.remove(&name);
        Op::DeleteMeeting(name)
    }

    fn edit_meeting(&mut self, name: String, rng: &mut StdRng) -> Op {
        let Some(m) = self.meetings.get_mut(&name) else {
            return Op::EditMeeting(name, "nothing");
        };
        let what = match rng.random_range(0..4) {
            0 => {
                m.participants.push(format!("p{}", m.next_participant));
                m.next_participant += 1;
                // Admission refuses a limit below the participants named: the limit follows.
                let named = m.participants.len() as i32;
                if let Some(max) = m.max_participants.as_mut() {
                    *max = (*max).max(named);
                }
                "add a participant"
            }
            1 if m.participants.len() > 1 => {
                let i = rng.random_range(0..m.participants.len());
                m.participants.remove(i);
                "remove a participant"
            }
            2 => {
                m.guests = !m.guests;
                "guests.allowed"
            }
            _ => {
                m.max_participants = match m.max_participants {
                    Some(_) => None,
                    None => Some(rng.random_range(5..=12).max(m.participants.len() as i32)),
                };
                "maxParticipants"
            }
        };
        Op::EditMeeting(name, what)
    }

    /// The Bridge as the test applies it.
    pub fn bridge_json(&self, name: &str) -> Option<Value> {
        let b = self.bridges.get(name)?;
        Some(json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "domain": format!("{name}.example.com"),
                // Own CA: the CA and the serving certificate are generated, so the test can
                // check that they never change either.
                "sfu": {"replicas": b.replicas, "maxReplicas": b.max_replicas,
                        "participantsPerReplica": b.per_replica, "drainTimeout": "5s",
                        // In the band of the NodePort range Kubernetes never assigns at
                        // random (30000-30085 by default): above it, a NodePort assigned to
                        // some LoadBalancer Service (this Bridge's own TURN Service among
                        // them) can take a replica's port, which a chaos run met.
                        "media": {"port": b.port}},
                // TURN at a fixed address, so it is Ready without a load balancer (an IP: no
                // name joins the certificate when TURN is toggled).
                "turn": {"enabled": b.turn, "host": "198.51.100.20"},
            }
        }))
    }

    /// The Meeting as the test applies it.
    pub fn meeting_json(&self, name: &str) -> Option<Value> {
        let m = self.meetings.get(name)?;
        let participants: Vec<Value> = m.participants.iter().map(|p| json!({"name": p})).collect();
        Some(json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"bridge": m.bridge, "participants": participants,
                     "guests": {"allowed": m.guests}, "maxParticipants": m.max_participants}
        }))
    }

    /// Every Bridge and Meeting as one multi-document YAML (JSON is YAML), for `conclave render`.
    pub fn documents(&self) -> String {
        let bridges = self.bridges.keys().filter_map(|b| self.bridge_json(b));
        let meetings = self.meetings.keys().filter_map(|m| self.meeting_json(m));
        bridges
            .chain(meetings)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

/// Applies `op` (already applied to `model`) to the cluster, retrying what the API server
/// refuses while it is briefly away.
pub async fn apply(client: &kube::Client, model: &Model, op: &Op) {
    let ns = &model.namespace;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), ns);
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    let json = |v: Option<Value>| v.expect("the model holds it");
    match op {
        Op::CreateBridge(name) => {
            let b: Bridge = serde_json::from_value(json(model.bridge_json(name))).expect("bridge");
            retry(op, || async { ok_unless(bridges.create(&pp, &b).await, 409) }).await;
        }
        Op::EditBridge(name, _) => {
            let spec = json(model.bridge_json(name))["spec"].clone();
            let patch = Patch::Merge(json!({"spec": spec}));
            retry(op, || async {
                bridges.patch(name, &PatchParams::default(), &patch).await.map(drop)
            })
            .await;
        }
        Op::DeleteBridge(name, gone) => {
            for m in gone {
                retry(op, || async {
                    ok_unless(meetings.delete(m, &DeleteParams::default()).await, 404)
                })
                .await;
            }
            retry(op, || async {
                ok_unless(bridges.delete(name, &DeleteParams::default()).await, 404)
            })
            .await;
        }
        Op::CreateMeeting(name) => {
            let m: Meeting = serde_json::from_value(json(model.meeting_json(name))).expect("meeting");
            retry(op, || async { ok_unless(meetings.create(&pp, &m).await, 409) }).await;
        }
        Op::EditMeeting(name, _) => {
            let spec = json(model.meeting_json(name))["spec"].clone();
            let patch = Patch::Merge(json!({"spec": spec}));
            retry(op, || async {
                meetings.patch(name, &PatchParams::default(), &patch).await.map(drop)
            })
            .await;
        }
        Op::DeleteMeeting(name) => {
            retry(op, || async {
                ok_unless(meetings.delete(name, &DeleteParams::default()).await, 404)
            })
            .await;
        }
        Op::DeleteChild(kind, name) => {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &super::invariants::resource(kind));
            retry(op, || async {
                ok_unless(api.delete(name, &DeleteParams::default()).await, 404)
            })
            .await;
        }
    }
}

/// `Ok` for success and for the one status code that means "already so".
fn ok_unless<T>(result: Result<T, kube::Error>, already: u16) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == already => Ok(()),
        Err(e) => Err(e),
    }
}

/// Retries `f` until it succeeds, at most two minutes (an API server restart lasts up to 15 s
/// plus its start).
async fn retry<F, Fut>(op: &Op, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("chaos: {op:?} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("chaos: {op:?} kept failing: {e}"),
        }
    }
}
