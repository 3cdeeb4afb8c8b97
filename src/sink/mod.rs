//! Where findings go: CSV files, the FHIR resources that would be written, the run summary.

pub mod csv;
pub mod detected_issue;
pub mod plan;
pub mod server;
pub mod summary;
