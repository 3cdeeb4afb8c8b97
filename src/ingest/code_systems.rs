//! Code systems by every name they go by (docs/rules.md "Code systems"). Real sources spell
//! one system several ways: its canonical URI, the `urn:oid:` form, an http or https spelling.
//! Matching works on a system's identity, so `urn:oid:2.16.840.1.113883.6.285|S2095` and
//! `https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets|S2095` are the same code. A site
//! adds names in `[code_systems.aliases]`; a system named only in a site's code lists (a local
//! laboratory system) is a system of its own.

use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

/// A code system the job knows by several names.
pub struct KnownSystem {
    /// Short name for messages.
    pub title: &'static str,
    pub canonical: &'static str,
    pub aliases: &'static [&'static str],
}

/// The built-in table: the canonical URI first, then the names real sources use for it.
pub const BUILT_IN: [KnownSystem; 6] = [
    KnownSystem {
        title: "LOINC",
        canonical: "http://loinc.org",
        aliases: &["urn:oid:2.16.840.1.113883.6.1", "https://loinc.org"],
    },
    KnownSystem {
        title: "SNOMED CT",
        canonical: "http://snomed.info/sct",
        aliases: &["urn:oid:2.16.840.1.113883.6.96", "https://snomed.info/sct"],
    },
    KnownSystem {
        title: "ICD-10-CM",
        canonical: "http://hl7.org/fhir/sid/icd-10-cm",
        aliases: &[
            "urn:oid:2.16.840.1.113883.6.90",
            "https://hl7.org/fhir/sid/icd-10-cm",
        ],
    },
    KnownSystem {
        title: "CPT",
        canonical: "http://www.ama-assn.org/go/cpt",
        aliases: &[
            "urn:oid:2.16.840.1.113883.6.12",
            "https://www.ama-assn.org/go/cpt",
        ],
    },
    KnownSystem {
        title: "HCPCS Level II",
        canonical: "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        aliases: &[
            "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
            "urn:oid:2.16.840.1.113883.6.285",
            // The retired OID of "HCFA Procedure Codes (HCPCS)": older feeds still send it.
            "urn:oid:2.16.840.1.113883.6.14",
        ],
    },
    KnownSystem {
        title: "UCUM",
        canonical: "http://unitsofmeasure.org",
        aliases: &[
            "urn:oid:2.16.840.1.113883.6.8",
            "https://unitsofmeasure.org",
        ],
    },
];

const UCUM: &str = "http://unitsofmeasure.org";

/// One code system, whatever it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemId(u32);

/// Every name the job accepts, each resolved to one system.
#[derive(Debug, Clone)]
pub struct CodeSystems {
    by_name: FxHashMap<String, SystemId>,
    /// Per system: its canonical name, then its aliases.
    names: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeSystemError {
    #[error("{alias:?} is named as an alias of both {first:?} and {second:?}")]
    AliasTwice {
        alias: String,
        first: String,
        second: String,
    },
    #[error("an empty code system name")]
    Empty,
}

impl CodeSystems {
    /// The built-in table with a site's aliases added. A key of `extra` that is a name of a
    /// built-in system adds to that system; any other key is a new system (the key its
    /// canonical name).
    pub fn new(extra: &BTreeMap<String, Vec<String>>) -> Result<CodeSystems, CodeSystemError> {
        let mut systems = CodeSystems {
            by_name: FxHashMap::default(),
            names: Vec::new(),
        };
        for known in &BUILT_IN {
            let id = systems.add_system(known.canonical)?;
            for alias in known.aliases {
                systems.add_alias(id, alias)?;
            }
        }
        for (system, aliases) in extra {
            let id = match systems.identify(system) {
                Some(id) => id,
                None => systems.add_system(system)?,
            };
            for alias in aliases {
                systems.add_alias(id, alias)?;
            }
        }
        Ok(systems)
    }

    /// The built-in table alone.
    pub fn built_in() -> CodeSystems {
        // The table has no name twice (a unit test checks it).
        CodeSystems::new(&BTreeMap::new()).unwrap_or(CodeSystems {
            by_name: FxHashMap::default(),
            names: Vec::new(),
        })
    }

    fn add_system(&mut self, canonical: &str) -> Result<SystemId, CodeSystemError> {
        let id = SystemId(self.names.len() as u32);
        self.names.push(Vec::new());
        self.add_alias(id, canonical)?;
        Ok(id)
    }

    fn add_alias(&mut self, id: SystemId, name: &str) -> Result<(), CodeSystemError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(CodeSystemError::Empty);
        }
        match self.by_name.get(name) {
            Some(existing) if *existing == id => Ok(()),
            Some(existing) => Err(CodeSystemError::AliasTwice {
                alias: name.to_owned(),
                first: self.canonical(*existing).to_owned(),
                second: self.canonical(id).to_owned(),
            }),
            None => {
                self.by_name.insert(name.to_owned(), id);
                self.names[id.0 as usize].push(name.to_owned());
                Ok(())
            }
        }
    }

    /// The system a name means, if the job knows it.
    pub fn identify(&self, name: &str) -> Option<SystemId> {
        self.by_name.get(name).copied()
    }

    /// The system of a configured code: a name the job does not know yet becomes a system of
    /// its own (a site's local code system).
    pub fn intern(&mut self, name: &str) -> Result<SystemId, CodeSystemError> {
        match self.identify(name) {
            Some(id) => Ok(id),
            None => self.add_system(name),
        }
    }

    pub fn canonical(&self, id: SystemId) -> &str {
        &self.names[id.0 as usize][0]
    }

    /// Every name of the system, the canonical one first.
    pub fn names(&self, id: SystemId) -> &[String] {
        &self.names[id.0 as usize]
    }

    /// Whether a `Quantity.system` names UCUM (no system at all counts as UCUM: the `code` is
    /// then read as a UCUM code, the common case of senders that leave it out).
    pub fn is_ucum(&self, name: Option<&str>) -> bool {
        match name {
            None => true,
            Some(name) => self.identify(name) == self.identify(UCUM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_name_means_its_system() {
        let systems = CodeSystems::new(&BTreeMap::new()).unwrap();
        for known in &BUILT_IN {
            let id = systems.identify(known.canonical).unwrap();
            for alias in known.aliases {
                assert_eq!(systems.identify(alias), Some(id), "{alias}");
            }
            assert_eq!(systems.canonical(id), known.canonical);
        }
        assert_ne!(
            systems.identify("http://loinc.org"),
            systems.identify("http://snomed.info/sct")
        );
        assert_eq!(systems.identify("http://example.org/lab"), None);
    }

    #[test]
    fn a_site_alias_joins_its_system_and_a_new_key_is_a_new_system() {
        let extra = BTreeMap::from([
            (
                "urn:oid:2.16.840.1.113883.6.12".to_owned(),
                vec!["http://hospital.example/cpt".to_owned()],
            ),
            (
                "http://hospital.example/lab".to_owned(),
                vec!["urn:oid:1.2.3.4".to_owned()],
            ),
        ]);
        let systems = CodeSystems::new(&extra).unwrap();
        assert_eq!(
            systems.identify("http://hospital.example/cpt"),
            systems.identify("http://www.ama-assn.org/go/cpt")
        );
        let lab = systems.identify("urn:oid:1.2.3.4").unwrap();
        assert_eq!(systems.canonical(lab), "http://hospital.example/lab");
    }

    #[test]
    fn one_alias_for_two_systems_is_refused() {
        let extra = BTreeMap::from([(
            "http://loinc.org".to_owned(),
            vec!["http://snomed.info/sct".to_owned()],
        )]);
        assert_eq!(
            CodeSystems::new(&extra).unwrap_err(),
            CodeSystemError::AliasTwice {
                alias: "http://snomed.info/sct".into(),
                first: "http://snomed.info/sct".into(),
                second: "http://loinc.org".into(),
            }
        );
    }

    #[test]
    fn ucum_by_any_name_or_none() {
        let systems = CodeSystems::new(&BTreeMap::new()).unwrap();
        assert!(systems.is_ucum(None));
        assert!(systems.is_ucum(Some("urn:oid:2.16.840.1.113883.6.8")));
        assert!(!systems.is_ucum(Some("http://loinc.org")));
        assert!(!systems.is_ucum(Some("http://example.org/units")));
    }
}
