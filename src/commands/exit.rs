//! The exit codes: one table, the source of README's "Exit codes" table (a test keeps them
//! equal) and of the table `--help` prints.

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const CONFIG: u8 = 2;
pub const SOURCE: u8 = 3;
pub const PATIENTS_FAILED: u8 = 4;
pub const EVALUATION_FAILED: u8 = 5;
pub const MASS_CANCEL: u8 = 6;
pub const LOCKED: u8 = 7;
pub const NOTHING_USABLE: u8 = 8;
pub const INTERRUPTED: u8 = 130;

/// One exit code: its number, a short name (`--help`, the metrics' labels) and what it means.
pub struct ExitCodeDoc {
    pub code: u8,
    pub name: &'static str,
    /// One line, for `--help`.
    pub summary: &'static str,
    /// The details, for README.
    pub meaning: &'static str,
}

pub const TABLE: [ExitCodeDoc; 10] = [
    ExitCodeDoc {
        code: SUCCESS,
        summary: "success",
        name: "success",
        meaning: "",
    },
    ExitCodeDoc {
        code: FAILURE,
        summary: "the run failed (an output not written, a resource not built, a shard missing or incomplete)",
        name: "failure",
        meaning: "an output could not be written (a full disk: nothing is published and `--out` shows the previous outputs, as the message says), a resource could not be built, `merge` found a shard missing or incomplete, or a part file that is not the one its shard's summary lists",
    },
    ExitCodeDoc {
        code: CONFIG,
        summary: "configuration error, an option that cannot apply, or credentials missing or refused (HTTP 401/403, token endpoint)",
        name: "config",
        meaning: "the config file or a `TMM_*` variable (the message names the file or variable and the key), an option that cannot apply to the chosen source, a date not written `YYYY-MM-DD`, an invalid or plain-http server URL, an unreadable `ca_file` or client certificate, a bad `--shard` or `--as-of`, a cohort file with a malformed line, an identifier or `--group` without a server, `check` without a server, an unreadable state file, missing or unreadable credentials, credentials the server or the token endpoint refused (HTTP 401 or 403, an OAuth error from the token endpoint), an `--out` folder holding files this job did not write (left untouched); `merge` given parts of different runs (the field that differs, as-of date, configuration digest, tool version or source, is named with each part's value) or one shard twice (given in two parts, or copied in under another shard's name: its file names, its `shard` or its `run_id` give it away, both parts named), or an `--out` that is one of the parts it merges (a folder given, a `shard-I-of-N` set in one, or a link to either; left untouched)",
    },
    ExitCodeDoc {
        code: SOURCE,
        summary: "source unavailable (folder or server unreadable, an answer not as FHIR says, a limit passed)",
        name: "source",
        meaning: "a folder missing, without Bulk Data files or Observation data, a file unreadable, a gzip stream corrupt, a file that became a FIFO or device after the folder was listed, a file that stops answering (`ingest.max_read_minutes`, the message names the file); a server or token endpoint that does not answer or answers 429 or 5xx after the retries (a connection refused after five attempts, no connection within `server.connect_timeout_secs`, no answer within `server.first_byte_timeout_secs`: one line naming the kind of request, the host and the cause, e.g. `error: Observation search on fhir.example.org: no answer within 60 s`), a server certificate this machine refuses (unknown issuer, expired, another name: not retried, the line says what to do), a client certificate the server refuses (mutual TLS: not retried either), a search or export answered with an error (other than 401/403) or not with a Bundle, an answer over `server.max_response_bytes`, a search past `server.max_pages_per_search` or with a repeating `next` link, reading past `server.max_read_minutes`, an export not ready in time or with an invalid manifest, a Bulk Data file over `server.max_download_bytes`; a URL the server named that breaks the transport rules of \"Using a FHIR server\"; a server whose CapabilityStatement is not FHIR R4 or does not declare a search or interaction the run needs (named); `check` with a check failed",
    },
    ExitCodeDoc {
        code: PATIENTS_FAILED,
        summary: "some patients' write-back failed; the others were written",
        name: "write_back_failed",
        meaning: "stderr says how many (`error: the write-back of 2 patients failed (listed with the server's answer under write_back.failed in run-summary.json); the others were written`: no patient identifier above debug level, `-v` logs one line per patient); each is listed under `write_back.failed` in `run-summary.json` with the server's OperationOutcome text (a 4xx answer to that patient's transaction), or because a DetectedIssue on the server has no version to guard an update with; the incremental state is not moved on. A transaction answered 401 or 403 ends the write-back at once with exit 2, one answered 429 or 5xx after the retries or not answered at all with exit 3: the server, not the patient, failed, and the other patients are not tried in turn",
    },
    ExitCodeDoc {
        code: EVALUATION_FAILED,
        summary: "the evaluation of some patients failed; everyone else was evaluated and written",
        name: "evaluation_failed",
        meaning: "they are listed under `patients.evaluation_failed` in `run-summary.json`; nothing of theirs on the server was touched; the state is not moved on",
    },
    ExitCodeDoc {
        code: MASS_CANCEL,
        summary: "the write-back safety valve stopped the run; nothing was written to the server",
        name: "mass_cancel",
        meaning: "it would have cancelled too many of the job's DetectedIssues (see \"What is written back\"); nothing was written to the server; the local outputs are there for review",
    },
    ExitCodeDoc {
        code: LOCKED,
        summary: "another run holds the output folder or the state file",
        name: "locked",
        meaning: "the message names its process; nothing was touched",
    },
    ExitCodeDoc {
        code: NOTHING_USABLE,
        summary: "read, but nothing usable: no patient or no accepted Observation (unless --allow-empty)",
        name: "nothing_usable",
        meaning: "a full or cohort run found no patient at all, or no accepted Observation (say, every code under an unknown system); nothing is published (`--allow-empty` accepts it and exits 0); `explain --patient ID` for a patient no resource of the source refers to",
    },
    ExitCodeDoc {
        code: INTERRUPTED,
        summary: "stopped by SIGINT or SIGTERM; outputs and state as they were",
        name: "interrupted",
        meaning: "within a fraction of a second even while a read blocks or a request waits on a server that does not answer (the request, a retry's wait, a `Retry-After` wait and a Bulk Data status poll are dropped at once); `--out` shows the previous outputs (or, when the signal came after they were published, this run's whole set), no temporary file left, the state not moved on (a second signal ends the process at once)",
    },
];

/// The short name of a code (`unknown` for a code not in the table).
pub fn name(code: u8) -> &'static str {
    TABLE
        .iter()
        .find(|doc| doc.code == code)
        .map_or("unknown", |doc| doc.name)
}

/// The table as `--help` prints it after the options.
pub fn help() -> String {
    let mut text = String::from("Exit codes (README.md \"Exit codes\" says more):\n");
    for doc in &TABLE {
        text.push_str(&format!("  {:>3}  {}\n", doc.code, doc.summary));
    }
    text
}

/// The table as README.md holds it under "Exit codes".
pub fn markdown() -> String {
    let mut text = String::from("| code | name | meaning |\n|---|---|---|\n");
    for doc in &TABLE {
        text.push_str(&format!(
            "| {} | `{}` | **{}**{} |\n",
            doc.code,
            doc.name,
            doc.summary,
            match doc.meaning.is_empty() {
                true => String::new(),
                false => format!(": {}", doc.meaning),
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once() {
        let mut codes: Vec<u8> = TABLE.iter().map(|doc| doc.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 130]);
    }

    #[test]
    fn readme_holds_the_exit_code_table_of_the_code() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown()),
            "README.md's exit-code table differs from src/commands/exit.rs; it should read:\n{}",
            markdown()
        );
    }
}
