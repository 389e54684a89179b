//! `vigil-reader`: the shared runner ([`vigil_common::service::run`]).

fn main() -> std::process::ExitCode {
    vigil_common::service::run::<vigil_reader::Reader>()
}
