//! `vigil-gateway`: the shared runner ([`vigil_common::service::run`]).

fn main() -> std::process::ExitCode {
    vigil_common::service::run::<vigil_gateway::Gateway>()
}
