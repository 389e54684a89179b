//! `vigil-correlator`: the shared runner ([`vigil_common::service::run`]);
//! SIGHUP reloads the rules.

fn main() -> std::process::ExitCode {
    vigil_common::service::run::<vigil_correlator::Correlator>()
}
