//! What the writer's row path costs per event, on one core, as a ratio to
//! the work no writer can skip: decoding the `EventBatch` from the wire
//! (prost). The row path is cutting each event out of the message, decoding
//! it for its columns and encoding the binary COPY stream.
//!
//! Run: `cargo bench -p vigil-writer --bench rows`

use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use rand::SeedableRng;
use vigil_proto::event::v1::EventBatch;
use vigil_writer::store::{Record, Sink, encode_rows};

fn main() -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = 1_790_000_000_000i64;
    // Messages as the gateway publishes them: ~60 events each.
    let messages: Vec<Bytes> = (0..4_000)
        .map(|_| {
            let events = (0..60)
                .map(|_| {
                    let kind = vigil_client::events::random_kind(&mut rng);
                    let mut e = vigil_client::events::sample(kind, &mut rng, now);
                    let meta = e.metadata.get_or_insert_default();
                    meta.tenant_uid = "acme".into();
                    meta.logged_time = now + 1;
                    e
                })
                .collect();
            Bytes::from(EventBatch { events }.encode_to_vec())
        })
        .collect();
    let events = messages.len() * 60;
    let bytes: usize = messages.iter().map(Bytes::len).sum();

    let started = Instant::now();
    let mut decoded = 0usize;
    for m in &messages {
        decoded += EventBatch::decode(m.as_ref())
            .map_err(|e| e.to_string())?
            .events
            .len();
    }
    let decode_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut copied = 0usize;
    for m in &messages {
        let rows: Vec<_> = Sink::Events
            .decode(m)?
            .into_iter()
            .filter_map(|r| match r {
                Record::Event(row) => Some(row),
                _ => None,
            })
            .collect();
        copied += encode_rows(&rows).len();
    }
    let rows_s = started.elapsed().as_secs_f64();
    println!(
        "rows: {events} events in {} messages ({bytes} bytes; {decoded} decoded), prost decode {:.0} events/s, decode + columns + COPY encoding {:.0} events/s on one core ({copied} COPY bytes); the row path costs {:.2}x a decode",
        messages.len(),
        events as f64 / decode_s,
        events as f64 / rows_s,
        rows_s / decode_s
    );
    Ok(())
}
