//! Fuzzes handshake message parsing: `Offer::parse`, `Answer::parse`, `Reveal::parse` and
//! `SignedPrekey::parse` on the same bytes, then `verify` on whatever parsed.
//!
//! The first input byte picks a mode:
//! - even: the rest is one candidate message, as the registry could relay it.
//! - odd: a genuine message from the fixture handshake (picked by the next byte) with up to 8 byte edits
//!   and an optional truncation or extension, so the fuzzer reaches the signature and commitment checks
//!   that random bytes never get past.
//!
//! Properties: nothing panics; whatever parses re-encodes (`to_bytes`) to exactly the input and parses
//! again to an equal value; a signature only verifies on the exact genuine bytes (a changed message that
//! still verifies would be a forgery or signature malleability).

#![no_main]

use libfuzzer_sys::fuzz_target;
use qvoice_proto::handshake::{Answer, Offer, Reveal};
use qvoice_proto::{Error, SignedPrekey};
use qvoice_proto_fuzz::{Cursor, Handshake, handshake, xor_edits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let fx = handshake();
    if mode % 2 == 0 {
        check_all(fx, rest);
        return;
    }
    let mut cur = Cursor::new(rest);
    let genuine: Vec<u8> = match cur.u8() % 4 {
        0 => fx.offer.to_bytes().to_vec(),
        1 => fx.answer.to_bytes().to_vec(),
        2 => fx.reveal.to_bytes().to_vec(),
        _ => fx.prekey.to_bytes(),
    };
    let mut msg = genuine.clone();
    let resize = cur.u8();
    let n = usize::from(cur.u16());
    match resize % 8 {
        0 => msg.truncate(n % (msg.len() + 1)),
        1 => msg.extend(std::iter::repeat_n(resize, n % 64 + 1)),
        _ => {}
    }
    xor_edits(&mut cur, &mut msg, 8);
    let verified = check_all(fx, &msg);
    if msg == genuine {
        assert!(verified, "the genuine fixture message did not verify");
    } else {
        assert!(!verified, "a changed message still verified: {msg:02x?}");
    }
});

/// Parses `bytes` as every message type; returns whether any of them parsed and verified.
fn check_all(fx: &Handshake, bytes: &[u8]) -> bool {
    let mut verified = false;
    if let Ok(offer) = Offer::parse(bytes) {
        assert_eq!(offer.to_bytes(), bytes);
        assert_eq!(Offer::parse(offer.to_bytes()).ok().as_ref(), Some(&offer));
        verified |= offer.verify().is_ok();
        // The genuine ANSWER and REVEAL checked against this OFFER: must not verify unless it is the real one.
        let answer_ok = fx.answer.verify(&offer).is_ok();
        let reveal_ok = fx.reveal.verify(&offer, &fx.answer);
        if offer != fx.offer {
            assert!(!answer_ok, "genuine answer verified against a different offer");
            assert_ne!(reveal_ok, Ok(()), "genuine reveal verified against a different offer");
        }
    }
    if let Ok(answer) = Answer::parse(bytes) {
        assert_eq!(answer.to_bytes(), bytes);
        assert_eq!(Answer::parse(answer.to_bytes()).ok().as_ref(), Some(&answer));
        verified |= answer.verify(&fx.offer).is_ok();
        let reveal_ok = fx.reveal.verify(&fx.offer, &answer);
        if answer != fx.answer {
            assert_ne!(reveal_ok, Ok(()), "genuine reveal verified against a different answer");
        }
    }
    if let Ok(reveal) = Reveal::parse(bytes) {
        assert_eq!(reveal.to_bytes(), bytes);
        assert_eq!(Reveal::parse(reveal.to_bytes()).ok().as_ref(), Some(&reveal));
        let result = reveal.verify(&fx.offer, &fx.answer);
        // The commitment is checked after the signature: a mismatch means a changed REVEAL passed the
        // signature check, which counts as verifying for the forgery property.
        verified |= matches!(result, Ok(()) | Err(Error::CommitmentMismatch));
    }
    if let Ok(prekey) = SignedPrekey::parse(bytes) {
        assert_eq!(prekey.to_bytes(), bytes);
        assert_eq!(SignedPrekey::parse(&prekey.to_bytes()).ok().as_ref(), Some(&prekey));
        verified |= prekey.verify(&fx.callee_key).is_ok();
        let _ = prekey.verify(&fx.caller_key);
    }
    verified
}
