use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::*;

fn samples() -> Vec<Message> {
    let caps = Capabilities {
        kind: WorkerKind::Host,
        architectures: vec!["lenet5".into(), "lenet-mxnet".into()],
        threads: 1,
        memory_mib: 512,
        images_per_second: 3900.0,
        encodings: crate::encoding::ENCODINGS.to_vec(),
        sample_cache: 0,
    };
    vec![
        Message::Hello(Hello {
            worker_id: "pi-kitchen".into(),
            nonce: vec![7; 16],
            component_digest: "ab".repeat(32),
            capabilities: caps,
        }),
        Message::Welcome(Welcome {
            session: 7,
            arch: "lenet5".into(),
            seed: 1,
            optimizer: OptimizerConfig {
                learning_rate: 0.05,
                momentum: 0.9,
                weight_decay: 1e-4,
            },
            proof: vec![1; 32],
            initial: Some("cd".repeat(32)),
        }),
        Message::Challenge(Challenge { nonce: vec![3; 16] }),
        Message::Proof(Proof { mac: vec![4; 32] }),
        Message::Reject(Reject {
            reason: "bad token".into(),
        }),
        Message::Assign(Assign {
            round: 3,
            params_version: 2,
            learning_rate: 0.04,
            steps: vec![2],
            reply: UpdateKind::Delta,
            params: vec![0.5, -1.25, f32::MIN_POSITIVE],
            params_encoding: crate::Encoding::F32,
            params_base: None,
            reply_encoding: crate::Encoding::F32,
            shift: 0,
            prefetched: false,
            pixels: (0..2 * IMAGE_LEN).map(|i| (i % 256) as u8).collect(),
            labels: vec![3, 9],
            cache: None,
            component: String::new(),
        }),
        Message::Assign(Assign {
            round: 4,
            params_version: 2,
            learning_rate: 0.04,
            steps: vec![1, 2],
            reply: UpdateKind::Params,
            params: vec![],
            params_encoding: crate::Encoding::F32,
            params_base: None,
            reply_encoding: crate::Encoding::F32,
            shift: 0,
            prefetched: false,
            pixels: vec![0; 3 * IMAGE_LEN],
            labels: vec![0, 1, 2],
            cache: None,
            component: String::new(),
        }),
        Message::Result(RoundResult {
            round: 3,
            params_version: 2,
            samples: 2,
            loss_sum: 1.5,
            correct: 1,
            kind: UpdateKind::Delta,
            values: vec![1.0, 2.0, -3.5],
            encoding: crate::Encoding::F32,
            compute_seconds: 0.0,
        }),
        Message::Error(ErrorReport {
            round: Some(3),
            reason: "wrong length".into(),
        }),
        Message::Goodbye(Goodbye {
            reason: "shutting down".into(),
        }),
        Message::Offer(Offer {
            signature: "{\"manifest\":{}}".into(),
            component: (0..300).map(|i| (i % 251) as u8).collect(),
        }),
        Message::ComponentStatus(ComponentStatus {
            digest: "ef".repeat(32),
            state: ComponentState::Ready,
            round: None,
            reason: String::new(),
        }),
        Message::Stock(Stock {
            pixels: (0..3 * IMAGE_LEN).map(|i| (i % 11) as u8).collect(),
            labels: vec![0, 9, 4],
            cache: SampleRefs {
                ids: vec![7, 70, 700],
                held: vec![false; 3],
                reset: true,
            },
        }),
        Message::Prefetch(Prefetch {
            round: 5,
            pixels: (0..2 * IMAGE_LEN).map(|i| (i % 7) as u8).collect(),
            labels: vec![1, 8],
            cache: None,
            head_start: None,
        }),
        Message::Assign(Assign {
            round: 7,
            params_version: 3,
            learning_rate: 0.04,
            steps: vec![5, 5],
            reply: UpdateKind::Delta,
            params: vec![],
            params_encoding: crate::Encoding::F32,
            params_base: None,
            reply_encoding: crate::Encoding::F32,
            shift: 0,
            prefetched: false,
            pixels: vec![5; 2 * IMAGE_LEN],
            labels: vec![4, 6],
            cache: Some(SampleRefs {
                ids: (100..110).collect(),
                held: (0..10).map(|i| i != 3 && i != 9).collect(),
                reset: true,
            }),
            component: String::new(),
        }),
        Message::Prefetch(Prefetch {
            round: 8,
            pixels: vec![],
            labels: vec![],
            cache: Some(SampleRefs {
                ids: vec![1, 2, 3],
                held: vec![true; 3],
                reset: false,
            }),
            head_start: None,
        }),
        // Int4 both ways: values an int4 round trip keeps (multiples of a
        // block's power-of-two scale within 7 of it), deflated on the wire.
        Message::Assign(Assign {
            round: 9,
            params_version: 4,
            learning_rate: 0.05,
            steps: vec![1],
            reply: UpdateKind::Delta,
            params: int4_exact(130),
            params_encoding: crate::Encoding::Int4,
            params_base: Some(3),
            reply_encoding: crate::Encoding::Int4,
            shift: 2,
            prefetched: false,
            pixels: vec![0; IMAGE_LEN],
            labels: vec![7],
            cache: None,
            component: String::new(),
        }),
        Message::Result(RoundResult {
            round: 9,
            params_version: 4,
            samples: 1,
            loss_sum: 0.5,
            correct: 1,
            kind: UpdateKind::Delta,
            values: int4_exact(67),
            encoding: crate::Encoding::Int4,
            compute_seconds: 0.25,
        }),
        Message::Prefetch(Prefetch {
            round: 6,
            pixels: vec![0; 3 * IMAGE_LEN],
            labels: vec![0, 1, 2],
            cache: None,
            head_start: Some(HeadStart {
                learning_rate: 0.07,
                steps: vec![2, 1],
                shift: 2,
                own_share: 0.25,
            }),
        }),
    ]
}

/// `n` values an int4 round trip keeps as they are (each block's largest
/// is 7 quarters, so its scale is a quarter).
fn int4_exact(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 5 % 15) as f32 - 7.0) / 4.0).collect()
}

/// The sample prefetch that comes with a head start.
fn head_start_sample() -> Prefetch {
    match samples().pop() {
        Some(Message::Prefetch(p)) => p,
        _ => unreachable!("the last sample is a prefetch with a head start"),
    }
}

/// The sample assignment that names kept samples.
fn kept_sample() -> Assign {
    samples()
        .into_iter()
        .find_map(|m| match m {
            Message::Assign(a) if a.cache.is_some() => Some(a),
            _ => None,
        })
        .expect("a sample assignment with kept samples")
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let bytes = encode(&m);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes[1], m.kind());
        assert_eq!(decode(&bytes), Ok(m));
    }
}

#[test]
fn deflated_parameters_that_do_not_inflate_to_their_count_are_refused() {
    let int4 =
        |m: &Message| matches!(m, Message::Assign(a) if a.params_encoding == crate::Encoding::Int4);
    let assign = samples().into_iter().find(int4).expect("an int4 sample");
    let good = encode(&assign);
    let header_len = u32::from_le_bytes([good[2], good[3], good[4], good[5]]) as usize;
    // Flip a byte inside the deflated parameters (they come first).
    let mut v = good.clone();
    v[6 + header_len + 3] ^= 0x55;
    assert!(
        matches!(
            decode(&v),
            Err(ProtocolError::Payload { kind: "assign", .. })
                | Err(ProtocolError::Header { kind: "assign", .. })
        ),
        "{:?}",
        decode(&v)
    );
    // A result whose deflated values stop short.
    let result = samples()
        .into_iter()
        .find(|m| matches!(m, Message::Result(r) if r.encoding == crate::Encoding::Int4))
        .expect("an int4 result");
    let mut v = encode(&result);
    v.truncate(v.len() - 2);
    assert!(matches!(
        decode(&v),
        Err(ProtocolError::Payload { kind: "result", .. })
    ));
    // Deflated bytes of more values than the header counts.
    let mut more = Vec::new();
    crate::Encoding::Int4.put(&mut more, &int4_exact(67 + 64));
    let mut v = encode(&result);
    let header_len = u32::from_le_bytes([v[2], v[3], v[4], v[5]]) as usize;
    v.truncate(6 + header_len);
    v.extend_from_slice(&more);
    assert!(decode(&v).is_err(), "131 values where 67 were declared");
}

#[test]
fn a_receiver_that_knows_its_model_refuses_longer_vectors_before_decoding_them() {
    // A million deflated zeros: about 5 KB on the wire, 4 MB decoded.
    let zeros = Message::Result(RoundResult {
        round: 1,
        params_version: 0,
        samples: 1,
        loss_sum: 0.0,
        correct: 0,
        kind: UpdateKind::Delta,
        values: vec![0.0; 1 << 20],
        encoding: crate::Encoding::Int4,
        compute_seconds: 0.0,
    });
    let bytes = encode(&zeros);
    assert!(bytes.len() < 8192, "{} bytes", bytes.len());
    assert!(matches!(
        crate::decode_within(&bytes, 61_706),
        Err(ProtocolError::Header { kind: "result", .. })
    ));
    assert_eq!(crate::decode_within(&bytes, 1 << 20), Ok(zeros));
    for m in samples() {
        let bytes = encode(&m);
        assert_eq!(
            crate::decode_within(&bytes, 130),
            Ok(m),
            "small vectors pass"
        );
    }
}

#[test]
fn an_assignment_with_its_parameters_encoded_beforehand_is_the_same_frame() {
    for m in samples() {
        let Message::Assign(a) = &m else { continue };
        let mut params = Vec::new();
        a.params_encoding.put(&mut params, &a.params);
        let encoded = crate::EncodedParams {
            bytes: &params,
            len: a.params.len(),
        };
        assert_eq!(crate::encode_assign(a, Some(encoded)), encode(&m));
    }
}

#[test]
fn bulk_data_is_raw_little_endian() {
    // A full LeNet-5 parameter vector costs exactly 4 bytes per parameter.
    let values: Vec<f32> = (0..61_706).map(|i| i as f32 * 0.5).collect();
    let m = Message::Result(RoundResult {
        round: 1,
        params_version: 0,
        samples: 64,
        loss_sum: 0.0,
        correct: 0,
        kind: UpdateKind::Params,
        values: values.clone(),
        encoding: crate::Encoding::F32,
        compute_seconds: 0.0,
    });
    let bytes = encode(&m);
    let header_len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    assert!(header_len < 32, "header is {header_len} bytes");
    assert_eq!(bytes.len(), 6 + header_len + 61_706 * 4);
    let payload = &bytes[6 + header_len..];
    assert_eq!(&payload[4..8], &0.5f32.to_le_bytes());
}

#[test]
fn malformed_frames_are_errors() {
    let good = encode(&samples()[5]);
    assert!(matches!(decode(&[]), Err(ProtocolError::Truncated { .. })));
    let mut v = good.clone();
    v[0] = 1;
    assert_eq!(
        decode(&v),
        Err(ProtocolError::Version {
            found: 1,
            supported: VERSION
        })
    );
    let mut v = good.clone();
    v[1] = 99;
    assert_eq!(decode(&v), Err(ProtocolError::UnknownKind(99)));
    let mut v = good.clone();
    v.push(0);
    assert!(matches!(
        decode(&v),
        Err(ProtocolError::PayloadLength { kind: "assign", .. })
    ));
    let mut v = good.clone();
    let last = v.len() - 1;
    v[last] = 10; // the last label
    assert_eq!(
        decode(&v),
        Err(ProtocolError::BadLabel {
            index: 1,
            value: 10
        })
    );
    let mut v = encode(&samples()[8]);
    v.push(1);
    assert!(matches!(
        decode(&v),
        Err(ProtocolError::PayloadLength { kind: "error", .. })
    ));
    // Steps that do not add up to the samples sent.
    let Message::Assign(mut a) = samples()[5].clone() else {
        unreachable!()
    };
    a.steps = vec![1];
    assert!(matches!(
        decode(&encode(&Message::Assign(a.clone()))),
        Err(ProtocolError::Header { kind: "assign", .. })
    ));
    a.steps = vec![0, 2];
    assert!(
        decode(&encode(&Message::Assign(a))).is_err(),
        "an empty step"
    );
    // A head start whose steps do not split the images sent.
    for steps in [vec![2], vec![0, 3], vec![2, 2]] {
        let mut p = head_start_sample();
        if let Some(h) = p.head_start.as_mut() {
            h.steps = steps;
        }
        assert!(matches!(
            decode(&encode(&Message::Prefetch(p))),
            Err(ProtocolError::Header {
                kind: "prefetch",
                ..
            })
        ));
    }
    // A share of the round that is not one.
    for share in [-0.5, 1.5, f32::NAN, f32::INFINITY] {
        let mut p = head_start_sample();
        if let Some(h) = p.head_start.as_mut() {
            h.own_share = share;
        }
        assert!(
            matches!(
                decode(&encode(&Message::Prefetch(p))),
                Err(ProtocolError::Header {
                    kind: "prefetch",
                    ..
                })
            ),
            "share {share}"
        );
    }
    // A header length that points past the end.
    let mut v = encode(&samples()[9]);
    v[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&v), Err(ProtocolError::Truncated { .. })));
    assert!(matches!(
        decode(&vec![0u8; MAX_FRAME + 1]),
        Err(ProtocolError::TooLarge(_))
    ));
}

#[test]
fn every_truncation_of_every_message_is_an_error() {
    for m in samples() {
        let bytes = encode(&m);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{m:?} cut at {cut} decoded");
        }
    }
}

/// Decoding is total: random and mutated frames never panic.
#[test]
fn random_and_mutated_frames_never_panic() {
    let mut rng = Pcg64Mcg::seed_from_u64(42);
    let good: Vec<Vec<u8>> = samples().iter().map(encode).collect();
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let mut noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if len > 1 && rng.random_bool(0.5) {
            noise[0] = VERSION;
            noise[1] = rng.random_range(1..=8);
        }
        let _ = decode(&noise);
    }
    for _ in 0..20_000 {
        let mut v = good[rng.random_range(0..good.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..v.len());
            v[i] = rng.random();
        }
        let _ = decode(&v);
    }
}

#[test]
fn sample_references_must_fit_what_is_sent() {
    let assign = |ids: Vec<u32>, held: Vec<bool>, sent: usize, steps: Vec<u32>| {
        encode(&Message::Assign(Assign {
            steps,
            pixels: vec![0; sent * IMAGE_LEN],
            labels: vec![0; sent],
            cache: Some(SampleRefs {
                ids,
                held,
                reset: false,
            }),
            ..kept_sample()
        }))
    };
    // Steps split all the round's samples, held ones included.
    assert!(decode(&assign(vec![1, 2, 3], vec![true, false, true], 1, vec![3])).is_ok());
    assert!(decode(&assign(vec![1, 2, 3], vec![true, false, true], 1, vec![1])).is_err());
    // One sample sent, two not held.
    let e = decode(&assign(vec![1, 2, 3], vec![true, false, false], 1, vec![3])).unwrap_err();
    assert!(e.to_string().contains("not held"), "{e}");
    // A bitmap that does not fit the ids: too short, or bits past them.
    let e = decode(&assign(
        (0..9).collect(),
        vec![true, false, true],
        1,
        vec![9],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("bitmap"), "{e}");
    let e = decode(&assign(vec![1, 2], vec![true, false, true], 1, vec![2])).unwrap_err();
    assert!(e.to_string().contains("past the last"), "{e}");
}

#[test]
fn a_stock_brings_every_sample_it_names() {
    let stock = |held: Vec<bool>, sent: usize| {
        encode(&Message::Stock(Stock {
            pixels: vec![0; sent * IMAGE_LEN],
            labels: vec![1; sent],
            cache: SampleRefs {
                ids: (0..held.len() as u32).collect(),
                held,
                reset: false,
            },
        }))
    };
    assert!(decode(&stock(vec![false, false], 2)).is_ok());
    // A stock that names a sample as held would add nothing for it.
    let e = decode(&stock(vec![false, true], 1)).unwrap_err();
    assert!(e.to_string().contains("only brings new ones"), "{e}");
    // Labels that do not match the samples named.
    assert!(decode(&stock(vec![false, false], 1)).is_err());
}
