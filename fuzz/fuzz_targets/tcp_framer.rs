//! A byte stream cut into arbitrary chunks and fed to the RFC 5460 framer gives the same frames
//! and the same final state (waiting, or the same error at the same stream offset) as the whole
//! stream pushed at once. Also: a push larger than `room()` is refused and takes nothing, and a
//! failed stream stays failed.
//!
//! Input layout: byte 0 picks the frame limit, byte 1 seeds the chunk sizes, the rest is the
//! stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lqagent::wire::Error;
use lqagent::wire::bulk::{FrameConfig, FrameDecoder};

/// Frames read so far and how the decoder stopped (`None`: waiting for more bytes).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<Error>,
}

/// Drains every complete frame; returns false once the decoder has failed.
fn drain(dec: &mut FrameDecoder, out: &mut Outcome) -> bool {
    loop {
        match dec.next_frame() {
            Ok(Some(f)) => out.frames.push(f.to_vec()),
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e);
                assert_eq!(dec.next_frame(), Err(Error::StreamFailed));
                assert_eq!(dec.push(&[0]), Err(Error::StreamFailed));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let max_frame = match limit {
        0..=127 => usize::from(u16::MAX),
        n => usize::from(n & 0x7f) * 4 + 1,
    };
    // Tight buffer: exactly one maximal frame plus its prefix.
    let tight = FrameConfig {
        max_frame,
        buffer_capacity: 0,
    };

    let mut whole = Outcome {
        frames: Vec::new(),
        error: None,
    };
    let mut one_shot = FrameDecoder::new(FrameConfig {
        max_frame,
        buffer_capacity: stream.len(),
    });
    one_shot
        .push(stream)
        .expect("capacity covers the whole stream");
    drain(&mut one_shot, &mut whole);

    let mut chunked = Outcome {
        frames: Vec::new(),
        error: None,
    };
    let mut dec = FrameDecoder::new(tight);
    let mut rng = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let room = dec.room();
        assert!(room > 0, "the decoder must always make room after a drain");
        if rest.len() > room && rng % 4 == 0 {
            let before = dec.buffered();
            assert!(matches!(
                dec.push(rest),
                Err(Error::StreamBufferFull { .. })
            ));
            assert_eq!(dec.buffered(), before, "a refused push took bytes");
        }
        let n = (1 + rng as usize % 97).min(room).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        dec.push(chunk).expect("chunk fits the room");
        rest = tail;
        if !drain(&mut dec, &mut chunked) {
            break;
        }
    }
    assert_eq!(chunked, whole, "chunked and one-shot framing differ");
});
