//! Page-token parsing: any string as a token, and any bytes as a
//! `ListEventsRequest`. Must never panic, and no token the reader did not
//! sign may be accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_proto::query::v1::ListEventsRequest;
use vigil_reader::query::{EventQuery, PageTokens};

fuzz_target!(|data: &[u8]| {
    let tokens = PageTokens::new(b"a fuzzing key of thirty-two bytes");
    if let Ok(token) = std::str::from_utf8(data) {
        let request = ListEventsRequest {
            page_token: token.to_owned(),
            ..Default::default()
        };
        let parsed = EventQuery::parse(&request, &tokens, "spiffe://vigil.local/user/fuzz");
        assert!(token.is_empty() || parsed.is_err(), "forged token accepted: {token:?}");
        let _ = tokens.decode::<uuid::Uuid>("caller", "hash", token);
    }
    if let Ok(request) = ListEventsRequest::decode(data) {
        let _ = EventQuery::parse(&request, &tokens, "spiffe://vigil.local/user/fuzz");
    }
});
