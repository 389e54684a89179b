//! Decoding and validating what a device sends: any bytes as a
//! `PublishRequest`, every event through the gateway's validation. Must
//! never panic; an accepted event must belong to the caller.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_gateway::validate::{Device, Limits, validate};
use vigil_proto::ingest::v1::PublishRequest;

const NOW: i64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PublishRequest::decode(data) else {
        return;
    };
    let device = Device {
        tenant: "acme".into(),
        device: "cam-01".into(),
    };
    for event in request.events {
        if let Ok(accepted) = validate(event, &device, NOW, &Limits::default()) {
            assert_eq!(accepted.event.tenant_uid(), "acme");
            assert_eq!(accepted.event.device_uid(), "cam-01");
        }
    }
});
