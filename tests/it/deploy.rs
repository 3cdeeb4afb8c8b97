//! The deployment files in deploy/ are what the README says: parsed, and their commands parsed
//! by the job's own command line and their config by the job's own config reader.

use clap::Parser;
use serde_yaml::Value;
use std::path::Path;
use tare_marker_monitor::commands::{Cli, Command, LogFormat};
use tare_marker_monitor::config::Config;

fn deploy(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(path),
    )
    .unwrap()
}

fn kubernetes() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&deploy("kubernetes/tare-marker-monitor.yaml"))
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_kubernetes_cronjob_starts_an_indexed_job_with_one_pod_per_configured_shard() {
    let documents = kubernetes();
    let run = documents
        .iter()
        .find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == "tare-marker-monitor")
        .unwrap();
    assert_eq!(run["spec"]["concurrencyPolicy"], "Forbid");
    assert!(run["spec"]["timeZone"]
        .as_str()
        .is_some_and(|tz| tz.parse::<chrono_tz::Tz>().is_ok()));
    let job = &run["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    // The configuration is the environment: read by the job's own config reader.
    let settings: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let config = Config::load(None, settings).unwrap();
    assert!(config.schedule.state_file.is_some());
    assert!(config.server.base_url.is_some());
    let shards = u64::from(config.schedule.shard_count);
    assert_eq!(shards, 4);
    assert_eq!(job["completions"].as_u64(), Some(shards));
    assert_eq!(job["parallelism"].as_u64(), Some(shards));
    let cli = Cli::try_parse_from(
        std::iter::once("tare-marker-monitor".to_owned()).chain(args_of(container)),
    )
    .unwrap();
    let Command::Run(run) = cli.command else {
        panic!("the CronJob must run `run`")
    };
    // The shard comes from JOB_COMPLETION_INDEX, not from a fixed --shard.
    assert_eq!(run.shard, None);
    // The token comes from a Secret through the variable the config names.
    let token_variable = config.server.auth.token_env.clone().unwrap();
    let env = container["env"].as_sequence().unwrap();
    assert!(env.iter().any(
        |e| e["name"] == token_variable.as_str() && e["valueFrom"]["secretKeyRef"].is_mapping()
    ));

    let merge = documents
        .iter()
        .find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == "tare-marker-monitor-merge")
        .unwrap();
    let merge_cli = Cli::try_parse_from(std::iter::once("tare-marker-monitor".to_owned()).chain(
        args_of(&merge["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]),
    ))
    .unwrap();
    let Command::Merge(merge) = merge_cli.command else {
        panic!("the second CronJob must run `merge`")
    };
    assert_eq!(merge.parts, [run.out]);
}

/// `[Section]` -> key -> value of a systemd unit file.
fn unit_file(
    text: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let mut sections = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        sections
            .entry(current.clone())
            .or_insert_with(std::collections::BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
    }
    sections
}

#[test]
fn the_systemd_timer_starts_a_oneshot_service_whose_command_the_job_accepts() {
    let service = unit_file(&deploy("systemd/tare-marker-monitor.service"));
    assert_eq!(service["Service"]["Type"], "oneshot");
    assert_eq!(service["Service"]["UMask"], "0077");
    let exec = &service["Service"]["ExecStart"];
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/tare-marker-monitor"));
    let cli = Cli::try_parse_from(std::iter::once("tare-marker-monitor").chain(words)).unwrap();
    assert!(matches!(cli.command, Command::Run(_)));
    assert_eq!(cli.log_format, LogFormat::Json);

    let timer = unit_file(&deploy("systemd/tare-marker-monitor.timer"));
    assert_eq!(timer["Timer"]["OnCalendar"], "*-*-* 02:30:00");
    assert_eq!(timer["Timer"]["Persistent"], "true");
    assert_eq!(timer["Timer"]["Unit"], "tare-marker-monitor.service");
    assert_eq!(timer["Install"]["WantedBy"], "timers.target");
}

#[test]
fn the_systemd_unit_logs_at_info_and_feeds_the_textfile_collector() {
    let text = deploy("systemd/tare-marker-monitor.service");
    let environment: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect();
    assert!(environment.contains(&("TMM_LOG".to_owned(), "info".to_owned())));
    let config = Config::load(None, environment).unwrap();
    let textfile = config.metrics.textfile_path.unwrap();
    assert_eq!(
        textfile,
        std::path::Path::new("/var/lib/node_exporter/textfile_collector/tare_marker_monitor.prom")
    );
    // ProtectSystem=strict: the collector's folder must be writable.
    assert!(text.contains(&format!(
        "ReadWritePaths={}",
        textfile.parent().unwrap().display()
    )));
}
