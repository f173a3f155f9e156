use super::*;
use serde_json::{json, Map, Value};

use super::kind::Network;

const SAMPLE: &str = r#"
    [kinds.url-analysis]
    image = "thug:latest"
    command = ["thug", "-u", "{useragent}", "-r", "{referer}", ["-p", "{proxy}"], "{url}"]
    required_params = ["url"]
    optional_params = ["proxy"]
    defaults = { useragent = "winxpie60", referer = "about:blank" }
    timeout_seconds = 600
    max_attempts = 3
    network = "none"
    memory_mb = 1024

    [kinds.batch]
    image = "taskledger-test-busybox:latest"
    command = ["sh", "-c", "{script}"]
    required_params = ["script"]
"#;

fn params(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn the_shipped_default_configuration_loads_with_an_offline_demo() {
    let config = FileConfig::builtin();
    assert_eq!(
        config.kinds.keys().collect::<Vec<_>>(),
        ["batch", "demo", "page-analysis", "url-analysis"]
    );
    let demo = config.kind("demo").unwrap();
    assert!(demo.required_params.is_empty() && demo.required_inputs.is_empty());
    assert_eq!(demo.network, Network::None);
    assert_eq!(demo.argv(&Map::new()).last().unwrap(), "world");
    let page = config.kind("page-analysis").unwrap();
    assert_eq!(page.required_inputs, ["page.html"]);
    assert_eq!(page.network, Network::None);
    assert!(page
        .argv(&Map::new())
        .ends_with(&["/in/page.html".to_owned()]));
}

#[test]
fn inputs_are_checked_against_the_kind() {
    let config = FileConfig::builtin();
    let page = config.kind("page-analysis").unwrap();
    let digest = "a".repeat(64);
    let named = |names: &[&str]| -> BTreeMap<String, String> {
        names
            .iter()
            .map(|name| ((*name).to_owned(), digest.clone()))
            .collect()
    };
    assert!(page
        .check_inputs("page-analysis", &named(&["page.html"]))
        .is_ok());
    assert!(matches!(
        page.check_inputs("page-analysis", &named(&[])),
        Err(KindError::MissingInput { .. })
    ));
    assert!(matches!(
        page.check_inputs("page-analysis", &named(&["page.html", "x.js"])),
        Err(KindError::UnknownInput { .. })
    ));
    assert!(FileConfig::parse(
        "[kinds.k]\nimage = \"i\"\ncommand = [\"true\"]\nrequired_inputs = [\"../etc\"]\n"
    )
    .is_err());
}

#[test]
fn the_example_configuration_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/taskledger.example.toml");
    let config = FileConfig::load(&path).unwrap();
    assert_eq!(
        config.kinds.keys().collect::<Vec<_>>(),
        ["batch", "hpc-batch", "url-analysis"]
    );
    let hpc = config.kind("hpc-batch").unwrap();
    assert_eq!(hpc.executor, super::kind::Executor::Slurm);
    assert_eq!(
        hpc.slurm
            .as_ref()
            .and_then(|slurm| slurm.partition.as_deref()),
        Some("batch")
    );
    let argv = config
        .kind("url-analysis")
        .unwrap()
        .argv(&params(json!({ "url": "http://a.test" })));
    assert_eq!(
        argv,
        [
            "taskledger-thug",
            "url",
            "-u",
            "winxpie60",
            "-r",
            "about:blank",
            "-T",
            "300",
            "http://a.test"
        ]
    );
}

#[test]
fn parses_the_documented_shape_with_defaults() {
    let config = FileConfig::parse(SAMPLE).unwrap();
    let kind = config.kind("url-analysis").unwrap();
    assert_eq!(kind.network, Network::None);
    assert_eq!(
        (kind.timeout_seconds, kind.max_attempts, kind.memory_mb),
        (600, 3, 1024)
    );
    let batch = config.kind("batch").unwrap();
    assert_eq!(
        (batch.timeout_seconds, batch.max_attempts, batch.network),
        (600, 3, Network::None)
    );
}

#[test]
fn params_become_separate_arguments_never_a_shell_string() {
    let config = FileConfig::parse(SAMPLE).unwrap();
    let kind = config.kind("url-analysis").unwrap();
    let hostile = "http://x.test/; rm -rf / #";
    let argv = kind.argv(&params(json!({ "url": hostile, "proxy": "http://p:3128" })));
    assert_eq!(
        argv,
        [
            "thug",
            "-u",
            "winxpie60",
            "-r",
            "about:blank",
            "-p",
            "http://p:3128",
            hostile
        ]
    );
    // An absent optional parameter takes its whole group (the flag too),
    // so no empty argument or dangling flag is left.
    let argv = kind.argv(&params(
        json!({ "url": "http://a.test", "useragent": "win10" }),
    ));
    assert_eq!(
        argv,
        ["thug", "-u", "win10", "-r", "about:blank", "http://a.test"]
    );
}

#[test]
fn unknown_kinds_and_bad_params_name_the_problem() {
    let config = FileConfig::parse(SAMPLE).unwrap();
    let error = config.kind("nope").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown task kind \"nope\"; configured kinds: batch, url-analysis"
    );
    let kind = config.kind("url-analysis").unwrap();
    let error = kind
        .check_params("url-analysis", &params(json!({ "referer": "x" })))
        .unwrap_err();
    assert_eq!(
        error,
        KindError::MissingParam {
            kind: "url-analysis".into(),
            param: "url".into()
        }
    );
    let error = kind
        .check_params(
            "url-analysis",
            &params(json!({ "url": "u", "colour": "red" })),
        )
        .unwrap_err();
    assert!(
        matches!(error, KindError::UnknownParam { ref param, .. } if param == "colour"),
        "{error}"
    );
    let error = kind
        .check_params("url-analysis", &params(json!({ "url": ["a"] })))
        .unwrap_err();
    assert_eq!(
        error,
        KindError::NotScalar {
            param: "url".into()
        }
    );
    assert!(kind
        .check_params(
            "url-analysis",
            &params(json!({ "url": "u", "proxy": null }))
        )
        .is_ok());
}

#[test]
fn inconsistent_kinds_are_refused_at_load() {
    let undeclared = "[kinds.k]\nimage = \"i\"\ncommand = [\"run\", \"{target}\"]\n";
    let error = FileConfig::parse(undeclared).unwrap_err();
    assert!(format!("{error:#}").contains("{target}"), "{error:#}");
    let typo = "[kinds.k]\nimage = \"i\"\ncommand = [\"run\"]\ntimeout = 5\n";
    assert!(format!("{:#}", FileConfig::parse(typo).unwrap_err()).contains("unknown field"));
    let no_image = "[kinds.k]\nimage = \"\"\ncommand = [\"run\"]\n";
    assert!(format!("{:#}", FileConfig::parse(no_image).unwrap_err()).contains("image is empty"));
}

#[test]
fn the_shipped_limits_and_their_defaults() {
    let shipped = FileConfig::builtin().limits;
    assert_eq!(shipped.requests_per_second.map(u32::from), Some(100));
    assert_eq!(shipped.burst.map(u32::from), Some(200));
    assert_eq!((shipped.streams_per_key, shipped.streams_total), (16, 1024));
    // Without [limits]: no default rate, the stream caps at their defaults.
    let none = FileConfig::parse("").unwrap().limits;
    assert_eq!(none, crate::config::limits::LimitsConfig::default());
    assert!(none.requests_per_second.is_none());
    let error = FileConfig::parse("[limits]\nburst = 5\n").unwrap_err();
    assert!(
        format!("{error:#}").contains("burst needs requests_per_second"),
        "{error:#}"
    );
    let error = FileConfig::parse("[limits]\nstreams_total = 0\n").unwrap_err();
    assert!(format!("{error:#}").contains("streams_total"), "{error:#}");
    let error = FileConfig::parse("[limits]\nrequests_per_second = 0\n").unwrap_err();
    assert!(
        format!("{error:#}").contains("requests_per_second"),
        "{error:#}"
    );
}

#[test]
fn a_submission_may_lower_a_kinds_limits_but_not_raise_them() {
    let config = FileConfig::parse(
        "[kinds.quick]\nimage = \"i\"\ncommand = [\"run\"]\ntimeout_seconds = 3\nmax_attempts = 2\n\
         [kinds.stretchy]\nimage = \"i\"\ncommand = [\"run\"]\ntimeout_seconds = 30\nmax_timeout_seconds = 300\n",
    )
    .unwrap();
    let quick = config.kind("quick").unwrap();
    assert!(quick.check_limits("quick", Some(1), Some(1)).is_ok());
    assert!(quick.check_limits("quick", Some(3), Some(2)).is_ok());
    assert!(quick.check_limits("quick", None, None).is_ok());
    let error = quick.check_limits("quick", Some(60), None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task kind \"quick\" allows a timeout of at most 3 seconds; timeout_seconds 60 is more"
    );
    let error = quick.check_limits("quick", None, Some(3)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task kind \"quick\" allows at most 2 attempts; max_attempts 3 is more"
    );
    let stretchy = config.kind("stretchy").unwrap();
    assert!(stretchy.check_limits("stretchy", Some(300), None).is_ok());
    assert!(stretchy.check_limits("stretchy", Some(301), None).is_err());
    let below = "[kinds.k]\nimage = \"i\"\ncommand = [\"run\"]\ntimeout_seconds = 30\nmax_timeout_seconds = 10\n";
    let error = FileConfig::parse(below).unwrap_err();
    assert!(
        format!("{error:#}").contains("max_timeout_seconds"),
        "{error:#}"
    );
}

fn kind_with_max_running(value: &str) -> String {
    format!("[kinds.licensed]\nimage = \"i\"\ncommand = [\"run\"]\nmax_running = {value}\n")
}

#[test]
fn max_running_is_a_positive_integer_and_unset_by_default() {
    let config = FileConfig::parse(&kind_with_max_running("4")).unwrap();
    assert_eq!(config.kind("licensed").unwrap().max_running, Some(4));
    let config = FileConfig::parse(SAMPLE).unwrap();
    assert_eq!(config.kind("batch").unwrap().max_running, None);
}

#[test]
fn a_max_running_that_is_not_a_positive_integer_is_refused_naming_the_kind_and_field() {
    for bad in ["0", "-2", "1.5", "\"two\"", "4294967296", "true"] {
        let error = format!(
            "{:#}",
            FileConfig::parse(&kind_with_max_running(bad)).unwrap_err()
        );
        assert!(error.contains("task kind \"licensed\""), "{bad}: {error}");
        assert!(
            error.contains("max_running must be a positive integer"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn a_max_running_refusal_names_the_file() {
    let dir = std::env::temp_dir().join(format!("taskledger-max-running-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kinds.toml");
    std::fs::write(&path, kind_with_max_running("0")).unwrap();
    let error = format!("{:#}", FileConfig::load(&path).unwrap_err());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("task kind \"licensed\""), "{error}");
    assert!(error.contains("max_running"), "{error}");
}

#[test]
fn the_example_configuration_shows_a_kind_with_max_running() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/taskledger.example.toml");
    let config = FileConfig::load(&path).unwrap();
    assert_eq!(config.kind("url-analysis").unwrap().max_running, Some(4));
    assert_eq!(config.kind("batch").unwrap().max_running, None);
}

#[test]
fn docker_out_binds_only_a_local_engine_by_default() {
    let auto = FileConfig::parse("").unwrap().docker.out;
    assert_eq!(auto, DockerOut::Auto);
    assert!(auto.binds(None, true));
    assert!(auto.binds(Some("unix:///var/run/docker.sock"), true));
    assert!(!auto.binds(Some("tcp://dind:2375"), true));
    assert!(
        !auto.binds(None, false),
        "a non-root runner may not read what root wrote"
    );
    let archive = FileConfig::parse("[docker]\nout = \"archive\"\n")
        .unwrap()
        .docker
        .out;
    assert!(!archive.binds(None, true));
    let bind = FileConfig::parse("[docker]\nout = \"bind\"\n")
        .unwrap()
        .docker
        .out;
    assert!(bind.binds(Some("tcp://remote:2375"), false));
    let error = format!(
        "{:#}",
        FileConfig::parse("[docker]\nout = \"tar\"\n").unwrap_err()
    );
    assert!(error.contains("unknown variant"), "{error}");
}
