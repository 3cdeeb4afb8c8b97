//! FHIR REST transport: one client, paged search.

pub mod auth;
pub mod capabilities;
pub mod client;
pub mod error;
pub mod jwk;
pub mod retry;
