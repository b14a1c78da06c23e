//! vassal-warden: keeps uWSGI Emperor vassals alive when their apps leak file descriptors.
//!
//! The data flow, one module per stage: `emperor` (find Emperors and vassal files) →
//! `inventory` + `mapping` (vassal → PIDs) → `sample` (fd count, soft limit) → `episode`
//! (the decision core, with `policy`'s rules, asking `forensics` what leaks; `sockets`
//! says what each socket is) → `audit` (record first) → `act` (touch, recycle) → verify
//! (`episode` again) → `audit`; `warden` carries out each pass, `daemon` runs the loop;
//! `metrics` renders each pass for Prometheus and serves it from its own thread;
//! `capture` finds the code that leaks, before the line.
//! `trust` says what a vassal file's word may make root do; `text` and `vocab` are the
//! leaves every layer shares. The modules form layers (docs/ARCHITECTURE.md, "Layers",
//! held to the code by `tests/it/layers.rs`): none imports from a layer above its own.
//! See docs/ARCHITECTURE.md.
//!
//! Public modules are the binary's entry (`cli`) and what the benchmarks and tests
//! measure directly; everything else is private to the crate.

pub mod capture;
pub mod cli;
pub mod forensics;
pub mod metrics;
pub mod procs;
pub mod sample;
pub mod sockets;
pub mod uwsgi_ini;

mod ability;
mod act;
mod audit;
mod bounded;
mod config;
mod daemon;
mod emperor;
mod episode;
mod error;
mod hook;
mod inventory;
mod mapping;
mod pauses;
mod policy;
mod service;
mod text;
mod trust;
mod vocab;
mod warden;

/// The keys warden.ini accepts, for the packaging's tests (the shipped warden.ini and its
/// manual page must name every one).
pub use config::{POLICY_KEYS, WARDEN_KEYS};
