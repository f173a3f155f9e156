//! The command line: the five benchmarks, each with the flags the README
//! documents, and the test key that `mo` signs with, which is why this is
//! not the service binary.

use std::process::Command;

use crate::helpers::BINARY;

fn help(args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .arg("--help")
        .output()
        .expect("taskledger-bench runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

#[test]
fn help_lists_the_five_benchmarks_and_their_flags() {
    let top = help(&[]);
    assert!(top.contains("Usage: taskledger-bench"), "{top}");
    assert!(top.contains("--database-url"), "{top}");
    assert!(top.contains("DATABASE_URL"), "{top}");
    for (benchmark, flags) in [
        (
            "append",
            &[
                "--writers",
                "--batch",
                "--seconds",
                "--no-group-commit",
                "--streams-per-writer",
            ][..],
        ),
        (
            "api",
            &[
                "--connections",
                "--seconds",
                "--visible-samples",
                "--visible-clients",
            ][..],
        ),
        (
            "tasks",
            &[
                "--slots",
                "--tasks",
                "--relay-events",
                "--executor",
                "--rounds",
                "--amqp-url",
                "--amqp-prefix",
            ][..],
        ),
        ("mo", &["--rate", "--seconds", "--devices"][..]),
        ("rebuild", &["--tasks", "--batch"][..]),
        ("verify", &["--events", "--tail", "--runs"][..]),
    ] {
        assert!(
            top.lines()
                .any(|line| line.trim_start().starts_with(&format!("{benchmark} "))),
            "{benchmark} is not listed: {top}"
        );
        let text = help(&[benchmark]);
        for flag in flags {
            assert!(text.contains(flag), "{benchmark} {flag}: {text}");
        }
        // The database flags are global: they may follow the benchmark.
        assert!(text.contains("--database-url"), "{benchmark}: {text}");
    }
}

#[test]
fn the_bench_binary_carries_the_test_key_it_signs_with() {
    // The counterpart of the service binary's test (tests/it/process.rs in
    // the root crate), and the proof that its search would find the key.
    let bytes = std::fs::read(BINARY).expect("the binary is readable");
    let binary = String::from_utf8_lossy(&bytes);
    let key = include_str!("../../../tests/fixtures/rockblock/mo-test-key.pem");
    let body_line = key.lines().nth(2).expect("a PEM body");
    assert!(
        binary.contains("PRIVATE KEY-----") && binary.contains(body_line),
        "taskledger-bench no longer embeds the MO test key; is `mo` still signing?"
    );
}
