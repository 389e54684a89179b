//! vigil's protobuf contracts and the code generated from them.
//!
//! Packages are versioned (`vigil.event.v1`, `vigil.ingest.v1`,
//! `vigil.query.v1`); the `.proto` files next to this crate are the source
//! of truth that device makers generate clients from.

#![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("vigil.audit.v1");
    }
}

pub mod event {
    pub mod v1 {
        tonic::include_proto!("vigil.event.v1");
    }
}

pub mod finding {
    pub mod v1 {
        tonic::include_proto!("vigil.finding.v1");
    }
}

pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("vigil.ingest.v1");
    }
}

pub mod query {
    pub mod v1 {
        tonic::include_proto!("vigil.query.v1");
    }
}

/// Encoded `FileDescriptorSet` of every vigil package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vigil_descriptor");
