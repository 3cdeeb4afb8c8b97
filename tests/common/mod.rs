//! Hand-built patient timelines for the rule tests: dates are days relative to the TARE.
#![allow(dead_code)]

use chrono::{Duration, NaiveDate};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::{
    Censoring, EpisodeFindings, Flag, FlagCode, Marker, MarkerCourse, MarkerValue, PatientFindings,
    PatientTimeline, TareProcedure,
};
use tare_marker_monitor::evaluate::evaluate_patient;

pub fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// The TARE date of every hand-built case.
pub fn index() -> NaiveDate {
    date("2026-01-10")
}

pub struct Case {
    pub timeline: PatientTimeline,
    next_id: usize,
}

impl Case {
    /// An eligible adult with an HCC diagnosis and one TARE on `index()`.
    pub fn new() -> Case {
        Case {
            timeline: PatientTimeline {
                patient_id: "p1".into(),
                has_patient_resource: true,
                birth_date: Some(date("1960-01-01")),
                name: None,
                has_hcc: true,
                procedures: vec![TareProcedure {
                    procedure_id: "tare-1".into(),
                    date: index(),
                }],
                values: Vec::new(),
            },
            next_id: 0,
        }
    }

    pub fn tare(mut self, day: i64) -> Case {
        self.timeline.procedures.push(TareProcedure {
            procedure_id: format!("tare-{}", self.timeline.procedures.len() + 1),
            date: index() + Duration::days(day),
        });
        self.timeline.procedures.sort_by_key(|p| p.date);
        self
    }

    pub fn value_with(
        mut self,
        marker: Marker,
        day: i64,
        value: f64,
        censoring: Censoring,
        reference_high: Option<f64>,
    ) -> Case {
        self.next_id += 1;
        let d = index() + Duration::days(day);
        self.timeline.values.push(MarkerValue {
            marker,
            value,
            censoring,
            date: d,
            instant_ms: d.and_hms_opt(9, 0, 0).unwrap().and_utc().timestamp_millis(),
            observation_id: format!("obs-{:03}", self.next_id).into(),
            reference_high,
            last_updated_ms: None,
            note: None,
        });
        self.timeline
            .values
            .sort_by_key(|v| (v.marker, v.instant_ms));
        self
    }

    pub fn value(self, marker: Marker, day: i64, value: f64) -> Case {
        self.value_with(marker, day, value, Censoring::Exact, None)
    }

    pub fn pivka(self, day: i64, value: f64) -> Case {
        self.value(Marker::Pivka2, day, value)
    }

    pub fn afp(self, day: i64, value: f64) -> Case {
        self.value(Marker::Afp, day, value)
    }

    pub fn bilirubin(self, day: i64, value: f64) -> Case {
        self.value(Marker::Bilirubin, day, value)
    }

    pub fn albumin(self, day: i64, value: f64) -> Case {
        self.value(Marker::Albumin, day, value)
    }

    /// Evaluates as of `index() + day` with the default config.
    pub fn as_of_day(&self, day: i64) -> PatientFindings {
        self.evaluate(day, &Config::default())
    }

    pub fn evaluate(&self, day: i64, config: &Config) -> PatientFindings {
        evaluate_patient(&self.timeline, config, index() + Duration::days(day))
    }
}

pub fn only_episode(findings: &PatientFindings) -> &EpisodeFindings {
    assert_eq!(findings.left_out, None, "patient was left out");
    assert_eq!(findings.episodes.len(), 1, "expected one episode");
    &findings.episodes[0]
}

pub fn course(findings: &PatientFindings, marker: Marker) -> &MarkerCourse {
    only_episode(findings)
        .courses
        .iter()
        .find(|c| c.marker == marker)
        .unwrap_or_else(|| panic!("no {} course", marker.key()))
}

pub fn flag(findings: &PatientFindings, code: FlagCode) -> Option<&Flag> {
    only_episode(findings).flags.iter().find(|f| f.code == code)
}

pub fn flag_codes(findings: &PatientFindings) -> Vec<&'static str> {
    only_episode(findings)
        .flags
        .iter()
        .map(|f| f.code.code())
        .collect()
}
