//! `docs/settings.md` is generated from the services' command lines, so it
//! names every setting once and cannot drift. Regenerate it with
//! `VIGIL_UPDATE_DOCS=1 cargo test -p vigil-e2e --test settings_doc`.

use vigil_common::service::{Service, command};

fn section<S: Service>() -> String {
    let mut out = format!(
        "## vigil-{}\n\n{}\n\n| variable | flag | default | meaning |\n|---|---|---|---|\n",
        S::NAME,
        S::ABOUT
    );
    for [var, flag, default, help] in vigil_common::settings::table(&command::<S>()) {
        let default = if default.is_empty() {
            String::new()
        } else {
            format!("`{default}`")
        };
        out.push_str(&format!(
            "| `{var}` | `{flag}` | {default} | {} |\n",
            help.replace('|', "\\|")
        ));
    }
    out
}

fn render() -> String {
    [
        "# Settings\n\n\
         Generated from the services' command lines by `e2e/tests/settings_doc.rs`;\n\
         do not edit by hand. Every setting is a flag and an environment variable\n\
         (`--help` of each binary says the same). Shared settings are declared once in\n\
         `vigil_common::settings` and get each service's prefix at start-up; a bad\n\
         setting stops the service with exit code 64 and a line naming it.\n"
            .to_owned(),
        section::<vigil_gateway::Gateway>(),
        section::<vigil_writer::Writer>(),
        section::<vigil_reader::Reader>(),
        section::<vigil_correlator::Correlator>(),
    ]
    .join("\n")
}

#[test]
fn docs_settings_md_is_current() -> anyhow::Result<()> {
    let path = vigil_e2e::workspace_root().join("docs/settings.md");
    let rendered = render();
    if std::env::var_os("VIGIL_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &rendered)?;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == rendered,
        "docs/settings.md is stale; run VIGIL_UPDATE_DOCS=1 cargo test -p vigil-e2e --test settings_doc"
    );
    Ok(())
}

#[test]
fn no_setting_is_declared_twice_in_a_service() {
    for cmd in [
        command::<vigil_gateway::Gateway>(),
        command::<vigil_writer::Writer>(),
        command::<vigil_reader::Reader>(),
        command::<vigil_correlator::Correlator>(),
    ] {
        let mut seen = std::collections::HashSet::new();
        for [var, ..] in vigil_common::settings::table(&cmd) {
            assert!(
                seen.insert(var.clone()),
                "{var} twice in {}",
                cmd.get_name()
            );
        }
    }
}
