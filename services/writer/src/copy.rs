//! Rows in Postgres' binary `COPY` format, the cheapest way to hand a batch
//! to the server: no SQL text, no per-row parameters, values in their wire
//! representation (see "COPY ... Binary Format" in the Postgres manual).
//!
//! A buffer is the 19-byte header, then per row a 16-bit field count and
//! each field as a 32-bit length and its bytes, then a -1 trailer.

use chrono::{DateTime, Utc};

/// Seconds from the Unix epoch to Postgres' epoch (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary COPY stream under construction.
pub struct CopyBuffer {
    buf: Vec<u8>,
}

impl CopyBuffer {
    /// An empty stream with room for about `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 21);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        // Flags (no OIDs), header extension length.
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        Self { buf }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // Lengths fit: a NATS message (which every row comes from) is at
        // most 8 MiB.
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A `text` value.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// A `bytea` value.
    pub fn bytea(&mut self, value: &[u8]) -> &mut Self {
        self.field(value)
    }

    /// A `uuid` value.
    pub fn uuid(&mut self, value: &uuid::Uuid) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// A `smallint` value.
    pub fn int2(&mut self, value: i16) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// An `integer` value.
    pub fn int4(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// A `timestamptz` value: microseconds since 2000-01-01 UTC.
    pub fn timestamptz(&mut self, value: &DateTime<Utc>) -> &mut Self {
        let micros = value.timestamp_micros() - POSTGRES_EPOCH_MICROS;
        self.field(&micros.to_be_bytes())
    }

    /// The finished stream.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_has_the_header_fields_and_trailer_postgres_expects() -> Result<(), String> {
        let mut copy = CopyBuffer::with_capacity(64);
        let time = DateTime::from_timestamp_millis(946_684_800_001).ok_or("in range")?;
        copy.row(4).text("ab").int2(-2).int4(7).timestamptz(&time);
        let bytes = copy.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        // One millisecond after Postgres' epoch is 1,000 microseconds.
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
        Ok(())
    }
}
