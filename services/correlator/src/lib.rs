//! The vigil correlator: detection rules over the event stream, in event
//! time, emitting OCSF Detection Findings.
//!
//! - [`rules`]: the rule file format and its validation.
//! - [`fields`]: the event fields rules test and group by.
//! - [`engine`]: windows, watermark, late events, suppression, findings.

pub mod engine;
pub mod fields;
pub mod rules;
