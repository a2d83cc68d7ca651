//! Checks the code against the hex test vectors published in docs/PROTOCOL.md, byte for byte.

use crate::frame::AudioPayload;
use crate::handshake::key_schedule;
use crate::media::MediaCrypto;
use crate::types::to_hex;
use crate::{FrameType, IdentitySecret, SessionId, Username, safety_number};

pub(crate) struct Vectors {
    pub c2s_key: String,
    pub c2s_iv: String,
    pub c2s_obf: String,
    pub s2c_key: String,
    pub s2c_iv: String,
    pub s2c_obf: String,
    pub sas: String,
    pub frame_plain: String,
    pub frame_obfuscated: String,
    pub safety: String,
    pub alice_key: String,
    pub bob_key: String,
}

/// Computes every published vector from its fixed inputs.
pub(crate) fn compute() -> Vectors {
    let s = key_schedule(&[0x11; 32], &[0x22; 32], &[0x33; 32], &[0x44; 32], &[0x55; 32]);
    let mut caller = MediaCrypto::new(
        &s.caller_to_callee,
        &s.callee_to_caller,
        SessionId(0x0102_0304),
        SessionId(0x0a0b_0c0d),
        false,
    );
    let mut payload = [0u8; 64];
    let n = AudioPayload { timestamp: 960, data: b"qvoice test frame" }.write_to(&mut payload).unwrap_or(0);
    let mut wire = [0u8; 128];
    let plain_len = caller.seal(FrameType::Audio, &payload[..n], &mut wire).unwrap_or(0);
    let frame_plain = to_hex(&wire[..plain_len]);
    caller.set_obfuscation(true);
    let obf_len = caller.seal(FrameType::Audio, &payload[..n], &mut wire).unwrap_or(0);
    let frame_obfuscated = to_hex(&wire[..obf_len]);
    let alice = IdentitySecret::from_bytes(&[0xa1; 32]).public();
    let bob = IdentitySecret::from_bytes(&[0xb0; 32]).public();
    let (an, bn) = (Username::parse("alice"), Username::parse("bob"));
    let safety = match (an, bn) {
        (Ok(an), Ok(bn)) => safety_number(&an, &alice, &bn, &bob),
        _ => String::new(),
    };
    Vectors {
        c2s_key: to_hex(&s.caller_to_callee.key),
        c2s_iv: to_hex(&s.caller_to_callee.iv),
        c2s_obf: to_hex(&s.caller_to_callee.obf),
        s2c_key: to_hex(&s.callee_to_caller.key),
        s2c_iv: to_hex(&s.callee_to_caller.iv),
        s2c_obf: to_hex(&s.callee_to_caller.obf),
        sas: s.sas.clone(),
        frame_plain,
        frame_obfuscated,
        safety,
        alice_key: to_hex(alice.as_bytes()),
        bob_key: to_hex(bob.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/PROTOCOL.md");

    #[test]
    fn code_matches_published_vectors() {
        let v = compute();
        let expected = [
            ("c2s_key", &v.c2s_key, "81884a517b7d233b0b2818ef899f0270a06d7509b2c484eeda16ad76ff353563"),
            ("c2s_iv", &v.c2s_iv, "b61388c4333f138986ff1458"),
            ("c2s_obf", &v.c2s_obf, "d018a8c10293450fe4cc517cccb0b0cb6eab8979d415dfef410b2dd8bd626152"),
            ("s2c_key", &v.s2c_key, "e7d105f17b5bede9ac9c1b490a7cd0fe74dc9acca3175e73b8ce9ac9d3ea586a"),
            ("s2c_iv", &v.s2c_iv, "c2942b21ccd01fe29e9864fd"),
            ("s2c_obf", &v.s2c_obf, "4c5ae7588a77b28c811d66449dfe6aea2cc0aabc147cd679112bada28f031536"),
            ("sas", &v.sas, "9aep"),
            (
                "frame_plain",
                &v.frame_plain,
                "11000a0b0c0d00000000000000009788d9161873bdeca6a9647432a78a031d6f7704681648dca54b74da870aedabefd4e895ef",
            ),
            (
                "frame_obfuscated",
                &v.frame_obfuscated,
                "11010a0b0c0d0000000000000001ea9913f93d6b18d0e7ea33491caff0a0f8f7f96dcaff29ee2c19fdd2cf75ce4fa21981f237",
            ),
            ("safety", &v.safety, "00674 40630 75885 40383 06019 42089 34391 83112 20373 79966 05043 55555"),
            ("alice_key", &v.alice_key, "bc7cbcb5636375fa1d82434d466724d92377f53b980695dd49d26d0ce12205a5"),
            ("bob_key", &v.bob_key, "705fbac01f5519899f437bc42e40255ae9ab54bff00de3433af7d687d9e71ad5"),
        ];
        for (name, got, want) in expected {
            assert_eq!(got, want, "{name}");
            assert!(DOC.contains(want), "docs/PROTOCOL.md lacks the {name} vector {want}");
        }
    }
}
