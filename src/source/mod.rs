//! Where resources come from. Today: a folder in the FHIR Bulk Data layout.

pub mod ndjson;
