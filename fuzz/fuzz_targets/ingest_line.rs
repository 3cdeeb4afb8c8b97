//! Any bytes as one Bulk Data line of every type the job reads: the ingest never panics, and
//! what it keeps obeys the rules of the read (valid ids, plausible dates and values).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tare_marker_monitor::config::Config;
use tare_marker_monitor::ingest::{is_fhir_id, Ingestor, LineOutcome, Record, ResourceType};

static INGESTOR: LazyLock<Ingestor> = LazyLock::new(|| {
    Ingestor::new(
        &Config::default(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    )
});

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tare_marker_monitor::ingest::resource_header(line);
    let _ = tare_marker_monitor::ingest::patient_of_resource(line);
    for kind in ResourceType::ALL {
        if let LineOutcome::Record(record) = INGESTOR.read_line(kind, line) {
            assert!(is_fhir_id(record.patient_id()));
            if let Record::Value { value, .. } = record {
                assert!(value.value.is_finite() && value.value >= 0.0);
                assert!(is_fhir_id(&value.observation_id));
            }
        }
    }
});
