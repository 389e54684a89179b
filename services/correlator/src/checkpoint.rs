//! The engine state as stored in the CORRELATOR KV bucket: its codec, and
//! reading it back.

use async_nats::jetstream::kv;

use crate::engine::State;

/// Largest checkpoint the correlator will inflate (a corrupted or hostile
/// value must not exhaust memory).
const MAX_CHECKPOINT_JSON: u64 = 1 << 30;

/// The engine state as stored in KV: gzip-compressed JSON (the JSON of
/// event ids and keys shrinks several times, and the value must fit NATS's
/// max_payload).
pub fn encode(state: &State) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// Reads a checkpoint: gzip-compressed JSON, or plain JSON as written by
/// earlier versions.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    use std::io::Read;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_CHECKPOINT_JSON)
            .read_to_end(&mut json)
            .map_err(|e| format!("not a gzip checkpoint: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Reads the checkpoint at `key`; none yet is the empty state.
pub async fn read(bucket: &kv::Store, key: &str) -> Result<State, String> {
    match bucket.get(key).await {
        Ok(Some(bytes)) => decode(&bytes),
        Ok(None) => Ok(State::default()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Settings};
    use crate::rules;
    use rand::SeedableRng;

    #[test]
    fn checkpoints_are_compressed_and_plain_json_still_reads() -> Result<(), String> {
        let rules = rules::parse(rules::DEFAULT_RULES).map_err(|e| e.to_string())?;
        let mut engine = Engine::new(rules, Settings::default(), State::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start = 1_790_000_000_000i64;
        for i in 0..20_000 {
            let kind = vigil_client::events::random_kind(&mut rng);
            let event = vigil_client::events::sample(kind, &mut rng, start + i * 50);
            engine.ingest("acme", &event);
        }
        let json = serde_json::to_vec(&engine.state).map_err(|e| e.to_string())?;
        let packed = encode(&engine.state)?;
        println!(
            "checkpoint: {} bytes of JSON, {} gzip",
            json.len(),
            packed.len()
        );
        assert!(
            packed.len() * 3 < json.len(),
            "{} vs {}",
            packed.len(),
            json.len()
        );
        let again = |s: State| serde_json::to_vec(&s).map_err(|e| e.to_string());
        assert_eq!(again(decode(&packed)?)?, json);
        assert_eq!(again(decode(&json)?)?, json, "plain JSON");
        assert!(decode(&[0x1f, 0x8b, 1, 2, 3]).is_err());
        assert!(decode(b"not json").is_err());
        Ok(())
    }
}
