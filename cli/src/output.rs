//! How sandboxes are printed.

use airlock_api::prost_types;
use airlock_api::proto::v1 as pb;

pub(crate) fn phase(p: i32) -> &'static str {
    match pb::Phase::try_from(p) {
        Ok(pb::Phase::Pending) => "Pending",
        Ok(pb::Phase::Starting) => "Starting",
        Ok(pb::Phase::Ready) => "Ready",
        Ok(pb::Phase::Expired) => "Expired",
        Ok(pb::Phase::Failed) => "Failed",
        _ => "-",
    }
}

pub(crate) fn ts(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn print_sandbox(sb: &pb::Sandbox) {
    println!("name:      {}/{}", sb.namespace, sb.name);
    println!("image:     {}", source(sb));
    if !sb.start_mode.is_empty() {
        println!("start:     {}", sb.start_mode);
    }
    println!(
        "phase:     {}{}",
        phase(sb.phase),
        if sb.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", sb.message)
        }
    );
    println!("runtime:   {}", sb.runtime_class_name);
    println!("node:      {}", sb.node_name);
    println!("created:   {}", ts(sb.created_at.as_ref()));
    println!("expires:   {}", ts(sb.expires_at.as_ref()));
    println!("ttl ends:  {}", ts(sb.ttl_expires_at.as_ref()));
    println!("activity:  {}", ts(sb.last_activity_at.as_ref()));
    for c in &sb.conditions {
        println!(
            "condition: {}={} {} {}",
            c.r#type, c.status, c.reason, c.message
        );
    }
}

/// What a sandbox is made from: its image, or `template <name>`.
pub fn source(sb: &pb::Sandbox) -> String {
    if sb.template.is_empty() {
        sb.image.clone()
    } else {
        format!("template {}", sb.template)
    }
}
