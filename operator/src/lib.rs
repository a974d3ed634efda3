//! Airlock's operator: turns `Sandbox` objects (airlock.dev/v1alpha1) into a hardened pod on a
//! VM-isolating RuntimeClass and a NetworkPolicy, keeps their status, and reaps them when their
//! time-to-live or idle timeout runs out. See [`reconcile`] for the pipeline and
//! `docs/DESIGN-NOTES.md` for the pod's shape.

/// Quantity and CIDR parsing live with the API types (`airlock_crds::validation`), shared with the
/// gateway.
pub use airlock_crds::validation::{cidr, quantity};

pub mod build;
pub mod bundle;
pub mod caches;
pub mod config;
pub mod controller;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod reconcile;
pub mod telemetry;

#[cfg(test)]
mod fixtures;
