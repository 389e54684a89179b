//! One module per group of subcommands; each function runs one command.

pub mod admin;
pub mod query;
pub mod schema;
pub mod send;
pub mod status;
