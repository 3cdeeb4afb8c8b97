//! FHIR REST transport: one client, paged search.

pub mod client;
pub mod retry;
