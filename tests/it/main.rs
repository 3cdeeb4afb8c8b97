//! The integration tests, one binary (one link on two cores): each module is an area, and its
//! test names read as the specification they prove. `helpers` holds everything shared.
// A test that unwraps fails where the unexpected happened: that is what a test should do.
#![allow(clippy::unwrap_used)]

mod auth;
mod cdp;
mod cli;
mod deploy;
mod failfast;
mod faults;
mod helpers;
mod ingest;
mod outputs;
mod prefilter;
mod properties;
mod reading;
mod report;
mod report_browser;
mod rules;
mod safety;
mod schedule;
mod server;
mod servers;
mod smart;
mod tls;
