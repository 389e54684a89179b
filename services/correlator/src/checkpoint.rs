//! The engine state in the CORRELATOR KV bucket, written incrementally: a
//! snapshot now and then, and after every batch a delta holding only the
//! keys that changed, each tied to the EVENTS stream sequence it covers.
//!
//! Keys of event slot `s` (generation `g`, written alternately under the
//! parities `g % 2`, so the keys in use never grow):
//!
//! - `slot-<s>.head`: the generation in force (written last when a
//!   new snapshot is complete, so a crash mid-snapshot keeps the old one);
//! - `slot-<s>.s<g%2>.<part>`: the snapshot (position, whole state);
//! - `slot-<s>.d<g%2>.<k>.<part>`: delta `k` = 1, 2, … of the
//!   generation (position, changed keys).
//!
//! A value is a blob part: a header (magic, generation, index, a nonce
//! shared by the parts of one write, part number, part count) and up to
//! [`PART_BYTES`] of postcard. A blob counts only if every part is there
//! with the same generation, index and nonce, so a write cut short by a
//! crash is never half-read. Recovery reads the head, the snapshot, then
//! deltas 1, 2, … until one is missing or stale (an earlier generation's),
//! and the consumer resumes after the last position read.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::{Delta, State};

/// Largest payload of one KV value (NATS's default max_payload is 1 MiB).
pub const PART_BYTES: usize = 960 * 1024;
/// A new snapshot is written once the deltas since the last one add up to
/// this much, or to the snapshot's own size if larger (recovery reads at
/// most about twice the snapshot)...
pub const SNAPSHOT_AFTER_BYTES: u64 = 4 << 20;
/// ...or once this many deltas were written (each is one read at recovery).
pub const SNAPSHOT_AFTER_DELTAS: u64 = 300;

const MAGIC: &[u8; 4] = b"VGC1";
const HEADER: usize = 4 + 8 + 8 + 8 + 4 + 4;

/// The restored state and the stream sequence it covers.
pub struct Restored {
    pub position: u64,
    pub state: State,
}

#[derive(Serialize, Deserialize)]
struct Head {
    generation: u64,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    position: u64,
    state: &'a State,
}

#[derive(Deserialize)]
struct Snapshot {
    position: u64,
    state: State,
}

#[derive(Serialize)]
struct DeltaRef<'a> {
    position: u64,
    delta: &'a Delta,
}

#[derive(Deserialize)]
struct DeltaRecord {
    position: u64,
    delta: Delta,
}

/// Where one slot's checkpoint lives, and how far its chain is.
pub struct Checkpoint {
    bucket: kv::Store,
    prefix: String,
    generation: u64,
    next_delta: u64,
    delta_bytes: u64,
    snapshot_bytes: u64,
}

/// Splits `body` into KV values, each with the blob header.
pub fn parts(generation: u64, index: u64, nonce: u64, body: &[u8]) -> Vec<Bytes> {
    let chunks: Vec<&[u8]> = if body.is_empty() {
        vec![&[][..]]
    } else {
        body.chunks(PART_BYTES).collect()
    };
    let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut v = Vec::with_capacity(HEADER + chunk.len());
            v.extend_from_slice(MAGIC);
            v.extend_from_slice(&generation.to_le_bytes());
            v.extend_from_slice(&index.to_le_bytes());
            v.extend_from_slice(&nonce.to_le_bytes());
            v.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_le_bytes());
            v.extend_from_slice(&count.to_le_bytes());
            v.extend_from_slice(chunk);
            Bytes::from(v)
        })
        .collect()
}

/// A blob part's header: (generation, index, nonce, part, parts).
fn header(value: &[u8]) -> Option<(u64, u64, u64, u32, u32)> {
    if value.len() < HEADER || &value[..4] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| {
        value
            .get(at..at + 8)?
            .try_into()
            .ok()
            .map(u64::from_le_bytes)
    };
    let u32_at = |at: usize| {
        value
            .get(at..at + 4)?
            .try_into()
            .ok()
            .map(u32::from_le_bytes)
    };
    Some((
        u64_at(4)?,
        u64_at(12)?,
        u64_at(20)?,
        u32_at(28)?,
        u32_at(32)?,
    ))
}

impl Checkpoint {
    fn key(&self, rest: &str) -> String {
        format!("{}.{rest}", self.prefix)
    }

    /// Reads the checkpoint under `prefix` (one slot's): `None` if it has none yet.
    pub async fn open(bucket: kv::Store, prefix: &str) -> Result<(Self, Option<Restored>), String> {
        let mut cp = Checkpoint {
            bucket,
            prefix: prefix.to_owned(),
            generation: 0,
            next_delta: 1,
            delta_bytes: 0,
            snapshot_bytes: 0,
        };
        let head = match cp.bucket.get(cp.key("head")).await {
            Ok(Some(v)) => postcard::from_bytes::<Head>(&v).map_err(|e| format!("head: {e}"))?,
            Ok(None) => return Ok((cp, None)),
            Err(e) => return Err(e.to_string()),
        };
        cp.generation = head.generation;
        let parity = head.generation % 2;
        let body = cp
            .read_blob(&format!("s{parity}"), 0)
            .await?
            .ok_or_else(|| format!("snapshot of generation {} is incomplete", head.generation))?;
        cp.snapshot_bytes = body.len() as u64;
        let snapshot: Snapshot =
            postcard::from_bytes(&body).map_err(|e| format!("snapshot: {e}"))?;
        let mut restored = Restored {
            position: snapshot.position,
            state: snapshot.state,
        };
        loop {
            let k = cp.next_delta;
            let Some(body) = cp.read_blob(&format!("d{parity}.{k}"), k).await? else {
                break;
            };
            let record: DeltaRecord =
                postcard::from_bytes(&body).map_err(|e| format!("delta {k}: {e}"))?;
            cp.delta_bytes += body.len() as u64;
            restored.position = record.position;
            restored.state.apply(record.delta);
            cp.next_delta += 1;
        }
        Ok((cp, Some(restored)))
    }

    /// The blob at `name` of this generation with `index`, if complete.
    async fn read_blob(&self, name: &str, index: u64) -> Result<Option<Vec<u8>>, String> {
        let mut body = Vec::new();
        let mut expect: Option<(u64, u32)> = None;
        let mut part = 0u32;
        loop {
            let value = match self.bucket.get(self.key(&format!("{name}.{part}"))).await {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let Some((generation, at, nonce, n, count)) = header(&value) else {
                return Ok(None);
            };
            if generation != self.generation || at != index || n != part {
                return Ok(None);
            }
            match expect {
                None => expect = Some((nonce, count)),
                Some(e) if e != (nonce, count) => return Ok(None),
                Some(_) => {}
            }
            body.extend_from_slice(&value[HEADER..]);
            part += 1;
            if part >= count {
                return Ok(Some(body));
            }
        }
    }

    async fn write_blob(&self, name: &str, index: u64, body: &[u8]) -> Result<(), String> {
        let nonce = rand::random::<u64>();
        for (i, value) in parts(self.generation_for(name), index, nonce, body)
            .into_iter()
            .enumerate()
        {
            self.bucket
                .put(self.key(&format!("{name}.{i}")), value)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Snapshots are written for the next generation, deltas for this one.
    fn generation_for(&self, name: &str) -> u64 {
        if name.starts_with('s') {
            self.generation + 1
        } else {
            self.generation
        }
    }

    /// Appends a delta covering the stream up to `position`; returns its size.
    /// On error nothing counts as written; the caller retries the same delta.
    pub async fn write_delta(&mut self, position: u64, delta: &Delta) -> Result<u64, String> {
        let body =
            postcard::to_allocvec(&DeltaRef { position, delta }).map_err(|e| e.to_string())?;
        let k = self.next_delta;
        self.write_blob(&format!("d{}.{k}", self.generation % 2), k, &body)
            .await?;
        self.next_delta += 1;
        self.delta_bytes += body.len() as u64;
        Ok(body.len() as u64)
    }

    /// Whether replaying the deltas would now cost more than a snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.generation == 0
            || self.delta_bytes >= self.snapshot_bytes.max(SNAPSHOT_AFTER_BYTES)
            || self.next_delta > SNAPSHOT_AFTER_DELTAS
    }

    /// Writes `state` (covering the stream up to `position`) as the next
    /// generation and makes it the one in force; returns its size.
    pub async fn write_snapshot(&mut self, position: u64, state: &State) -> Result<u64, String> {
        let body =
            postcard::to_allocvec(&SnapshotRef { position, state }).map_err(|e| e.to_string())?;
        let next = self.generation + 1;
        self.write_blob(&format!("s{}", next % 2), 0, &body).await?;
        let head = postcard::to_allocvec(&Head { generation: next }).map_err(|e| e.to_string())?;
        self.bucket
            .put(self.key("head"), Bytes::from(head))
            .await
            .map_err(|e| e.to_string())?;
        self.generation = next;
        self.next_delta = 1;
        self.delta_bytes = 0;
        self.snapshot_bytes = body.len() as u64;
        Ok(body.len() as u64)
    }

    /// Size of the snapshot in force.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_splits_into_parts_that_name_their_place() -> Result<(), String> {
        let body: Vec<u8> = (0..(PART_BYTES * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let values = parts(7, 3, 99, &body);
        assert_eq!(values.len(), 3);
        let mut joined = Vec::new();
        for (i, v) in values.iter().enumerate() {
            assert!(v.len() <= PART_BYTES + HEADER);
            let h = header(v).ok_or("no header")?;
            assert_eq!(h, (7, 3, 99, i as u32, 3));
            joined.extend_from_slice(&v[HEADER..]);
        }
        assert_eq!(joined, body);
        assert_eq!(parts(1, 0, 1, &[]).len(), 1, "an empty blob is one part");
        assert!(header(b"VGC1short").is_none());
        assert!(header(&[0u8; 64]).is_none(), "wrong magic");
        Ok(())
    }
}
