//! Synthetic cohorts in the Bulk Data layout, deterministic for a seed: the demo cohort (one
//! patient per clinical scenario and data-quality case, then random patients) and cohorts of
//! any size for tests and benchmarks. Patients are generated and written one at a time, so a
//! million Observations need no more memory than one patient.

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub mod realistic;

const LOINC: &str = "http://loinc.org";
const PIVKA: (&str, &str) = ("34444-0", "PIVKA-II");
const AFP: (&str, &str) = (
    "1834-1",
    "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma",
);
const AFP_IU: (&str, &str) = (
    "19176-7",
    "Alpha-1-Fetoprotein [Units/volume] in Serum or Plasma",
);
const AFP_L3: (&str, &str) = ("42332-7", "AFP-L3 fraction");
const ALBUMIN: (&str, &str) = ("1751-7", "Albumin [Mass/volume] in Serum or Plasma");
const BILIRUBIN: (&str, &str) = ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma");

/// The date the demo cohort's histories lead up to; the README runs it `--as-of 2026-11-01`.
pub const DEMO_AS_OF: &str = "2026-11-01";
const DEMO_RANDOM_PATIENTS: usize = 34;
const DEMO_SEED: u64 = 2026;

/// What to generate.
#[derive(Debug, Clone)]
pub enum Plan {
    Demo,
    Random {
        patients: usize,
        seed: u64,
        as_of: NaiveDate,
        /// Surrounded by what a real export carries (`realistic.rs`).
        realistic: bool,
    },
}

impl Plan {
    pub fn demo() -> Plan {
        Plan::Demo
    }

    pub fn random(patients: usize, seed: u64, as_of: NaiveDate) -> Plan {
        Plan::Random {
            patients,
            seed,
            as_of,
            realistic: false,
        }
    }

    /// A random cohort inside a realistic export (`realistic.rs`).
    pub fn realistic(patients: usize, seed: u64, as_of: NaiveDate) -> Plan {
        Plan::Random {
            patients,
            seed,
            as_of,
            realistic: true,
        }
    }

    pub fn patient_count(&self) -> usize {
        match self {
            Plan::Demo => demo_scenarios().len() + DEMO_RANDOM_PATIENTS,
            Plan::Random { patients, .. } => *patients,
        }
    }
}

/// The resources of one synthetic patient, and raw lines (deliberately broken input).
#[derive(Debug, Default)]
pub struct PatientResources {
    pub patients: Vec<Value>,
    pub conditions: Vec<Value>,
    pub procedures: Vec<Value>,
    pub observations: Vec<Value>,
    pub raw_observation_lines: Vec<String>,
}

/// Builds one patient's resources with terse helpers.
struct Builder {
    patient_id: String,
    next: usize,
    out: PatientResources,
}

fn day(date: NaiveDate, offset: i64) -> String {
    (date + Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

fn at_noon(date: NaiveDate, offset: i64) -> String {
    format!("{}T12:00:00Z", day(date, offset))
}

/// A Quantity as laboratories send it: the printed unit, and its UCUM code. `mAU/mL` is not UCUM,
/// nor is `m[arb'U]/mL` (an arbitrary unit takes no prefix): the same quantity is `[arb'U]/L`,
/// which validators accept.
fn quantity(value: f64, unit: &str) -> Value {
    json!({"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum_code(unit)})
}

fn ucum_code(unit: &str) -> &str {
    match unit {
        "mAU/mL" => "[arb'U]/L",
        other => other,
    }
}

impl Builder {
    fn new(patient_id: &str) -> Builder {
        Builder {
            patient_id: patient_id.to_owned(),
            next: 0,
            out: PatientResources::default(),
        }
    }

    fn id(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{}-{kind}{}", self.patient_id, self.next)
    }

    fn subject(&self) -> Value {
        json!({"reference": format!("Patient/{}", self.patient_id)})
    }

    fn patient(&mut self, birth_date: Option<&str>) -> &mut Self {
        let mut p = json!({"resourceType": "Patient", "id": self.patient_id, "gender": "unknown"});
        if let Some(b) = birth_date {
            p["birthDate"] = json!(b);
        }
        self.out.patients.push(p);
        self
    }

    fn hcc(&mut self, verification: &str) -> &mut Self {
        let id = self.id("cond");
        let c = json!({
            "resourceType": "Condition", "id": id,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0", "display": "Liver cell carcinoma"}]},
            "subject": self.subject()
        });
        self.out.conditions.push(c);
        self
    }

    fn tare_with_status(&mut self, date: NaiveDate, status: &str) -> &mut Self {
        let id = self.id("tare");
        let p = json!({
            "resourceType": "Procedure", "id": id, "status": status,
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445", "display": "Radiopharmaceutical therapy, by intra-arterial particulate administration"}]},
            "subject": self.subject(),
            "performedDateTime": day(date, 0)
        });
        self.out.procedures.push(p);
        self
    }

    fn tare(&mut self, date: NaiveDate) -> &mut Self {
        self.tare_with_status(date, "completed")
    }

    /// A complete Observation; `patch` may change or remove any element afterwards.
    fn observation_with(
        &mut self,
        code: (&str, &str),
        effective: &str,
        value: Value,
        patch: impl FnOnce(&mut Value),
    ) -> &mut Self {
        let id = self.id("obs");
        let mut o = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "meta": {"lastUpdated": "2026-11-01T00:00:00Z"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": code.0, "display": code.1}]},
            "subject": self.subject(),
            "effectiveDateTime": effective,
            "valueQuantity": value
        });
        patch(&mut o);
        self.out.observations.push(o);
        self
    }

    fn lab(
        &mut self,
        code: (&str, &str),
        index: NaiveDate,
        offset: i64,
        value: f64,
        unit: &str,
    ) -> &mut Self {
        self.observation_with(code, &at_noon(index, offset), quantity(value, unit), |_| {})
    }

    fn pivka(&mut self, index: NaiveDate, offset: i64, value: f64) -> &mut Self {
        self.lab(PIVKA, index, offset, value, "mAU/mL")
    }

    fn afp(&mut self, index: NaiveDate, offset: i64, value: f64) -> &mut Self {
        self.lab(AFP, index, offset, value, "ng/mL")
    }

    fn bilirubin(&mut self, index: NaiveDate, offset: i64, value: f64) -> &mut Self {
        self.lab(BILIRUBIN, index, offset, value, "umol/L")
    }

    fn albumin(&mut self, index: NaiveDate, offset: i64, value: f64) -> &mut Self {
        self.lab(ALBUMIN, index, offset, value, "g/L")
    }

    fn standard(&mut self, birth: &str, index: NaiveDate) -> &mut Self {
        self.patient(Some(birth)).hcc("confirmed").tare(index)
    }

    fn done(self) -> PatientResources {
        self.out
    }
}

fn d(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("scenario dates are valid")
}

/// One patient per case the demo must show; the ids say which case.
pub fn demo_scenarios() -> Vec<PatientResources> {
    let mut all = Vec::new();

    // The seed case: PIVKA-II 88,000 -> 6,088 mAU/mL four months after TARE: PR, incomplete-response.
    let t = d("2026-06-20");
    let mut b = Builder::new("demo-01-seed-partial-response");
    b.standard("1958-04-11", t)
        .pivka(t, -5, 88000.0)
        .pivka(t, 31, 41000.0)
        .pivka(t, 61, 15500.0)
        .pivka(t, 92, 9100.0)
        .pivka(t, 122, 6088.0)
        .albumin(t, -5, 38.0)
        .bilirubin(t, -5, 14.0)
        .albumin(t, 122, 36.0)
        .bilirubin(t, 122, 16.0);
    all.push(b.done());

    // Complete response of AFP.
    let t = d("2026-05-04");
    let mut b = Builder::new("demo-02-afp-complete-response");
    b.standard("1949-09-30", t)
        .afp(t, -10, 450.0)
        .afp(t, 30, 120.0)
        .afp(t, 62, 31.0)
        .afp(t, 95, 12.0)
        .afp(t, 150, 8.0);
    all.push(b.done());

    // Confirmed rise -> PD, marker-rise high.
    let t = d("2026-04-01");
    let mut b = Builder::new("demo-03-pivka-confirmed-rise");
    b.standard("1961-01-02", t)
        .pivka(t, -3, 5000.0)
        .pivka(t, 30, 900.0)
        .pivka(t, 120, 1400.0)
        .pivka(t, 180, 2100.0);
    all.push(b.done());

    // Rise not yet confirmed -> marker-rise moderate; response PR.
    let t = d("2026-07-01");
    let mut b = Builder::new("demo-04-pivka-unconfirmed-rise");
    b.standard("1955-12-24", t)
        .pivka(t, -2, 3000.0)
        .pivka(t, 30, 500.0)
        .pivka(t, 75, 800.0);
    all.push(b.done());

    // No response by day 76 -> SD, no-response.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-05-pivka-no-response");
    b.standard("1952-03-15", t)
        .pivka(t, -1, 10000.0)
        .pivka(t, 40, 8000.0)
        .pivka(t, 80, 7500.0)
        .pivka(t, 120, 7800.0);
    all.push(b.done());

    // Plateau above 1,000 mAU/mL.
    let t = d("2026-06-10");
    let mut b = Builder::new("demo-06-pivka-plateau");
    b.standard("1947-07-07", t)
        .pivka(t, -4, 20000.0)
        .pivka(t, 30, 1800.0)
        .pivka(t, 70, 1900.0)
        .pivka(t, 110, 2000.0);
    all.push(b.done());

    // Normal baseline: NE, no flags.
    let t = d("2026-08-01");
    let mut b = Builder::new("demo-07-pivka-normal-baseline");
    b.standard("1963-05-19", t)
        .pivka(t, -6, 30.0)
        .pivka(t, 30, 25.0)
        .pivka(t, 60, 28.0);
    all.push(b.done());

    // Normal baseline, then a confirmed rise: NE (precedence) but marker-rise high.
    let t = d("2026-04-15");
    let mut b = Builder::new("demo-08-pivka-rise-from-normal");
    b.standard("1950-10-10", t)
        .pivka(t, -5, 30.0)
        .pivka(t, 30, 35.0)
        .pivka(t, 150, 120.0)
        .pivka(t, 180, 180.0);
    all.push(b.done());

    // Bilirubin >= 3 mg/dL on day 45: possible-reild.
    let t = d("2026-07-15");
    let mut b = Builder::new("demo-09-reild-absolute");
    b.standard("1957-02-28", t)
        .pivka(t, -3, 900.0)
        .pivka(t, 30, 300.0)
        .pivka(t, 60, 35.0)
        .bilirubin(t, -3, 15.0)
        .albumin(t, -3, 39.0)
        .observation_with(BILIRUBIN, &at_noon(t, 45), quantity(3.5, "mg/dL"), |_| {})
        .albumin(t, 45, 31.0);
    all.push(b.done());

    // Bilirubin doubled above the ULN: possible-reild.
    let t = d("2026-08-20");
    let mut b = Builder::new("demo-10-reild-doubling");
    b.standard("1960-06-06", t)
        .afp(t, -7, 60.0)
        .afp(t, 28, 25.0)
        .bilirubin(t, -7, 12.0)
        .bilirubin(t, 30, 26.0);
    all.push(b.done());

    // PIVKA-II progresses while AFP responds: marker-discordance.
    let t = d("2026-03-20");
    let mut b = Builder::new("demo-11-discordance");
    b.standard("1948-11-11", t)
        .pivka(t, -2, 4000.0)
        .pivka(t, 30, 600.0)
        .pivka(t, 150, 1100.0)
        .pivka(t, 210, 1600.0)
        .afp(t, -2, 800.0)
        .afp(t, 30, 300.0)
        .afp(t, 150, 90.0)
        .afp(t, 210, 70.0);
    all.push(b.done());

    // No value since day 30: surveillance-overdue.
    let t = d("2026-05-01");
    let mut b = Builder::new("demo-12-surveillance-overdue");
    b.standard("1959-08-08", t)
        .pivka(t, -3, 500.0)
        .pivka(t, 30, 100.0);
    all.push(b.done());

    // Staged treatment (two TAREs 45 days apart, one episode), then a second episode.
    let t1 = d("2025-03-01");
    let t2 = d("2026-01-10");
    let mut b = Builder::new("demo-13-two-episodes");
    b.standard("1953-04-04", t1)
        .tare(t1 + Duration::days(45))
        .tare(t2)
        .pivka(t1, -5, 12000.0)
        .pivka(t1, 60, 3000.0)
        .pivka(t1, 150, 900.0)
        .pivka(t1, 240, 4000.0)
        .pivka(t1, 300, 6500.0)
        .pivka(t2, 40, 1500.0)
        .pivka(t2, 100, 400.0)
        .pivka(t2, 200, 90.0);
    all.push(b.done());

    // Under 18 at TARE: left out.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-14-under-18");
    b.standard("2010-02-02", t)
        .pivka(t, -2, 5000.0)
        .pivka(t, 30, 800.0);
    all.push(b.done());

    // No HCC diagnosis: left out.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-15-no-hcc");
    b.patient(Some("1950-01-01"))
        .tare(t)
        .pivka(t, -2, 5000.0)
        .pivka(t, 30, 800.0);
    all.push(b.done());

    // HCC diagnosis refuted: left out, and the Condition counted.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-16-hcc-refuted");
    b.patient(Some("1950-01-01"))
        .hcc("refuted")
        .tare(t)
        .pivka(t, -2, 5000.0)
        .pivka(t, 30, 800.0);
    all.push(b.done());

    // Observations and a TARE but no Patient resource: left out.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-17-no-patient-resource");
    b.hcc("confirmed")
        .tare(t)
        .pivka(t, -2, 5000.0)
        .pivka(t, 30, 800.0);
    all.push(b.done());

    // Unknown birth date: evaluated and noted.
    let t = d("2026-07-01");
    let mut b = Builder::new("demo-18-unknown-birth-date");
    b.patient(None)
        .hcc("confirmed")
        .tare(t)
        .pivka(t, -2, 700.0)
        .pivka(t, 35, 30.0)
        .pivka(t, 70, 22.0);
    all.push(b.done());

    // DCP by mass (PIVKA-II code with ng/mL): its own series.
    let t = d("2026-06-15");
    let mut b = Builder::new("demo-19-dcp-mass-units");
    b.standard("1956-06-16", t)
        .lab(PIVKA, t, -3, 85.0, "ng/mL")
        .lab(PIVKA, t, 30, 20.0, "ng/mL")
        .lab(PIVKA, t, 64, 5.0, "ng/mL");
    all.push(b.done());

    // AFP in IU/mL (x 1.21) and AFP-L3.
    let t = d("2026-06-25");
    let mut b = Builder::new("demo-20-afp-iu-and-l3");
    b.standard("1951-03-03", t)
        .observation_with(AFP_IU, &at_noon(t, -4), quantity(200.0, "[IU]/mL"), |_| {})
        .observation_with(AFP_IU, &at_noon(t, 33), quantity(60.0, "[IU]/mL"), |_| {})
        .observation_with(AFP_IU, &at_noon(t, 66), quantity(30.0, "[IU]/mL"), |_| {})
        .lab(AFP_L3, t, -4, 35.0, "%")
        .lab(AFP_L3, t, 33, 18.0, "%")
        .lab(AFP_L3, t, 66, 9.0, "%");
    all.push(b.done());

    // Only a TARE after the as-of date: left out.
    let t = d("2026-12-15");
    let mut b = Builder::new("demo-21-tare-after-as-of");
    b.standard("1954-09-09", t).pivka(t, -20, 5000.0);
    all.push(b.done());

    // TARE not completed: no TARE procedure; the Procedure counted.
    let t = d("2026-06-01");
    let mut b = Builder::new("demo-22-tare-not-completed");
    b.patient(Some("1950-01-01"))
        .hcc("confirmed")
        .tare_with_status(t, "in-progress")
        .pivka(t, -2, 5000.0);
    all.push(b.done());

    // Zero baseline (AFP-L3 0%): percentages empty.
    let t = d("2026-07-20");
    let mut b = Builder::new("demo-23-zero-baseline");
    b.standard("1962-12-12", t)
        .lab(AFP_L3, t, -2, 0.0, "%")
        .lab(AFP_L3, t, 30, 4.0, "%")
        .pivka(t, -2, 2400.0)
        .pivka(t, 30, 150.0);
    all.push(b.done());

    // Every data-quality case on one patient, around an ordinary partial response.
    all.push(data_quality_patient());
    all
}

fn data_quality_patient() -> PatientResources {
    let t = d("2026-06-05");
    let mut b = Builder::new("demo-24-data-quality");
    b.standard("1955-05-05", t)
        .pivka(t, -3, 9000.0)
        // Accepted forms.
        .observation_with(PIVKA, &at_noon(t, 30), Value::Null, |o| {
            remove(o, "valueQuantity");
            o["valueString"] = json!("6,088 mAU/mL");
        })
        .observation_with(AFP, &at_noon(t, -3), quantity(45.0, "ng/mL"), |_| {})
        .observation_with(AFP, &at_noon(t, 30), Value::Null, |o| {
            remove(o, "valueQuantity");
            o["valueString"] = json!("<2.0 ng/mL");
        })
        .observation_with(PIVKA, &at_noon(t, 60), json!({"value": 75000, "comparator": ">", "unit": "mAU/mL", "system": "http://unitsofmeasure.org", "code": "[arb'U]/L"}), |o| {
            o["status"] = json!("amended");
        })
        // 23:30 at -05:00 on day 89 is day 90 in UTC.
        .observation_with(PIVKA, "2026-09-02T23:30:00-05:00", quantity(70000.0, "mAU/mL"), |o| {
            o["status"] = json!("corrected");
        })
        // Date-only effective time.
        .observation_with(ALBUMIN, &day(t, -3), quantity(3.6, "g/dL"), |_| {})
        .observation_with(BILIRUBIN, &day(t, -3), quantity(1.1, "mg/dL"), |_| {})
        // Duplicates: same instant; the later lastUpdated wins.
        .observation_with(AFP, &at_noon(t, 60), quantity(5.0, "ng/mL"), |o| {
            o["meta"]["lastUpdated"] = json!("2026-08-05T08:00:00Z");
        })
        .observation_with(AFP, &at_noon(t, 60), quantity(4.0, "ng/mL"), |o| {
            o["meta"]["lastUpdated"] = json!("2026-08-06T08:00:00Z");
        })
        // Left out, one per reason.
        .observation_with(PIVKA, &at_noon(t, 10), quantity(1.0, "mAU/mL"), |o| {
            o["status"] = json!("preliminary");
        })
        .observation_with(PIVKA, &at_noon(t, 11), quantity(1.0, "mAU/mL"), |o| {
            o["status"] = json!("entered-in-error");
        })
        .observation_with(PIVKA, &at_noon(t, 12), quantity(1.0, "mAU/mL"), |o| {
            remove(o, "effectiveDateTime");
        })
        .observation_with(PIVKA, "2026-06", quantity(1.0, "mAU/mL"), |_| {})
        .observation_with(PIVKA, "last tuesday", quantity(1.0, "mAU/mL"), |_| {})
        .observation_with(PIVKA, &at_noon(t, 13), Value::Null, |o| {
            remove(o, "valueQuantity");
            o["valueString"] = json!("88000");
        })
        .observation_with(PIVKA, &at_noon(t, 14), Value::Null, |o| {
            remove(o, "valueQuantity");
            o["valueString"] = json!("positive");
        })
        .observation_with(PIVKA, &at_noon(t, 15), Value::Null, |o| {
            remove(o, "valueQuantity");
            o["dataAbsentReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}]});
        })
        .observation_with(AFP, &at_noon(t, 16), quantity(3.0, "mmol/L"), |_| {})
        .observation_with(PIVKA, &at_noon(t, 17), Value::Null, |o| {
            remove(o, "valueQuantity");
        })
        .observation_with(PIVKA, &at_noon(t, 18), quantity(1.0, "mAU/mL"), |o| {
            remove(o, "subject");
        })
        .observation_with(PIVKA, &at_noon(t, 19), json!({"value": 3, "comparator": "ad", "unit": "mAU/mL"}), |_| {})
        .observation_with(("718-7", "Hemoglobin"), &at_noon(t, 20), quantity(12.0, "g/dL"), |_| {});
    let mut out = b.done();
    out.raw_observation_lines.push(
        r#"{"resourceType":"Observation","id":"demo-24-data-quality-broken","status":"final","valueQuantity":{"value":"lots"}}"#.into(),
    );
    out.raw_observation_lines
        .push(r#"{"resourceType":"Observation","id":"demo-24-data-quality-truncated","sta"#.into());
    out.raw_observation_lines.push(
        r#"{"resourceType":"Encounter","id":"demo-24-data-quality-misfiled","status":"finished"}"#
            .into(),
    );
    out.procedures.push(json!({
        "resourceType": "Procedure", "id": "demo-24-data-quality-undated-tare", "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
        "subject": {"reference": "Patient/demo-24-data-quality"}
    }));
    out
}

const DAY_MS: i64 = 86_400_000;

/// A random patient: birth date, HCC, one or two TAREs, and visits every ~30 days with PIVKA-II,
/// AFP, albumin and bilirubin on a course drawn from a few clinical shapes.
pub fn random_patient(
    rng: &mut ChaCha8Rng,
    patient_id: &str,
    as_of: NaiveDate,
    visits: usize,
) -> PatientResources {
    let mut b = Builder::new(patient_id);
    let birth_year = rng.gen_range(1938..1990);
    let birth = NaiveDate::from_ymd_opt(birth_year, rng.gen_range(1..=12), rng.gen_range(1..=28))
        .expect("valid date");
    b.patient(Some(&birth.format("%Y-%m-%d").to_string()));
    if rng.gen_bool(0.95) {
        b.hcc("confirmed");
    }
    let span_days = visits as i64 * 30 + rng.gen_range(0..120);
    let index = as_of - Duration::days(span_days);
    b.tare(index);
    if rng.gen_bool(0.15) {
        b.tare(index + Duration::days(rng.gen_range(20..60)));
    }
    let pivka_baseline: f64 = 10f64.powf(rng.gen_range(1.3..5.0));
    let afp_baseline: f64 = 10f64.powf(rng.gen_range(0.5..3.5));
    // 0: falls and stays down, 1: falls then rises, 2: roughly stable.
    let shape = rng.gen_range(0..3);
    let halving_days: f64 = rng.gen_range(15.0..60.0);
    let albumin: f64 = rng.gen_range(28.0..45.0);
    let bilirubin: f64 = rng.gen_range(6.0..30.0);
    for visit in 0..=visits {
        let offset = if visit == 0 {
            -(rng.gen_range(1..10) as i64)
        } else {
            visit as i64 * 30 + rng.gen_range(-5..5)
        };
        let t = offset.max(0) as f64;
        let factor = match shape {
            0 => 0.5f64.powf(t / halving_days).max(0.02),
            1 => {
                let fall = 0.5f64.powf(t.min(120.0) / halving_days).max(0.05);
                fall * (1.0 + ((t - 120.0).max(0.0) / 60.0).powi(2))
            }
            _ => 1.0 + rng.gen_range(-0.2..0.2),
        };
        let noise = |rng: &mut ChaCha8Rng| 1.0 + rng.gen_range(-0.08..0.08);
        let pivka = (pivka_baseline * factor * noise(rng)).round().max(1.0);
        let afp = ((afp_baseline * factor * noise(rng)) * 10.0).round() / 10.0;
        let time = index
            .and_hms_opt(8, 0, 0)
            .expect("valid")
            .and_utc()
            .timestamp_millis()
            + offset * DAY_MS
            + rng.gen_range(0..8) * 3_600_000;
        let effective = chrono::DateTime::from_timestamp_millis(time)
            .expect("valid")
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        b.observation_with(PIVKA, &effective, quantity(pivka, "mAU/mL"), |_| {});
        b.observation_with(AFP, &effective, quantity(afp.max(0.5), "ng/mL"), |_| {});
        let alb = ((albumin + rng.gen_range(-2.0..2.0)) * 10.0).round() / 10.0;
        let bili = ((bilirubin * (1.0 + rng.gen_range(-0.2..0.6))) * 10.0).round() / 10.0;
        b.observation_with(ALBUMIN, &effective, quantity(alb, "g/L"), |_| {});
        b.observation_with(BILIRUBIN, &effective, quantity(bili, "umol/L"), |_| {});
    }
    b.done()
}

/// Lines of one resource type, written to `Type.ndjson`, or, past `lines_per_file` lines, to
/// `Type.000.ndjson`, `Type.001.ndjson`... as exports split large types.
struct TypeWriter {
    dir: std::path::PathBuf,
    kind: &'static str,
    gzip: bool,
    lines_per_file: Option<u64>,
    /// `resourceType` first in every line, as servers write it (a realistic export).
    type_first: bool,
    out: BufWriter<Box<dyn Write>>,
    lines: u64,
    files: u64,
}

fn open(dir: &Path, name: &str, gzip: bool) -> std::io::Result<BufWriter<Box<dyn Write>>> {
    let name = if gzip {
        format!("{name}.ndjson.gz")
    } else {
        format!("{name}.ndjson")
    };
    let file = File::create(dir.join(name))?;
    let inner: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    Ok(BufWriter::with_capacity(1 << 20, inner))
}

/// Flushes a writer and, for gzip, writes its trailer (on drop), surfacing errors.
fn close(writer: BufWriter<Box<dyn Write>>) -> std::io::Result<()> {
    let mut inner = writer.into_inner().map_err(|e| e.into_error())?;
    inner.flush()
}

impl TypeWriter {
    fn new(
        dir: &Path,
        kind: &'static str,
        gzip: bool,
        lines_per_file: Option<u64>,
        type_first: bool,
    ) -> std::io::Result<TypeWriter> {
        let first = match lines_per_file {
            Some(_) => format!("{kind}.000"),
            None => kind.to_owned(),
        };
        Ok(TypeWriter {
            dir: dir.to_owned(),
            kind,
            gzip,
            lines_per_file,
            type_first,
            out: open(dir, &first, gzip)?,
            lines: 0,
            files: 1,
        })
    }

    fn line(&mut self, text: &str) -> std::io::Result<()> {
        if let Some(limit) = self.lines_per_file {
            if self.lines == limit {
                let next = open(
                    &self.dir,
                    &format!("{}.{:03}", self.kind, self.files),
                    self.gzip,
                )?;
                close(std::mem::replace(&mut self.out, next))?;
                self.files += 1;
                self.lines = 0;
            }
        }
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    fn resources(&mut self, values: &[Value]) -> std::io::Result<()> {
        for value in values {
            let text = match self.type_first {
                true => realistic::type_first(value),
                false => value.to_string(),
            };
            self.line(&text)?;
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        close(self.out)
    }
}

/// One writer per resource type; the types beyond the four the job reads only with
/// `--realistic`.
struct Writers {
    patients: TypeWriter,
    conditions: TypeWriter,
    procedures: TypeWriter,
    observations: TypeWriter,
    surroundings: Option<SurroundingWriters>,
}

struct SurroundingWriters {
    encounters: TypeWriter,
    medication_requests: TypeWriter,
    diagnostic_reports: TypeWriter,
}

/// A realistic export splits Observations into files of a million lines.
const OBSERVATION_LINES_PER_FILE: u64 = 1_000_000;

impl Writers {
    fn new(dir: &Path, gzip: bool, realistic: bool) -> std::io::Result<Writers> {
        let split = realistic.then_some(OBSERVATION_LINES_PER_FILE);
        let surroundings = match realistic {
            true => Some(SurroundingWriters {
                encounters: TypeWriter::new(dir, "Encounter", gzip, None, true)?,
                medication_requests: TypeWriter::new(dir, "MedicationRequest", gzip, None, true)?,
                diagnostic_reports: TypeWriter::new(dir, "DiagnosticReport", gzip, None, true)?,
            }),
            false => None,
        };
        Ok(Writers {
            patients: TypeWriter::new(dir, "Patient", gzip, None, realistic)?,
            conditions: TypeWriter::new(dir, "Condition", gzip, None, realistic)?,
            procedures: TypeWriter::new(dir, "Procedure", gzip, None, realistic)?,
            observations: TypeWriter::new(dir, "Observation", gzip, split, realistic)?,
            surroundings,
        })
    }

    fn write(&mut self, p: &PatientResources) -> std::io::Result<()> {
        self.patients.resources(&p.patients)?;
        self.conditions.resources(&p.conditions)?;
        self.procedures.resources(&p.procedures)?;
        self.observations.resources(&p.observations)?;
        for line in &p.raw_observation_lines {
            self.observations.line(line)?;
        }
        Ok(())
    }

    fn write_surroundings(&mut self, s: &realistic::Surroundings) -> std::io::Result<()> {
        self.patients.resources(&s.patients)?;
        self.conditions.resources(&s.conditions)?;
        self.procedures.resources(&s.procedures)?;
        for line in &s.observation_lines {
            self.observations.line(line)?;
        }
        if let Some(w) = &mut self.surroundings {
            w.encounters.resources(&s.encounters)?;
            w.medication_requests.resources(&s.medication_requests)?;
            w.diagnostic_reports.resources(&s.diagnostic_reports)?;
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        for w in [
            self.patients,
            self.conditions,
            self.procedures,
            self.observations,
        ] {
            w.finish()?;
        }
        if let Some(w) = self.surroundings {
            w.encounters.finish()?;
            w.medication_requests.finish()?;
            w.diagnostic_reports.finish()?;
        }
        Ok(())
    }
}

/// Removes a key from a JSON object (the generated resources are all objects).
fn remove(resource: &mut Value, key: &str) {
    if let Some(object) = resource.as_object_mut() {
        object.remove(key);
    }
}

/// Writes the cohort as `Patient`, `Condition`, `Procedure` and `Observation` NDJSON files
/// (and, for a realistic export, the other types and other patients around it).
///
/// The files are written into a hidden sibling folder and moved to `dir` (new or empty) in one
/// rename once complete: a stop (SIGINT/SIGTERM, checked between patients) or a full disk
/// leaves `dir` as it was and removes the partial files.
pub fn write_cohort(plan: &Plan, dir: &Path, gzip: bool) -> std::io::Result<()> {
    let staging = staging_folder(dir)?;
    write_files(plan, staging.path(), gzip)?;
    // A folder that is there and empty is replaced by the rename (rename(2)); once moved,
    // there is nothing left for the guard to remove.
    std::fs::rename(staging.path(), dir)?;
    let _moved = staging.keep();
    Ok(())
}

/// A fresh hidden folder beside `dir`, removed when dropped.
fn staging_folder(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cohort".into());
    // The folder becomes the output: a folder's usual mode, not a temporary one's 0700.
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!(".{name}.generating-"))
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir_in(parent)
}

/// The stop asked for (SIGINT/SIGTERM), as the error that ends the writing.
fn stop_if_asked() -> std::io::Result<()> {
    match crate::interrupt::requested() {
        true => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "stopped (SIGINT/SIGTERM) before the cohort was complete: nothing was written",
        )),
        false => Ok(()),
    }
}

fn write_files(plan: &Plan, dir: &Path, gzip: bool) -> std::io::Result<()> {
    let realistic = matches!(
        plan,
        Plan::Random {
            realistic: true,
            ..
        }
    );
    let mut writers = Writers::new(dir, gzip, realistic)?;
    match plan {
        Plan::Demo => {
            for p in demo_scenarios() {
                stop_if_asked()?;
                writers.write(&p)?;
            }
            let as_of = d(DEMO_AS_OF);
            let mut rng = ChaCha8Rng::seed_from_u64(DEMO_SEED);
            for n in 0..DEMO_RANDOM_PATIENTS {
                stop_if_asked()?;
                let visits = rng.gen_range(2..10);
                writers.write(&random_patient(
                    &mut rng,
                    &format!("demo-r{n:02}"),
                    as_of,
                    visits,
                ))?;
            }
        }
        Plan::Random {
            patients,
            seed,
            as_of,
            realistic,
        } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let progress = crate::progress::Progress::start("writing", *patients as u64);
            for n in 0..*patients {
                if let Err(e) = stop_if_asked() {
                    progress.finish();
                    return Err(e);
                }
                progress.advance(1);
                let patient_id = format!("syn-{seed}-{n}");
                let patient = random_patient(&mut rng, &patient_id, *as_of, 12);
                writers.write(&patient)?;
                if *realistic {
                    writers.write_surroundings(&realistic::surround(
                        &patient,
                        &patient_id,
                        *seed,
                        n,
                    ))?;
                }
            }
            progress.finish();
        }
    }
    writers.finish()
}
