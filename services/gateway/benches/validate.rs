//! What OCSF validation costs the gateway per event, on one core, as a
//! ratio to the work no gateway can skip: decoding the event from the wire
//! (prost). A realistic mix of every supported class.
//!
//! Run: `cargo bench -p vigil-gateway --bench validate`

use std::time::Instant;

use prost::Message;
use rand::SeedableRng;
use vigil_gateway::validate::{Device, Limits, validate};
use vigil_proto::event::v1::SecurityEvent;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = 1_790_000_000_000i64;
    let n = 200_000;
    let wire: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let kind = vigil_client::events::random_kind(&mut rng);
            vigil_client::events::sample(kind, &mut rng, now - 1000).encode_to_vec()
        })
        .collect();
    let device = Device {
        tenant: "acme".into(),
        device: "cam-01".into(),
    };
    let limits = Limits::default();
    // Warm the schema (parsed once per process).
    let _ = vigil_ocsf::schema();

    let started = Instant::now();
    let mut decoded = Vec::with_capacity(n);
    for bytes in &wire {
        decoded.push(SecurityEvent::decode(bytes.as_slice())?);
    }
    let decode_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut accepted = 0usize;
    for event in decoded {
        accepted += usize::from(validate(event, &device, now, &limits).is_ok());
    }
    let validate_s = started.elapsed().as_secs_f64();
    println!(
        "validate: {n} events ({accepted} accepted), decode {:.0} events/s, validate {:.0} events/s on one core; validation costs {:.2}x a decode",
        n as f64 / decode_s,
        n as f64 / validate_s,
        validate_s / decode_s
    );
    Ok(())
}
