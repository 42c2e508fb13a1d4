//! The Bridge's Ingress, whatever its engine: `https://<domain>/` routed by path prefix to the
//! engine's Services, only when `spec.ingress` asks for one. TLS uses the Bridge's certificate
//! once it exists; until then the Ingress serves plain HTTP (or the controller's default
//! certificate).

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};

use super::context::Ctx;
use crate::labels::Component;

/// Requests under `path` (a prefix) go to port `port` of the Bridge's Service `service` (a
/// name suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    pub service: &'static str,
    pub port: i32,
}

/// The Ingress `<bridge>-web` with `routes`, in the order given.
pub fn build(ctx: &Ctx, routes: &[Route]) -> Option<Ingress> {
    let spec = ctx.spec.ingress.as_ref()?;
    let mut metadata = ctx.meta("web", Component::Web);
    metadata.annotations = (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
    let paths = routes
        .iter()
        .map(|r| HTTPIngressPath {
            path: Some(r.path.into()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: ctx.child_name(r.service),
                    port: Some(ServiceBackendPort {
                        number: Some(r.port),
                        ..ServiceBackendPort::default()
                    }),
                }),
                ..IngressBackend::default()
            },
        })
        .collect();
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ctx.spec.domain.clone()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            tls: ctx.tls_secret.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![ctx.spec.domain.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}
