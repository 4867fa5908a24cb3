//! `foresight backtest` with bad input, as a user runs it (the binary, with RUST_BACKTRACE=1 as on many
//! machines): a typo, a wrong kind or apiVersion, a file that is not YAML, a value out of range, a missing
//! directory or a duration the policy grammar rejects is one clear message on stderr and exit code 1 (2 for a
//! command-line error), never a stack trace and never a silent run.

use std::{path::Path, process::Command};

use foresight_e2e::harness::foresight_binary;

const HEADER: &str = "apiVersion: autoscaling.foresight.dev/v1alpha1\nkind: ScalingPolicy\n";

/// A valid policy body (after `apiVersion` and `kind`), with `{extra}` lines to edit it.
fn policy(metadata_and_spec: &str) -> String {
    format!("{HEADER}{metadata_and_spec}")
}

const GOOD_SPEC: &str = "metadata:
  name: web
spec:
  targetRef:
    name: web
  minReplicas: 2
  maxReplicas: 10
  metrics:
    - name: cpu
      cpu: {}
  policies:
    threshold:
      - metric: cpu
        scaleUpAbove: 70
        scaleDownBelow: 30
";

/// Runs `foresight backtest` with `args`; returns (exit code, stderr).
fn backtest(dir: &Path, args: &[&str]) -> (i32, String) {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/traces/rds_cpu.csv");
    let mut command = Command::new(foresight_binary().expect("foresight binary"));
    command.current_dir(dir).env("RUST_BACKTRACE", "1").arg("backtest");
    if !args.contains(&"--trace-dir") {
        command.arg("--trace").arg(trace);
    }
    let out = command.args(args).output().expect("foresight runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("Stack backtrace") && !stderr.contains("stack backtrace"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// Writes `text` to `name` in `dir` and runs a backtest of it: (exit code, stderr).
fn run_policy(dir: &Path, name: &str, text: &str) -> (i32, String) {
    std::fs::write(dir.join(name), text).expect("write policy");
    backtest(dir, &["--policy", name, "--compare", ""])
}

#[test]
fn a_typo_in_a_policy_is_an_error_with_its_path_line_and_the_nearest_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_policy(dir.path(), "good.yaml", &policy(GOOD_SPEC));
    assert_eq!(code, 0, "the untouched policy runs: {stderr}");

    let typo = policy(&GOOD_SPEC.replace("scaleUpAbove", "scaleUpAbvoe").replace("minReplicas", "minReplica"));
    let (code, stderr) = run_policy(dir.path(), "typo.yaml", &typo);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        "error: policy typo.yaml: line 8: unknown field spec.minReplica (did you mean minReplicas?)\n\
         line 16: unknown field spec.policies.threshold[0].scaleUpAbvoe (did you mean scaleUpAbove?)\n"
    );
}

#[test]
fn a_wrong_kind_or_api_version_names_what_was_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) =
        run_policy(dir.path(), "kind.yaml", &policy(GOOD_SPEC).replace("ScalingPolicy", "ScalingPolicyy"));
    assert_eq!(
        (code, stderr.as_str()),
        (1, "error: policy kind.yaml: line 2: expected kind ScalingPolicy, found ScalingPolicyy\n")
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n";
    let (code, stderr) = run_policy(dir.path(), "cm.yaml", cm);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "error: policy cm.yaml: line 2: expected kind ScalingPolicy, found ConfigMap\n")
    );

    let v1 = policy(GOOD_SPEC).replace("v1alpha1", "v1");
    let (code, stderr) = run_policy(dir.path(), "v1.yaml", &v1);
    assert_eq!(
        (code, stderr.as_str()),
        (
            1,
            "error: policy v1.yaml: line 1: expected apiVersion autoscaling.foresight.dev/v1alpha1, found autoscaling.foresight.dev/v1\n"
        )
    );
}

#[test]
fn an_invalid_value_is_reported_once_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text =
        policy(&GOOD_SPEC.replace("minReplicas: 2", "minReplicas: 0").replace("maxReplicas: 10", "maxReplicas: 0"));
    let (code, stderr) = run_policy(dir.path(), "zero.yaml", &text);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "error: policy zero.yaml: line 9: maxReplicas must be at least 1, got 0\n")
    );
}

#[test]
fn a_file_that_is_not_a_policy_gets_a_short_excerpt_not_the_whole_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv: String = std::iter::once("timestamp,value\n".to_string())
        .chain((0..10_000).map(|i| format!("{},{}\n", 1_700_000_000 + i * 60, i % 97)))
        .collect();
    assert!(csv.len() > 100_000);
    let (code, stderr) = run_policy(dir.path(), "trace.csv", &csv);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.len() < 400, "a short message, not the file: {} bytes: {stderr}", stderr.len());
    assert!(
        stderr
            .starts_with("error: policy trace.csv: expected a ScalingPolicy (a YAML mapping), found \"timestamp,value"),
        "{stderr}"
    );

    let broken = format!("{HEADER}spec: [unclosed\n{}", "  x: 1\n".repeat(20_000));
    let (code, stderr) = run_policy(dir.path(), "broken.yaml", &broken);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: policy broken.yaml: "), "{stderr}");
    assert!(stderr.len() < 2_000, "a short message, not the file: {} bytes: {stderr}", stderr.len());
}

#[test]
fn directories_and_durations_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = backtest(dir.path(), &["--trace-dir", "/nope"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot read trace directory /nope: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    std::fs::write(dir.path().join("good.yaml"), policy(GOOD_SPEC)).expect("write");
    for bad in ["1minute", "5 m", "2minutes"] {
        let (code, stderr) = backtest(dir.path(), &["--policy", "good.yaml", "--startup-delay", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid duration {bad:?}: expected e.g. 15s, 2m, 1h30m or 7d")),
            "{bad}: {stderr}"
        );
    }
    let (code, stderr) = backtest(dir.path(), &["--policy", "good.yaml", "--startup-delay", "1m30s", "--compare", ""]);
    assert_eq!(code, 0, "{stderr}");
}
