//! Page tokens: the keyset position of the next page, bound by an HMAC to
//! the caller and the filters they were issued for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use vigil_common::error::ApiError;

/// Signs and checks page tokens: HMAC-SHA256 over the keyset position, the
/// filters and the caller, so a token cannot be altered, reused with other
/// filters, or replayed by another caller.
pub struct PageTokens {
    key: ring::hmac::Key,
}

impl PageTokens {
    /// Tokens signed with `secret` (share it between readers behind one
    /// address so a page token works on any of them).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// Tokens signed with a random key: valid until this process exits.
    pub fn random() -> Result<Self, ApiError> {
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| ApiError::Internal("no randomness for the page token key".into()))?;
        Ok(Self { key })
    }

    fn signed(caller: &str, filters: &str, position: &str) -> String {
        format!("{caller}\n{filters}\n{position}")
    }

    /// `<base64url("v2.<time ms>.<id>")>.<mac>`.
    pub fn encode(&self, caller: &str, filters: &str, time: DateTime<Utc>, id: &str) -> String {
        let position = format!("v2.{}.{}", time.timestamp_millis(), id);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&position),
            URL_SAFE_NO_PAD.encode(ring::hmac::sign(
                &self.key,
                Self::signed(caller, filters, &position).as_bytes()
            ))
        )
    }

    /// The keyset position of a token issued by [`Self::encode`] to this
    /// caller for these filters.
    pub fn decode<I: std::str::FromStr>(
        &self,
        caller: &str,
        filters: &str,
        token: &str,
    ) -> Result<(DateTime<Utc>, I), &'static str> {
        const MALFORMED: &str = "malformed page token";
        if token.len() > 256 {
            return Err(MALFORMED);
        }
        let (position, mac) = token.split_once('.').ok_or(MALFORMED)?;
        let raw = URL_SAFE_NO_PAD.decode(position).map_err(|_| MALFORMED)?;
        let text = String::from_utf8(raw).map_err(|_| MALFORMED)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| MALFORMED)?;
        // Constant-time comparison inside ring.
        ring::hmac::verify(
            &self.key,
            Self::signed(caller, filters, &text).as_bytes(),
            &mac,
        )
        .map_err(|_| "page token was not issued for this query and caller")?;
        let parts: Vec<&str> = text.split('.').collect();
        let ["v2", time, id] = parts.as_slice() else {
            return Err(MALFORMED);
        };
        let time = time
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or(MALFORMED)?;
        let id = id.parse::<I>().map_err(|_| MALFORMED)?;
        Ok((time, id))
    }
}
