//! Conversions between the Sandbox custom resource and the API's messages.

use airlock_crds::{EgressMode, Phase, Protocol, Sandbox, condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use airlock_api::proto::v1 as pb;

pub fn timestamp(t: &Time) -> prost_types::Timestamp {
    let ts = t.0.as_second();
    let nanos = t.0.subsec_nanosecond();
    prost_types::Timestamp { seconds: ts, nanos }
}

pub fn timestamp_from_unix(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

fn phase(p: Option<Phase>) -> pb::Phase {
    match p {
        None => pb::Phase::Unspecified,
        Some(Phase::Pending) => pb::Phase::Pending,
        Some(Phase::Starting) => pb::Phase::Starting,
        Some(Phase::Ready) => pb::Phase::Ready,
        Some(Phase::Expired) => pb::Phase::Expired,
        Some(Phase::Failed) => pb::Phase::Failed,
    }
}

/// The API's view of a Sandbox object.
pub fn sandbox(s: &Sandbox) -> pb::Sandbox {
    let status = s.status.clone().unwrap_or_default();
    let spec = &s.spec;
    let ready = s.is_ready();
    let message = if ready {
        String::new()
    } else {
        s.condition(condition::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    pb::Sandbox {
        namespace: s.namespace().unwrap_or_default(),
        name: s.name_any(),
        uid: s.uid().unwrap_or_default(),
        image: spec.image.clone(),
        template: spec.template_ref.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
        start_mode: status.start_mode.map(|m| m.as_str().to_string()).unwrap_or_default(),
        phase: phase(status.phase) as i32,
        ready,
        conditions: status
            .conditions
            .iter()
            .map(|c| pb::Condition {
                r#type: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: Some(timestamp(&c.last_transition_time)),
            })
            .collect(),
        resources: Some(pb::Resources {
            cpu: spec
                .resources
                .cpu
                .as_ref()
                .map(|q| q.0.clone())
                .unwrap_or_default(),
            memory: spec
                .resources
                .memory
                .as_ref()
                .map(|q| q.0.clone())
                .unwrap_or_default(),
            ephemeral_storage: spec
                .resources
                .ephemeral_storage
                .as_ref()
                .map(|q| q.0.clone())
                .unwrap_or_default(),
        }),
        ttl_seconds: spec.lifetime.ttl_seconds.unwrap_or_default(),
        idle_timeout_seconds: spec.lifetime.idle_timeout_seconds.unwrap_or_default(),
        network: Some(pb::Network {
            egress: match spec.network.egress {
                EgressMode::None => pb::network::Egress::None,
                EgressMode::Internet => pb::network::Egress::Internet,
                EgressMode::AllowList => pb::network::Egress::AllowList,
            } as i32,
            allow: spec
                .network
                .allow
                .iter()
                .map(|r| pb::EgressRule {
                    cidr: r.cidr.clone(),
                    ports: r
                        .ports
                        .iter()
                        .map(|p| pb::Port {
                            port: p.port,
                            protocol: match p.protocol {
                                Protocol::TCP => pb::port::Protocol::Tcp,
                                Protocol::UDP => pb::port::Protocol::Udp,
                                Protocol::SCTP => pb::port::Protocol::Sctp,
                            } as i32,
                        })
                        .collect(),
                })
                .collect(),
            dns: spec.network.dns,
        }),
        env: spec
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        labels: s
            .labels()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_at: s.metadata.creation_timestamp.as_ref().map(timestamp),
        ready_at: status.ready_time.as_ref().map(timestamp),
        expires_at: status.expires_at.as_ref().map(timestamp),
        last_activity_at: status.last_activity_time.as_ref().map(timestamp),
        pod_name: status.pod_name.clone().unwrap_or_default(),
        node_name: status.node_name.clone().unwrap_or_default(),
        runtime_class_name: status
            .runtime_class_name
            .clone()
            .or_else(|| spec.runtime_class_name.clone())
            .unwrap_or_default(),
        message,
        deleting: s.metadata.deletion_timestamp.is_some(),
        extension_seconds: spec.lifetime.extension_seconds.unwrap_or_default(),
        ttl_expires_at: status.ttl_expires_at.as_ref().map(timestamp),
    }
}

/// The reason of the Ready condition when it is not True.
pub fn not_ready_reason(s: &Sandbox) -> Option<String> {
    s.condition(condition::READY)
        .filter(|c| c.status != "True")
        .map(|c| c.reason.clone())
}

/// True when the Sandbox reports that the namespace's quota refused its pod.
pub fn quota_exceeded(s: &Sandbox) -> bool {
    not_ready_reason(s).as_deref() == Some("QuotaExceeded")
}

/// True when the Sandbox's lifetime ended.
pub fn expired(s: &Sandbox) -> bool {
    s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Expired)
        || s.condition(condition::EXPIRED)
            .is_some_and(|c| c.status == "True")
}

/// True when the Sandbox failed for good.
pub fn failed(s: &Sandbox) -> bool {
    s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Failed) && !quota_exceeded(s)
}
