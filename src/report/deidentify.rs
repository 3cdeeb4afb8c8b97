//! `--deidentify`: the report for an audit committee. Names and identifiers (patient ids, MRNs,
//! resource ids, which often embed a patient id) become stable pseudonyms, a keyed hash
//! (HMAC-SHA256) with a site secret: the same patient gets the same pseudonym in every report
//! made with the same secret, and nobody without the secret can tell who it is. Dates and
//! values are kept; free-text notes are left out (they may name anyone).

use super::Report;
use crate::config::ReportConfig;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why `--deidentify` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "--deidentify needs a pseudonym secret: set [report] pseudonym_secret_env (the name of an \
         environment variable holding it) or [report] pseudonym_secret_file in the configuration"
    )]
    NotConfigured,
    #[error("--deidentify: the environment variable {0} named by [report] pseudonym_secret_env is not set or empty")]
    EnvMissing(String),
    #[error("--deidentify: cannot read [report] pseudonym_secret_file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("--deidentify: the pseudonym secret is shorter than 16 bytes")]
    TooShort,
}

/// The keyed hash that makes pseudonyms.
pub struct Pseudonyms {
    key: Vec<u8>,
}

impl Pseudonyms {
    /// The secret from the environment variable named in the configuration, else its file.
    pub fn from_config(config: &ReportConfig) -> Result<Pseudonyms, SecretError> {
        let secret = if let Some(var) = &config.pseudonym_secret_env {
            match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => value.trim().as_bytes().to_vec(),
                _ => return Err(SecretError::EnvMissing(var.clone())),
            }
        } else if let Some(path) = &config.pseudonym_secret_file {
            let text = std::fs::read(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?;
            text.trim_ascii().to_vec()
        } else {
            return Err(SecretError::NotConfigured);
        };
        if secret.len() < 16 {
            return Err(SecretError::TooShort);
        }
        Ok(Pseudonyms { key: secret })
    }

    /// `PREFIX-` and 12 hex digits (48 bits) of HMAC-SHA256(secret, kind ":" value): the kind
    /// keeps an MRN and a patient id of the same text apart.
    pub fn of(&self, prefix: &str, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(prefix.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}-{hex}")
    }

    /// A FHIR reference `Type/id` with its id pseudonymised.
    fn reference(&self, reference: &str) -> String {
        match reference.split_once('/') {
            Some((kind, id)) => format!("{kind}/{}", self.of("res", id)),
            None => self.of("res", reference),
        }
    }

    /// Replaces every name and identifier of the report, in place.
    pub fn apply(&self, report: &mut Report) {
        for p in &mut report.flagged {
            p.name = Some(format!("Patient {}", self.of("name", &p.patient_id)));
            p.mrn = p.mrn.as_deref().map(|mrn| self.of("mrn", mrn));
            p.patient_id = self.of("pt", &p.patient_id);
            if let Some(review) = &mut p.review {
                review.note = review.note.as_ref().map(|_| "(note left out)".into());
            }
            for series in &mut p.chart.series {
                for point in &mut series.points {
                    point.observation = self.of("res", &point.observation);
                    point.note = None;
                }
            }
        }
        for bar in &mut report.programme.waterfall {
            bar.patient_id = self.of("pt", &bar.patient_id);
        }
        for entry in report.trail.iter_mut().flatten() {
            entry.patient_id = self.of("pt", &entry.patient_id);
            entry.identifier = self.of("flag", &entry.identifier);
            entry.resource_id = self.of("res", &entry.resource_id);
            entry.annotation = entry.annotation.as_ref().map(|_| "(note left out)".into());
            entry.evidence = entry.evidence.iter().map(|r| self.reference(r)).collect();
        }
        for counts in report.quality.by_type.values_mut() {
            for count in counts.left_out.values_mut() {
                for example in &mut count.examples {
                    example.resource = self.of("res", &example.resource);
                    example.detail = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(secret: &str) -> Pseudonyms {
        Pseudonyms {
            key: secret.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_pseudonym_is_stable_per_secret_and_kind() {
        let a = keyed("0123456789abcdef-site-a");
        assert_eq!(a.of("pt", "demo-01"), a.of("pt", "demo-01"));
        assert_ne!(a.of("pt", "demo-01"), a.of("mrn", "demo-01"));
        assert_ne!(
            a.of("pt", "demo-01"),
            keyed("0123456789abcdef-site-b").of("pt", "demo-01")
        );
        let pseudonym = a.of("pt", "demo-01");
        assert_eq!(pseudonym.len(), "pt-".len() + 12);
        assert!(pseudonym[3..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_pseudonym_is_the_documented_hmac_sha256() {
        // HMAC-SHA256(key "key", "pt:The quick brown fox") computed independently with
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"key", b"pt:The quick brown fox",
        // hashlib.sha256).hexdigest()[:12])'.
        assert_eq!(
            keyed("key").of("pt", "The quick brown fox"),
            "pt-9a7d3f53cc07"
        );
    }
}
