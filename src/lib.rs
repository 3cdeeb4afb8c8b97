//! tare-marker-monitor: post-TARE PIVKA-II / AFP surveillance over FHIR R4 data.
//!
//! Data flows one way: `source` -> `ingest` -> `timeline` -> `evaluate` (pure) -> `sink`;
//! `run` wires one run together.

// Stdout is written through `commands::write_stdout` only: `print!`/`println!` panic (exit 101)
// when stdout is closed (`| head`) or full.
#![deny(clippy::print_stdout)]

pub mod cohort;
pub mod commands;
pub mod config;
pub mod domain;
pub mod evaluate;
pub mod explain;
pub mod fhir;
pub mod format;
pub mod generate;
pub mod ingest;
pub mod interrupt;
pub mod isolation;
pub mod logging;
pub mod merge;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod report;
pub mod run;
pub mod sink;
pub mod source;
pub mod state;
pub mod text;
pub mod timeline;
pub mod workers;
