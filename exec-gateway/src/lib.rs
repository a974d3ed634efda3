//! Airlock's exec gateway: the gRPC front door to sandboxes.
//!
//! - [`proto`]: the generated messages, clients and servers of `proto/airlock/v1/sandbox.proto`.
//! - [`client::AirlockClient`]: a small ergonomic client (used by the `airlock` CLI and the e2e
//!   tests).
//! - [`serve`]: runs the gRPC server (Sandboxes, Processes, Files, health, reflection) on a
//!   listener until a shutdown future resolves.
//!
//! The server talks to Kubernetes only: Sandbox objects through the API server, commands and
//! files through `pods/exec` running the Airlock agent (`/.airlock/airlock-agent`) inside the
//! sandbox's `sandbox` container, with the agent's stdin framing described in
//! `docs/DESIGN-NOTES.md` and implemented in [`agent`].

pub mod activity;
pub mod agent;
pub mod auth;
pub mod client;
pub mod config;
mod convert;
pub mod extend;
mod files;
mod k8s;
pub mod listener;
pub mod metrics;
mod processes;
pub mod run_as;
pub mod runtime_classes;
mod sandboxes;
mod server;
pub mod tls;
pub mod validate;

pub use config::Config;
pub use server::{ServeError, serve};

/// Generated protobuf code (package `airlock.v1`).
pub mod proto {
    /// Package `airlock.v1`.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("airlock.v1");

        /// Encoded `FileDescriptorSet` of the API, served by the reflection service.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("airlock_descriptor");
    }
}

/// Re-exported so users of the client need not depend on the same versions themselves.
pub use {bytes, prost_types, tonic};
