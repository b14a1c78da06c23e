//! vassal-warden: keeps uWSGI Emperor vassals alive when their apps leak file descriptors.
//!
//! The data flow, one module per stage: `emperor` (find Emperors and vassal files) →
//! `inventory` + `mapping` (vassal → PIDs) → `sample` (fd count, soft limit) → `policy`
//! (pure decisions) → `forensics` (what leaks; `sockets` says what each socket is) →
//! `audit` (record first) → `act` (touch, recycle) → verify (in `warden`) → `audit`;
//! `daemon` runs the loop. See docs/ARCHITECTURE.md.

pub mod act;
pub mod audit;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod emperor;
pub mod episode;
pub mod error;
pub mod forensics;
pub mod inventory;
pub mod mapping;
pub mod policy;
pub mod procs;
pub mod sample;
pub mod sockets;
pub mod uwsgi_ini;
pub mod warden;
