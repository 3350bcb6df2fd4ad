//! Streaming anomaly detection over the audit stream.
//!
//! The gateway audits every request. A task outside the request path turns
//! each audit record into an [`Observation`] and feeds it to an [`Engine`],
//! which keeps per-agent state and returns [`Signal`]s. The caller stores
//! signals as alerts and runs the configured responses. The engine touches
//! neither the network nor the store, so the same code runs in
//! `castellan serve`, in tests and in the evaluation against generated
//! traffic.
#![forbid(unsafe_code)]

mod detectors;
mod engine;
pub mod evaluation;
pub mod generator;
mod geo;
pub mod monitor;
mod observation;
mod settings;
pub mod webhook;

// Each module's owner adds its re-exports here:
pub use engine::{Context, Engine, Signal};
pub use geo::{GeoDatabase, GeoError, GeoPoint, Locate};
pub use observation::{InvalidObservation, Observation, Outcome};
pub use settings::DetectorSettings;
