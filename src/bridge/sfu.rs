//! The SFU pool, whatever the engine. Every replica is its own StatefulSet of one pod with its
//! own UDP port and (for NodePort and LoadBalancer) its own Service: ICE state lives in one SFU
//! process, so a Service balancing several of them would hand packets to the wrong one. The
//! engine supplies the pod (container, volumes, security); this module supplies what makes it a
//! replica of the pool: its name, selector, node pinning, drain grace period and exposure.
//!
//! With `HostPort` exposure the pod binds its port on the node, which neither the restricted nor
//! the baseline Pod Security profile allows; everything else about the pod (non-root, no
//! capabilities, read-only root, seccomp) stays restricted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSecurityContext,
    Service, ServicePort, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::context::{Ctx, SfuReplica};
use super::objects::{external_service, invalid, pod_spec, template};
use crate::child::Child;
use crate::duration::parse_duration;
use crate::labels::{Component, SFU_INDEX};

/// Added to the drain timeout for the SFU's own shutdown after its last participant left, so
/// Kubernetes waits for the drain instead of killing conferences.
pub const SHUTDOWN_MARGIN_SECONDS: i64 = 30;

/// The pod an engine runs for one replica.
pub struct ReplicaPod {
    pub container: Container,
    pub volumes: Vec<Volume>,
    pub security: PodSecurityContext,
    /// Pod annotations (e.g. the hash of a mounted configuration).
    pub annotations: BTreeMap<String, String>,
}

/// A StatefulSet, and a Service unless exposure is `HostPort`, per replica. `pod` gives the
/// engine's pod for a replica; `ports` the replica's externally exposed ports.
pub fn build(
    ctx: &Ctx,
    pod: impl Fn(&SfuReplica) -> Result<ReplicaPod, serde_json::Error>,
    ports: impl Fn(&SfuReplica) -> Vec<ServicePort>,
) -> Result<Vec<Child>, serde_json::Error> {
    let grace = grace_seconds(ctx)?;
    let mut out = Vec::new();
    for r in &ctx.sfu {
        let svc = service(ctx, r, ports(r));
        out.push(Child::new(&stateful_set(ctx, r, grace, svc.is_some(), pod(r)?))?);
        if let Some(s) = svc {
            out.push(Child::new(&s)?);
        }
    }
    Ok(out)
}

/// `terminationGracePeriodSeconds`: the drain timeout plus a margin.
pub fn grace_seconds(ctx: &Ctx) -> Result<i64, serde_json::Error> {
    let d = &ctx.spec.sfu.drain_timeout;
    let drain = parse_duration(d).ok_or_else(|| invalid(format!("spec.sfu.drainTimeout {d:?} is not a duration")))?;
    Ok(i64::try_from(drain.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(SHUTDOWN_MARGIN_SECONDS))
}

/// Name suffix of replica `r`'s StatefulSet and Service.
pub fn suffix(r: &SfuReplica) -> String {
    format!("sfu-{}", r.index)
}

/// The labels that select exactly one replica's pod.
pub fn replica_selector(ctx: &Ctx, r: &SfuReplica) -> BTreeMap<String, String> {
    let mut s = ctx.selector(Component::Sfu);
    s.insert(SFU_INDEX.into(), r.index.to_string());
    s
}

/// Pinned replicas require their node; others take the pool's placement settings.
fn affinity(ctx: &Ctx, r: &SfuReplica) -> Option<Affinity> {
    match &r.node {
        Some(node) => Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.clone()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        }),
        None => ctx.spec.sfu.affinity.clone(),
    }
}

fn stateful_set(ctx: &Ctx, r: &SfuReplica, grace: i64, has_service: bool, replica: ReplicaPod) -> StatefulSet {
    let mut pod = pod_spec(vec![replica.container], replica.volumes, replica.security);
    pod.termination_grace_period_seconds = Some(grace);
    pod.affinity = affinity(ctx, r);
    pod.node_selector = (!ctx.spec.sfu.node_selector.is_empty()).then(|| ctx.spec.sfu.node_selector.clone());
    pod.tolerations = (!ctx.spec.sfu.tolerations.is_empty()).then(|| ctx.spec.sfu.tolerations.clone());
    let name = suffix(r);
    StatefulSet {
        metadata: ctx.meta(&name, Component::Sfu),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: has_service.then(|| ctx.child_name(&name)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(replica_selector(ctx, r)),
                ..LabelSelector::default()
            },
            template: template(
                ctx,
                Component::Sfu,
                &[(SFU_INDEX, r.index.to_string())],
                replica.annotations,
                pod,
            ),
            revision_history_limit: Some(3),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The replica's own Service: `NodePort` on exactly its ports, or a `LoadBalancer`. Local
/// traffic policy keeps the client's source address (ICE checks it) and skips a second hop.
fn service(ctx: &Ctx, r: &SfuReplica, mut ports: Vec<ServicePort>) -> Option<Service> {
    let exposure = ctx.spec.sfu.media.exposure;
    for p in &mut ports {
        p.node_port = (exposure == crate::api::Exposure::NodePort).then_some(p.port);
    }
    external_service(
        ctx.meta(&suffix(r), Component::Sfu),
        exposure,
        replica_selector(ctx, r),
        ports,
    )
}
