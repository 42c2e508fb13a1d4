//! Failures become status, for real: an object someone else made under a child's name, an
//! admission policy and a ResourceQuota that refuse children, and RBAC narrowed under a running
//! operator. Each is reported on the Bridge or Meeting (a condition whose reason is the kind of
//! failure, `Ready=False`, a Warning Event), the rest of the Bridge is still applied, nothing
//! foreign is taken over, and everything heals once the cause is gone.

mod common;

use std::time::Duration;

use common::operator::Operator;
use common::{
    cluster, condition, condition_message, create_tls_secret, kubectl, label_bridge, meeting_condition, repo,
    wait_condition, wait_event, wait_meeting, wait_ready,
};
use conclave::api::{Bridge, Meeting};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// A Bridge with TURN (at an address of its own, so no load balancer is needed to be Ready), its
/// own TLS Secret `byo-tls`, and its SFU on NodePort `port`.
fn bridge(name: &str, port: i32) -> Bridge {
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": name},
        "spec": {"domain": format!("{name}.example.com"), "tls": {"secretName": "byo-tls"},
                 "turn": {"host": "198.51.100.31"}, "sfu": {"media": {"port": port}}}
    }))
    .expect("bridge")
}

fn meeting(name: &str, bridge: &str) -> Meeting {
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": name},
        "spec": {"bridge": bridge, "participants": [{"name": "alice", "moderator": true}]}
    }))
    .expect("meeting")
}

fn no_conclave_fields(meta: &kube::api::ObjectMeta) -> bool {
    meta.owner_references.as_deref().unwrap_or_default().is_empty()
        && !meta
            .labels
            .clone()
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by")
        && !meta
            .managed_fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("conclave"))
}

#[tokio::test]
async fn foreign_objects_are_reported_and_never_taken_over() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "foreign").await;
    let _operator = Operator::start("conclave-foreign-test", &ns);
    create_tls_secret(&client, &ns, "byo-tls", "held.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    // Someone's ConfigMap holds the name of the Bridge's coturn configuration.
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held-turn"}, "data": {"owner": "someone else"}
    }))
    .expect("configmap");
    configmaps
        .create(&PostParams::default(), &theirs)
        .await
        .expect("their ConfigMap");
    bridges
        .create(&PostParams::default(), &bridge("held", 31600))
        .await
        .expect("bridge");

    let b = wait_condition(&bridges, "held", "ChildrenApplied", "False", "ChildConflict").await;
    let (_, _, message) = condition_message(&b, "ChildrenApplied").expect("condition");
    assert!(
        message.contains("ConfigMap/held-turn already exists and is not Conclave's (it has no controller)"),
        "{message}"
    );
    assert_eq!(condition(&b, "Ready").map(|c| c.0).as_deref(), Some("False"));
    wait_event(&client, &ns, "held", "Warning", "ChildConflict").await;
    // The rest of the Bridge is applied; the foreign object is exactly as its owner left it.
    assert!(deployments.get_opt("held-prosody").await.expect("get").is_some());
    let cm = configmaps.get("held-turn").await.expect("their ConfigMap");
    assert_eq!(cm.data, theirs.data, "its data is untouched");
    assert!(no_conclave_fields(&cm.metadata), "not taken over: {:?}", cm.metadata);

    // Once it is gone the operator makes its own (it retries refusals every minute; the label
    // makes it look now).
    configmaps
        .delete("held-turn", &DeleteParams::default())
        .await
        .expect("delete theirs");
    label_bridge(&bridges, "held", "retry", "1").await;
    let b = wait_ready(&bridges, "held").await;
    assert_eq!(condition(&b, "ChildrenApplied"), None, "cleared");
    assert_eq!(condition(&b, "Reconciled"), Some(("True".into(), "Succeeded".into())));

    // A Meeting whose credentials Secret name is taken: reported, the Secret left alone.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let taken: Secret = serde_json::from_value(json!({
        "metadata": {"name": "standup-credentials"}, "stringData": {"alice": "https://elsewhere.example/"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &taken)
        .await
        .expect("their Secret");
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    meetings
        .create(&PostParams::default(), &meeting("standup", "held"))
        .await
        .expect("meeting");
    let m = wait_meeting(&meetings, "standup", "Reconciled=False (ChildConflict)", |m| {
        meeting_condition(m, "Reconciled").is_some_and(|c| c.0 == "False" && c.1 == "ChildConflict")
    })
    .await;
    let ready = meeting_condition(&m, "Ready").expect("Ready");
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "ChildConflict"));
    assert!(
        ready
            .2
            .contains("Secret/standup-credentials already exists and is not Conclave's"),
        "{}",
        ready.2
    );
    wait_event(&client, &ns, "standup", "Warning", "ChildConflict").await;
    let s = secrets.get("standup-credentials").await.expect("their Secret");
    assert_eq!(
        s.data.as_ref().and_then(|d| d.get("alice")).map(|v| v.0.clone()),
        Some(b"https://elsewhere.example/".to_vec()),
        "their link is untouched"
    );
    assert!(no_conclave_fields(&s.metadata), "not taken over: {:?}", s.metadata);

    secrets
        .delete("standup-credentials", &DeleteParams::default())
        .await
        .expect("delete theirs");
    let m = wait_meeting(&meetings, "standup", "links issued", |m| {
        meeting_condition(m, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(
        meeting_condition(&m, "Reconciled").map(|c| (c.0, c.1)),
        Some(("True".into(), "Succeeded".into()))
    );
    let s = secrets.get("standup-credentials").await.expect("ours");
    assert_eq!(
        s.metadata.owner_references.unwrap_or_default()[0].uid,
        m.metadata.uid.expect("uid")
    );
}

#[tokio::test]
async fn admission_policy_and_quota_refusals_are_reported() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "policed").await;

    // An admission policy refusing the Bridge's web Service in this namespace.
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": format!("no-web-{ns}")},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                   "operations": ["CREATE", "UPDATE"], "resources": ["services"]}]
            },
            "validations": [{"expression": "object.metadata.name != 'policed-web'",
                             "message": "no web Service in this namespace"}]
        }
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("no-web-{ns}")},
        "spec": {"policyName": format!("no-web-{ns}"), "validationActions": ["Deny"]}
    }))
    .expect("binding");
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    policies.create(&PostParams::default(), &policy).await.expect("policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let probe: Service = serde_json::from_value(json!({
        "metadata": {"name": "policed-web"}, "spec": {"ports": [{"port": 80}]}
    }))
    .expect("service");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(
        "the admission policy to be in force",
        Duration::from_secs(60),
        || async { services.create(&dry, &probe).await.is_err().then_some(()) },
    )
    .await;
    // A quota of three Deployments: the fourth (TURN) is refused.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "deployments"}, "spec": {"hard": {"count/deployments.apps": "3"}}
    }))
    .expect("quota");
    quotas.create(&PostParams::default(), &quota).await.expect("quota");
    wait_for("the quota to be counted", Duration::from_secs(60), || async {
        quotas.get("deployments").await.ok()?.status?.hard.map(|_| ())
    })
    .await;

    let _operator = Operator::start("conclave-policed-test", &ns);
    create_tls_secret(&client, &ns, "byo-tls", "policed.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(&PostParams::default(), &bridge("policed", 31610))
        .await
        .expect("bridge");

    let b = wait_condition(&bridges, "policed", "ChildrenApplied", "False", "ChildRefused").await;
    let (_, _, message) = condition_message(&b, "ChildrenApplied").expect("condition");
    assert!(
        message.contains("Service/policed-web") && message.contains("no web Service in this namespace"),
        "{message}"
    );
    assert!(
        message.contains("Deployment/policed-turn") && message.contains("exceeded quota"),
        "{message}"
    );
    assert_eq!(condition(&b, "Ready").map(|c| c.0).as_deref(), Some("False"));
    wait_event(&client, &ns, "policed", "Warning", "ChildRefused").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        deployments.get_opt("policed-web").await.expect("get").is_some(),
        "what is allowed is applied"
    );

    // Without the policy only the quota is left, and the reason says so.
    bindings
        .delete(&format!("no-web-{ns}"), &DeleteParams::default())
        .await
        .expect("delete binding");
    wait_for("the admission policy to be lifted", Duration::from_secs(60), || async {
        services.create(&dry, &probe).await.is_ok().then_some(())
    })
    .await;
    label_bridge(&bridges, "policed", "retry", "1").await;
    let b = wait_condition(&bridges, "policed", "ChildrenApplied", "False", "QuotaExceeded").await;
    let (_, _, message) = condition_message(&b, "ChildrenApplied").expect("condition");
    assert!(!message.contains("policed-web"), "{message}");
    wait_event(&client, &ns, "policed", "Warning", "QuotaExceeded").await;
    assert!(services.get_opt("policed-web").await.expect("get").is_some());

    quotas
        .delete("deployments", &DeleteParams::default())
        .await
        .expect("delete quota");
    label_bridge(&bridges, "policed", "retry", "2").await;
    let b = wait_ready(&bridges, "policed").await;
    assert_eq!(condition(&b, "ChildrenApplied"), None);
    policies
        .delete(&format!("no-web-{ns}"), &DeleteParams::default())
        .await
        .expect("delete policy");
}

/// The operator's ClusterRole as `deploy/` ships it.
fn deployed_rules() -> Vec<PolicyRule> {
    let text = std::fs::read_to_string(repo().join("deploy/operator/rbac.yaml")).expect("rbac.yaml");
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains("\nkind: ClusterRole\n"))
        .expect("a ClusterRole");
    let role: ClusterRole = serde_saphyr::from_str(doc).expect("ClusterRole");
    role.rules.expect("rules")
}

/// The deployed rules without `verbs` on `resource`.
fn without(resource: &str, verbs: &[&str]) -> Vec<PolicyRule> {
    deployed_rules()
        .into_iter()
        .flat_map(|mut r| {
            if r.resources.as_deref().unwrap_or_default().iter().any(|x| x == resource) {
                let others: Vec<String> = r
                    .resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| x != resource)
                    .collect();
                let narrowed = PolicyRule {
                    resources: Some(vec![resource.to_string()]),
                    verbs: r
                        .verbs
                        .iter()
                        .filter(|v| !verbs.contains(&v.as_str()))
                        .cloned()
                        .collect(),
                    ..r.clone()
                };
                r.resources = Some(others);
                vec![r, narrowed]
            } else {
                vec![r]
            }
        })
        .filter(|r| !r.resources.as_deref().unwrap_or_default().is_empty() && !r.verbs.is_empty())
        .collect()
}

struct Rbac {
    roles: Api<ClusterRole>,
    name: String,
    user: String,
    ns: String,
}

impl Rbac {
    async fn set(&self, rules: Vec<PolicyRule>) {
        let patch = json!({"rules": rules});
        self.roles
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("set rules");
    }

    /// Waits until the authorizer gives `user` (`allowed`) `verb` on `resource`.
    async fn wait_can(&self, verb: &str, resource: &str, allowed: bool) {
        let cp = cluster();
        wait_for(
            &format!(
                "{} to {}be allowed to {verb} {resource}",
                self.user,
                if allowed { "" } else { "no longer " }
            ),
            Duration::from_secs(30),
            || {
                let out = kubectl(
                    cp,
                    &["auth", "can-i", verb, resource, "-n", &self.ns, "--as", &self.user],
                );
                let yes = String::from_utf8_lossy(&out.stdout).trim() == "yes";
                async move { (yes == allowed).then_some(()) }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn narrowed_rbac_is_reported_and_heals() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "narrow").await;
    // The operator runs as a user of its own, with exactly the deployed ClusterRole.
    let user = format!("conclave-narrow-{ns}");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": user}, "rules": deployed_rules()
    }))
    .expect("role");
    roles.create(&PostParams::default(), &role).await.expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let rbac = Rbac {
        roles,
        name: user.clone(),
        user: user.clone(),
        ns: ns.clone(),
    };
    rbac.wait_can("patch", "networkpolicies", true).await;
    let kubeconfig = cp.kubeconfig_as(&user, &[]);
    let _operator = Operator::launch(&user, Some(&kubeconfig), &["--watch-namespace", &ns], &[], None);

    create_tls_secret(&client, &ns, "byo-tls", "narrow.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(&PostParams::default(), &bridge("narrow", 31620))
        .await
        .expect("bridge");
    wait_ready(&bridges, "narrow").await;

    // 1. No more writes on NetworkPolicies: one deleted by hand cannot come back. The rest of
    //    the Bridge reconciles; the refusal is a condition.
    rbac.set(without("networkpolicies", &["create", "patch", "update"]))
        .await;
    rbac.wait_can("patch", "networkpolicies", false).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .delete("narrow-allow-web", &DeleteParams::default())
        .await
        .expect("delete a policy");
    let b = wait_condition(&bridges, "narrow", "ChildrenApplied", "False", "Forbidden").await;
    let (_, _, message) = condition_message(&b, "ChildrenApplied").expect("condition");
    assert!(message.contains("NetworkPolicy/narrow-allow-web"), "{message}");
    assert_eq!(condition(&b, "Ready").map(|c| c.0).as_deref(), Some("False"));
    wait_event(&client, &ns, "narrow", "Warning", "Forbidden").await;

    rbac.set(deployed_rules()).await;
    rbac.wait_can("patch", "networkpolicies", true).await;
    label_bridge(&bridges, "narrow", "retry", "1").await;
    wait_ready(&bridges, "narrow").await;
    assert!(
        policies.get_opt("narrow-allow-web").await.expect("get").is_some(),
        "restored"
    );

    // 2. No more updates on Secrets: a requested rotation fails the whole reconcile, which
    //    shows as Reconciled=False and Ready=False with the reason, until the right is back.
    rbac.set(without("secrets", &["update"])).await;
    rbac.wait_can("update", "secrets", false).await;
    bridges
        .patch(
            "narrow",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"conclave.dev/rotate-secrets": "r1"}}})),
        )
        .await
        .expect("request a rotation");
    let b = wait_condition(&bridges, "narrow", "Reconciled", "False", "Forbidden").await;
    let (_, _, message) = condition_message(&b, "Reconciled").expect("condition");
    assert!(message.contains("Secret/narrow-secrets"), "{message}");
    assert_eq!(
        condition(&b, "Ready"),
        Some(("False".into(), "Forbidden".into())),
        "a Bridge that cannot be made what its spec says is not Ready"
    );
    rbac.set(deployed_rules()).await;
    wait_condition(&bridges, "narrow", "Reconciled", "True", "Succeeded").await;
    // The rotation restarts the pods using the secrets; then the Bridge is Ready again.
    wait_ready(&bridges, "narrow").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let generated = secrets.get("narrow-secrets").await.expect("generated Secret");
    assert_eq!(
        generated
            .metadata
            .annotations
            .unwrap_or_default()
            .get("conclave.dev/rotation")
            .map(String::as_str),
        Some("r1"),
        "the rotation happened once the right was back"
    );

    // 3. A Meeting whose credentials cannot be written says so, then gets them.
    rbac.set(without("secrets", &["create", "patch"])).await;
    rbac.wait_can("create", "secrets", false).await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    meetings
        .create(&PostParams::default(), &meeting("standup", "narrow"))
        .await
        .expect("meeting");
    let m = wait_meeting(&meetings, "standup", "Reconciled=False (Forbidden)", |m| {
        meeting_condition(m, "Reconciled").is_some_and(|c| c.0 == "False" && c.1 == "Forbidden")
    })
    .await;
    assert_eq!(meeting_condition(&m, "Ready").map(|c| c.0).as_deref(), Some("False"));
    wait_event(&client, &ns, "standup", "Warning", "Forbidden").await;
    rbac.set(deployed_rules()).await;
    wait_meeting(&meetings, "standup", "links issued", |m| {
        meeting_condition(m, "Ready").is_some_and(|c| c.0 == "True")
            && meeting_condition(m, "Reconciled").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(secrets.get_opt("standup-credentials").await.expect("get").is_some());
}
