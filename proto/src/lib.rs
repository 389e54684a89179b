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

pub mod schema {
    pub mod v1 {
        tonic::include_proto!("vigil.schema.v1");
    }
}

/// Encoded `FileDescriptorSet` of every vigil package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vigil_descriptor");

impl event::v1::SecurityEvent {
    /// The event's identity, OCSF `metadata.uid` (empty without metadata).
    pub fn uid(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.uid.as_str())
    }

    /// The tenant the gateway bound the event to, `metadata.tenant_uid`.
    pub fn tenant_uid(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.tenant_uid.as_str())
    }

    /// The reporting device's id, `device.uid`.
    pub fn device_uid(&self) -> &str {
        self.device.as_ref().map_or("", |d| d.uid.as_str())
    }
}

impl finding::v1::Finding {
    /// The finding's identity, OCSF `finding_info.uid`.
    pub fn uid(&self) -> &str {
        self.finding_info.as_ref().map_or("", |f| f.uid.as_str())
    }

    /// The rule that found it, `finding_info.analytic.uid`.
    pub fn rule_id(&self) -> &str {
        self.finding_info
            .as_ref()
            .and_then(|f| f.analytic.as_ref())
            .map_or("", |a| a.uid.as_str())
    }

    /// The tenant it belongs to, `metadata.tenant_uid`.
    pub fn tenant_uid(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.tenant_uid.as_str())
    }

    /// Which version of the finding this is, `metadata.sequence`.
    pub fn version(&self) -> i32 {
        self.metadata.as_ref().map_or(0, |m| m.sequence)
    }

    /// The first ATT&CK technique, `finding_info.attacks[0].technique.uid`.
    pub fn technique(&self) -> &str {
        self.finding_info
            .as_ref()
            .and_then(|f| f.attacks.first())
            .and_then(|a| a.technique.as_ref())
            .map_or("", |t| t.uid.as_str())
    }

    /// The contributing events' uids, `finding_info.related_events[].uid`.
    pub fn related_event_uids(&self) -> Vec<&str> {
        self.finding_info
            .as_ref()
            .map(|f| f.related_events.iter().map(|e| e.uid.as_str()).collect())
            .unwrap_or_default()
    }
}
