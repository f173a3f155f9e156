//! Task kinds for the configuration files tests write.

/// The `[kinds.{name}]` table of a kind that runs `sh -c {script}` (its one
/// required parameter), with the further TOML lines `settings`.
pub(crate) fn sh_kind(name: &str, settings: &str) -> String {
    format!(
        "\n[kinds.{name}]\ncommand = [\"sh\", \"-c\", \"{{script}}\"]\n\
         required_params = [\"script\"]\n{settings}"
    )
}

/// [`sh_kind`] for the local executor (no Docker): `sh` runs as a child
/// process of the runner.
pub(crate) fn local_sh_kind(name: &str, settings: &str) -> String {
    sh_kind(
        name,
        &format!("image = \"unused\"\nexecutor = \"local\"\n{settings}"),
    )
}
