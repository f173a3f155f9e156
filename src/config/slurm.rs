//! A Slurm kind's `slurm = { partition, account, memory_mb, cpus }` table
//! (each optional) and the start-up check that its partition exists
//! ([`check_partitions`], which asks `sinfo`).
//!
//! ```toml
//! [kinds.hpc-batch]
//! executor = "slurm"
//! command = ["/usr/bin/env", "python3", "/opt/jobs/train.py", "--epochs", "{epochs}"]
//! required_params = ["epochs"]
//! timeout_seconds = 3600
//! slurm = { partition = "batch", account = "lab", memory_mb = 4096, cpus = 4 }
//! ```

use std::collections::BTreeSet;
use std::ffi::OsStr;

use serde::Deserialize;

use super::kind::Executor;
use super::FileConfig;

/// Where and with what a Slurm kind's jobs run; what is left out is the
/// cluster's default (the default partition, the user's default account,
/// the partition's default memory, one CPU). The time limit is the task's
/// `timeout_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// `sbatch --partition`.
    #[serde(default)]
    pub partition: Option<String>,
    /// `sbatch --account`.
    #[serde(default)]
    pub account: Option<String>,
    /// `sbatch --mem`, in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// `sbatch --cpus-per-task`.
    #[serde(default)]
    pub cpus: Option<u32>,
}

impl SlurmSettings {
    /// Checks the values that need no cluster to check.
    ///
    /// # Errors
    /// The first bad field, named `slurm.FIELD`.
    pub fn check(&self) -> anyhow::Result<()> {
        for (field, value) in [("partition", &self.partition), ("account", &self.account)] {
            if let Some(value) = value {
                anyhow::ensure!(
                    !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == ','),
                    "slurm.{field} must be one name without spaces or commas; got {value:?}"
                );
            }
        }
        anyhow::ensure!(
            self.memory_mb.is_none_or(|memory| memory >= 1),
            "slurm.memory_mb must be at least 1"
        );
        anyhow::ensure!(
            self.cpus.is_none_or(|cpus| cpus >= 1),
            "slurm.cpus must be at least 1"
        );
        Ok(())
    }
}

/// Checks every Slurm kind's partition against the cluster's (`sinfo` run
/// as `sinfo_program`): a partition the cluster does not have is refused
/// with the kind and the field named, as is a Slurm kind on a host where
/// `sinfo` cannot run at all. `file` names the configuration in the
/// message. Nothing is asked when no kind runs on Slurm.
///
/// # Errors
/// As above, the first problem found.
pub fn check_partitions(
    config: &FileConfig,
    file: &str,
    sinfo_program: &OsStr,
) -> anyhow::Result<()> {
    let slurm_kinds: Vec<(&String, Option<&String>)> = config
        .kinds
        .iter()
        .filter(|(_, kind)| kind.executor == Executor::Slurm)
        .map(|(name, kind)| {
            (
                name,
                kind.slurm
                    .as_ref()
                    .and_then(|slurm| slurm.partition.as_ref()),
            )
        })
        .collect();
    let Some((first, _)) = slurm_kinds.first() else {
        return Ok(());
    };
    let output = std::process::Command::new(sinfo_program)
        .args(["--noheader", "--format=%R"])
        .stdin(std::process::Stdio::null())
        .output();
    let partitions: BTreeSet<String> = match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect(),
        Ok(output) => anyhow::bail!(
            "in {file}: task kind {first:?}: executor = \"slurm\", but sinfo failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => anyhow::bail!(
            "in {file}: task kind {first:?}: executor = \"slurm\", but Slurm's tools are not \
             installed here ({}: {error})",
            sinfo_program.to_string_lossy()
        ),
    };
    for (name, partition) in slurm_kinds {
        if let Some(partition) = partition {
            anyhow::ensure!(
                partitions.contains(partition),
                "in {file}: task kind {name:?}: slurm.partition {partition:?} is not a partition \
                 of this Slurm cluster (sinfo lists: {})",
                partitions.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slurm_kind(slurm: &str) -> String {
        format!("[kinds.hpc]\nexecutor = \"slurm\"\ncommand = [\"/bin/true\"]\n{slurm}\n")
    }

    #[test]
    fn a_slurm_kind_needs_no_image_and_takes_its_table() {
        let config = FileConfig::parse(&slurm_kind(
            "slurm = { partition = \"debug\", account = \"lab\", memory_mb = 64, cpus = 2 }",
        ))
        .unwrap();
        let kind = config.kind("hpc").unwrap();
        assert_eq!(kind.executor, Executor::Slurm);
        assert_eq!(
            kind.slurm,
            Some(SlurmSettings {
                partition: Some("debug".into()),
                account: Some("lab".into()),
                memory_mb: Some(64),
                cpus: Some(2),
            })
        );
        assert!(FileConfig::parse(&slurm_kind("")).is_ok());
    }

    #[test]
    fn bad_slurm_tables_are_refused_naming_the_kind_and_field() {
        for (table, expected) in [
            ("slurm = { cpus = 0 }", "slurm.cpus"),
            ("slurm = { partition = \"a b\" }", "slurm.partition"),
            ("slurm = { partitoin = \"a\" }", "unknown field `partitoin`"),
        ] {
            let error = format!("{:#}", FileConfig::parse(&slurm_kind(table)).unwrap_err());
            assert!(
                error.contains("\"hpc\"") && error.contains(expected),
                "{error}"
            );
        }
        let docker = "[kinds.d]\nimage = \"i\"\ncommand = [\"run\"]\nslurm = { cpus = 1 }\n";
        let error = format!("{:#}", FileConfig::parse(docker).unwrap_err());
        assert!(
            error.contains("\"d\"") && error.contains("slurm applies only"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_executor_is_refused_naming_the_kind_and_field() {
        let text = "[kinds.k8s]\nexecutor = \"kubernetes\"\ncommand = [\"run\"]\n";
        let error = format!("{:#}", FileConfig::parse(text).unwrap_err());
        assert!(
            error.contains("\"k8s\"") && error.contains("executor") && error.contains("kubernetes"),
            "{error}"
        );
    }

    #[test]
    fn a_partition_the_cluster_lacks_is_refused_at_start_up() {
        // The test cluster of scripts/slurm.sh has partition "debug".
        let sinfo = OsStr::new("sinfo");
        let good = FileConfig::parse(&slurm_kind("slurm = { partition = \"debug\" }")).unwrap();
        check_partitions(&good, "/etc/tl.toml", sinfo).unwrap();
        let bad = FileConfig::parse(&slurm_kind("slurm = { partition = \"nope\" }")).unwrap();
        let error = check_partitions(&bad, "/etc/tl.toml", sinfo)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/etc/tl.toml")
                && error.contains("\"hpc\"")
                && error.contains("slurm.partition \"nope\"")
                && error.contains("debug"),
            "{error}"
        );
        let missing = check_partitions(&good, "/etc/tl.toml", OsStr::new("/nonexistent/sinfo"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("/etc/tl.toml")
                && missing.contains("\"hpc\"")
                && missing.contains("not installed"),
            "{missing}"
        );
        // No Slurm kind: sinfo is not needed.
        check_partitions(
            &FileConfig::builtin(),
            "/etc/tl.toml",
            OsStr::new("/nonexistent/sinfo"),
        )
        .unwrap();
    }
}
