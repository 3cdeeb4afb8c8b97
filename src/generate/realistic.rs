//! What a real hospital export carries around the cohort (`generate --realistic`): for each
//! monitored Observation nineteen others (vital signs with components, blood counts, chemistry,
//! social history with coded values; several codings, notes in other scripts, some lines with
//! every non-ASCII character escaped, a few that mention a monitored code where it does not
//! count), Encounters, MedicationRequests, DiagnosticReports, other Conditions and Procedures,
//! and one patient outside the cohort per cohort patient with two liver labs. Tumour markers and
//! liver labs are then about 5% of the Observation lines.
//!
//! A separate random stream per patient: the cohort's own resources are those `generate`
//! writes without `--realistic`, so the findings are the same.

use super::{quantity, PatientResources, LOINC};
use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Other Observations per monitored one: markers and liver labs are 1 in 20 lines.
pub const OTHERS_PER_MONITORED: usize = 19;

const UCUM: &str = "http://unitsofmeasure.org";
const LOCAL_LAB: &str = "https://lab.hospital.example.org/codes";
const SNOMED: &str = "http://snomed.info/sct";

/// The surroundings of one patient, by file.
#[derive(Debug, Default)]
pub struct Surroundings {
    pub observation_lines: Vec<String>,
    pub encounters: Vec<Value>,
    pub medication_requests: Vec<Value>,
    pub diagnostic_reports: Vec<Value>,
    pub conditions: Vec<Value>,
    pub procedures: Vec<Value>,
    pub patients: Vec<Value>,
}

/// A laboratory test: LOINC code, name, local code, unit, and a plausible range.
struct LabTest {
    loinc: &'static str,
    name: &'static str,
    local: &'static str,
    unit: &'static str,
    low: f64,
    high: f64,
}

const LABS: [LabTest; 13] = [
    LabTest {
        loinc: "718-7",
        name: "Hemoglobin [Mass/volume] in Blood",
        local: "HB",
        unit: "g/dL",
        low: 8.0,
        high: 17.0,
    },
    LabTest {
        loinc: "6690-2",
        name: "Leukocytes [#/volume] in Blood",
        local: "WBC",
        unit: "10*3/uL",
        low: 2.0,
        high: 15.0,
    },
    LabTest {
        loinc: "777-3",
        name: "Platelets [#/volume] in Blood",
        local: "PLT",
        unit: "10*3/uL",
        low: 40.0,
        high: 400.0,
    },
    LabTest {
        loinc: "2951-2",
        name: "Sodium [Moles/volume] in Serum or Plasma",
        local: "NA",
        unit: "mmol/L",
        low: 128.0,
        high: 146.0,
    },
    LabTest {
        loinc: "2823-3",
        name: "Potassium [Moles/volume] in Serum or Plasma",
        local: "K",
        unit: "mmol/L",
        low: 3.1,
        high: 5.6,
    },
    LabTest {
        loinc: "2160-0",
        name: "Creatinine [Mass/volume] in Serum or Plasma",
        local: "CREA",
        unit: "mg/dL",
        low: 0.5,
        high: 2.5,
    },
    LabTest {
        loinc: "1742-6",
        name: "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        local: "ALT",
        unit: "U/L",
        low: 8.0,
        high: 180.0,
    },
    LabTest {
        loinc: "1920-8",
        name: "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        local: "AST",
        unit: "U/L",
        low: 10.0,
        high: 220.0,
    },
    LabTest {
        loinc: "6768-6",
        name: "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        local: "ALP",
        unit: "U/L",
        low: 40.0,
        high: 400.0,
    },
    LabTest {
        loinc: "2324-2",
        name: "Gamma glutamyl transferase [Enzymatic activity/volume] in Serum or Plasma",
        local: "GGT",
        unit: "U/L",
        low: 10.0,
        high: 600.0,
    },
    LabTest {
        loinc: "6301-6",
        name: "INR in Platelet poor plasma by Coagulation assay",
        local: "INR",
        unit: "{INR}",
        low: 0.9,
        high: 2.4,
    },
    LabTest {
        loinc: "2345-7",
        name: "Glucose [Mass/volume] in Serum or Plasma",
        local: "GLU",
        unit: "mg/dL",
        low: 70.0,
        high: 260.0,
    },
    LabTest {
        loinc: "1988-5",
        name: "C reactive protein [Mass/volume] in Serum or Plasma",
        local: "CRP",
        unit: "mg/L",
        low: 0.5,
        high: 120.0,
    },
];

/// Notes as laboratories and wards write them, in several languages and scripts.
const NOTES: [&str; 6] = [
    "Hämolytische Probe – Wiederholung empfohlen",
    "Prélèvement tardif ; résultat à confirmer",
    "採血が遅れました",
    "Пациент натощак",
    "Muestra lipémica: interpretar con precaución",
    "Ωmega-3 supplement noted ✓",
];

/// Texts that mention a monitored code where it does not make the resource one the job uses.
const MENTIONS: [&str; 3] = ["34444-0", "1834-1", "1751-7"];

fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn category(code: &str) -> Value {
    json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]}])
}

/// A resource as one line with `resourceType` first, as FHIR servers write it (serde_json
/// orders keys alphabetically).
pub fn type_first(resource: &Value) -> String {
    let (Some(kind), Some(map)) = (resource["resourceType"].as_str(), resource.as_object()) else {
        return resource.to_string();
    };
    let mut rest = map.clone();
    rest.remove("resourceType");
    let rest = Value::Object(rest).to_string();
    match rest.strip_prefix('{') {
        Some("}") => format!("{{\"resourceType\":{}}}", Value::from(kind)),
        Some(body) => format!("{{\"resourceType\":{},{body}", Value::from(kind)),
        None => resource.to_string(),
    }
}

/// Writes a resource as one line, `resourceType` first, with every non-ASCII character as a
/// `\u` escape (as many export tools do) when `ascii_only`.
fn line(resource: &Value, ascii_only: bool) -> String {
    let text = type_first(resource);
    if !ascii_only || text.is_ascii() {
        return text;
    }
    let mut escaped = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        if c.is_ascii() {
            escaped.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    escaped
}

/// Builds the surroundings of one patient.
struct Surrounder<'a> {
    rng: ChaCha8Rng,
    patient_id: &'a str,
    next: usize,
    out: Surroundings,
}

impl Surrounder<'_> {
    fn id(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{}-{kind}-{}", self.patient_id, self.next)
    }

    fn subject(&self) -> Value {
        json!({"reference": format!("Patient/{}", self.patient_id)})
    }

    /// One Observation of another code at about `at`, of a kind drawn at random.
    fn other_observation(&mut self, at: DateTime<Utc>, encounter: &str) -> String {
        let id = self.id("obs");
        let at = at + Duration::minutes(self.rng.gen_range(-240..240));
        let mut resource = match self.rng.gen_range(0..20) {
            0..=4 => self.vital_sign(&id, at),
            5..=17 => self.lab(&id, at),
            _ => self.social_history(&id, at),
        };
        resource["encounter"] = json!({"reference": format!("Encounter/{encounter}")});
        resource["meta"] =
            json!({"lastUpdated": instant(at + Duration::hours(2)), "versionId": "1"});
        if self.rng.gen_bool(0.08) {
            let note = *NOTES.choose(&mut self.rng).expect("notes");
            resource["note"] = json!([{"text": note}]);
        }
        if self.rng.gen_bool(0.01) {
            // A mention of a monitored code that does not make this an Observation of it.
            let code = *MENTIONS.choose(&mut self.rng).expect("mentions");
            resource["derivedFrom"] =
                json!([{"reference": format!("Observation/{id}-source"), "display": code}]);
        }
        let ascii_only = self.rng.gen_bool(0.02);
        line(&resource, ascii_only)
    }

    fn vital_sign(&mut self, id: &str, at: DateTime<Utc>) -> Value {
        let mut resource = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "category": category("vital-signs"),
            "subject": self.subject(), "effectiveDateTime": instant(at),
        });
        let quantity = |value: f64, unit: &str, code: &str| json!({"value": value, "unit": unit, "system": UCUM, "code": code});
        match self.rng.gen_range(0..5) {
            0 => {
                resource["code"] = json!({"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure"});
                let systolic = self.rng.gen_range(95..175) as f64;
                let diastolic = self.rng.gen_range(55..105) as f64;
                resource["component"] = json!([
                    {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                     "valueQuantity": quantity(systolic, "mmHg", "mm[Hg]")},
                    {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                     "valueQuantity": quantity(diastolic, "mmHg", "mm[Hg]")}
                ]);
            }
            1 => {
                resource["code"] = json!({"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]});
                resource["valueQuantity"] =
                    quantity(self.rng.gen_range(52..118) as f64, "beats/minute", "/min");
            }
            2 => {
                resource["code"] = json!({"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]});
                resource["valueQuantity"] =
                    quantity(round(self.rng.gen_range(48.0..115.0), 1), "kg", "kg");
            }
            3 => {
                resource["code"] = json!({"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}]});
                resource["valueQuantity"] =
                    quantity(round(self.rng.gen_range(36.0..39.2), 1), "°C", "Cel");
            }
            _ => {
                resource["code"] = json!({"coding": [
                    {"system": LOINC, "code": "59408-5", "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
                    {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"}]});
                resource["valueQuantity"] = quantity(self.rng.gen_range(88..100) as f64, "%", "%");
            }
        }
        resource
    }

    fn lab(&mut self, id: &str, at: DateTime<Utc>) -> Value {
        let test = LABS.choose(&mut self.rng).expect("labs");
        let value = round(self.rng.gen_range(test.low..test.high), 1);
        let middle = (test.low + test.high) / 2.0;
        let interpretation = if value > middle * 1.4 { "H" } else { "N" };
        json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "category": category("laboratory"),
            // The laboratory's own code first, LOINC second, as many laboratory systems send.
            "code": {"coding": [
                {"system": LOCAL_LAB, "code": test.local, "display": test.local},
                {"system": LOINC, "code": test.loinc, "display": test.name}], "text": test.name},
            "subject": self.subject(),
            "effectiveDateTime": instant(at),
            "issued": instant(at + Duration::hours(3)),
            "valueQuantity": quantity(value, test.unit),
            "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": interpretation}]}],
            "referenceRange": [{"low": {"value": test.low, "unit": test.unit}, "high": {"value": middle * 1.4, "unit": test.unit}, "text": "adult"}],
        })
    }

    fn social_history(&mut self, id: &str, at: DateTime<Utc>) -> Value {
        let (code, display) = [
            ("8517006", "Ex-smoker"),
            ("266919005", "Never smoked tobacco"),
            ("77176002", "Smoker"),
        ]
        .choose(&mut self.rng)
        .copied()
        .expect("statuses");
        json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "category": category("social-history"),
            "code": {"coding": [{"system": LOINC, "code": "72166-2", "display": "Tobacco smoking status"}]},
            "subject": self.subject(), "effectiveDateTime": instant(at),
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        })
    }

    fn encounter(&mut self, at: DateTime<Utc>) -> String {
        let id = self.id("enc");
        self.out.encounters.push(json!({
            "resourceType": "Encounter", "id": id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [{"coding": [{"system": SNOMED, "code": "185389009", "display": "Follow-up visit"}]}],
            "subject": self.subject(),
            "period": {"start": instant(at - Duration::hours(1)), "end": instant(at + Duration::hours(5))},
            "reasonCode": [{"text": "Surveillance after liver-directed therapy"}],
        }));
        id
    }

    fn diagnostic_report(&mut self, at: DateTime<Utc>, results: &[String]) {
        let id = self.id("report");
        let result: Vec<Value> = results
            .iter()
            .map(|r| json!({"reference": format!("Observation/{r}")}))
            .collect();
        self.out.diagnostic_reports.push(json!({
            "resourceType": "DiagnosticReport", "id": id, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": {"coding": [{"system": LOINC, "code": "24323-8", "display": "Comprehensive metabolic 2000 panel"}]},
            "subject": self.subject(), "effectiveDateTime": instant(at), "issued": instant(at + Duration::hours(4)),
            "result": result,
            "conclusion": "Siehe Einzelbefunde. Voir les résultats détaillés.",
        }));
    }

    fn medication_request(&mut self, at: DateTime<Utc>) {
        let id = self.id("medrx");
        let (code, display, dose) = [
            (
                "495881",
                "sorafenib 200 MG Oral Tablet",
                "400 mg twice daily",
            ),
            ("1719003", "lenvatinib 4 MG Oral Capsule", "8 mg once daily"),
            ("197361", "amlodipine 5 MG Oral Tablet", "5 mg once daily"),
            (
                "860975",
                "metformin 500 MG Oral Tablet",
                "500 mg twice daily",
            ),
        ]
        .choose(&mut self.rng)
        .copied()
        .expect("medications");
        self.out.medication_requests.push(json!({
            "resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": display}]},
            "subject": self.subject(), "authoredOn": instant(at),
            "dosageInstruction": [{"text": dose}],
        }));
    }

    /// Conditions and Procedures that are not HCC and not TARE.
    fn history(&mut self, at: DateTime<Utc>) {
        let id = self.id("cond");
        let (snomed, icd, display) = [
            ("38341003", "I10", "Essential hypertension"),
            ("44054006", "E11.9", "Type 2 diabetes mellitus"),
            ("19943007", "K74.60", "Cirrhosis of liver"),
        ]
        .choose(&mut self.rng)
        .copied()
        .expect("conditions");
        self.out.conditions.push(json!({
            "resourceType": "Condition", "id": id,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": snomed, "display": display},
                                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd}]},
            "subject": self.subject(), "recordedDate": instant(at),
        }));
        let id = self.id("proc");
        self.out.procedures.push(json!({
            "resourceType": "Procedure", "id": id, "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "74177", "display": "CT abdomen and pelvis with contrast"}]},
            "subject": self.subject(), "performedDateTime": instant(at + Duration::days(2)),
        }));
    }
}

/// The instants of a patient's monitored Observations.
fn monitored_instants(patient: &PatientResources) -> Vec<DateTime<Utc>> {
    patient
        .observations
        .iter()
        .filter_map(|o| o["effectiveDateTime"].as_str())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

/// The surroundings of a cohort patient (`patient`, number `n` of a cohort generated with
/// `seed`), and of one patient outside the cohort.
pub fn surround(patient: &PatientResources, patient_id: &str, seed: u64, n: usize) -> Surroundings {
    let rng = ChaCha8Rng::seed_from_u64(
        seed.rotate_left(17) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut s = Surrounder {
        rng,
        patient_id,
        next: 0,
        out: Surroundings::default(),
    };
    let instants = monitored_instants(patient);
    // One visit per distinct day of monitored results: an Encounter, the other results of the
    // day, a DiagnosticReport over them.
    let mut days: Vec<chrono::NaiveDate> = instants.iter().map(|t| t.date_naive()).collect();
    days.dedup();
    for (visit_index, day) in days.into_iter().enumerate() {
        let on_day: Vec<DateTime<Utc>> = instants
            .iter()
            .copied()
            .filter(|t| t.date_naive() == day)
            .collect();
        let at = on_day[0];
        let encounter = s.encounter(at);
        let mut results = Vec::new();
        for _ in 0..on_day.len() * OTHERS_PER_MONITORED {
            let text = s.other_observation(at, &encounter);
            results.push(format!("{}-obs-{}", patient_id, s.next));
            s.out.observation_lines.push(text);
        }
        s.diagnostic_report(at, &results[..results.len().min(12)]);
        if visit_index % 4 == 0 {
            s.medication_request(at);
        }
        if visit_index == 0 {
            s.history(at);
        }
    }
    // One patient outside the cohort: seen twice, with other results and two liver labs.
    let other_id = format!("{patient_id}-other");
    let start = instants.first().copied().unwrap_or_else(Utc::now);
    let mut o = Surrounder {
        rng: s.rng.clone(),
        patient_id: &other_id,
        next: 0,
        out: Surroundings::default(),
    };
    let birth = format!(
        "{}-0{}-1{}",
        o.rng.gen_range(1940..2000),
        o.rng.gen_range(1..10),
        o.rng.gen_range(0..10)
    );
    o.out.patients.push(json!({
        "resourceType": "Patient", "id": other_id,
        "birthDate": birth, "gender": "female",
        "name": [{"family": "Müller-Łukasik", "given": ["Zoë"]}],
    }));
    for visit in 0..2 {
        let at = start + Duration::days(visit * 45 + 3);
        let encounter = o.encounter(at);
        for _ in 0..(OTHERS_PER_MONITORED - 1) {
            let text = o.other_observation(at, &encounter);
            o.out.observation_lines.push(text);
        }
        let (code, display, value, unit) = match visit {
            0 => (
                "1751-7",
                "Albumin [Mass/volume] in Serum or Plasma",
                round(o.rng.gen_range(30.0..48.0), 1),
                "g/L",
            ),
            _ => (
                "1975-2",
                "Bilirubin.total [Mass/volume] in Serum or Plasma",
                round(o.rng.gen_range(4.0..30.0), 1),
                "umol/L",
            ),
        };
        let id = o.id("liver");
        o.out.observation_lines.push(line(
            &json!({
                "resourceType": "Observation", "id": id, "status": "final",
                "category": category("laboratory"),
                "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                "subject": o.subject(), "effectiveDateTime": instant(at),
                "valueQuantity": quantity(value, unit),
            }),
            false,
        ));
    }
    s.out.observation_lines.extend(o.out.observation_lines);
    s.out.encounters.extend(o.out.encounters);
    s.out.patients.extend(o.out.patients);
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_type_comes_first() {
        let resource = json!({"id": "1", "resourceType": "Observation", "code": {"text": "x"}});
        let text = type_first(&resource);
        assert!(
            text.starts_with(r#"{"resourceType":"Observation","#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), resource);
        assert_eq!(
            type_first(&json!({"resourceType": "Patient"})),
            r#"{"resourceType":"Patient"}"#
        );
    }

    #[test]
    fn escaped_lines_hold_the_same_json() {
        let resource = json!({"note": [{"text": "Hämolyse 採血 ✓ 𝄞"}]});
        let escaped = line(&resource, true);
        assert!(escaped.is_ascii(), "{escaped}");
        assert!(escaped.contains("\\u00e4"), "{escaped}");
        let back: Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, resource);
    }
}
