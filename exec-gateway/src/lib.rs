//! Airlock's exec gateway: the gRPC front door to sandboxes.
//!
//! The API (generated code of `proto/airlock/v1/sandbox.proto`) and the Rust client are in the crate
//! `airlock-api` (`airlock_api::proto`, `airlock_api::client`), the `airlock` CLI in `airlock-cli`.
//!
//! - [`serve`]: runs the gRPC server (Sandboxes, Processes, Files, health, reflection) on a
//!   listener until a shutdown future resolves.
//!
//! The server talks to Kubernetes (Sandbox objects through the API server) and to the Airlock agent
//! in each sandbox pod: directly over the agent's TCP port where the pod has one ([`agent::direct`];
//! also the only way to background processes, [`background`]), else through `pods/exec` running
//! `/.airlock/airlock-agent` in the sandbox's `sandbox` container, with the stdin framing described
//! in `docs/DESIGN-NOTES.md` and implemented in [`agent`].

pub mod activity;
pub mod agent;
pub mod auth;
pub mod e2b;
mod background;
pub mod config;
mod cache;
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
