//! Frames to messages and back.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::ProtocolError;
use crate::messages::*;
use crate::{IMAGE_LEN, MAX_FRAME, VERSION, pixels};

/// Bytes before the header: version, kind, header length.
const PREFIX: usize = 6;

/// Control fields of [`Assign`] (the bulk data follows as payload).
#[derive(Serialize, Deserialize)]
struct AssignHeader {
    round: u64,
    params_version: u64,
    learning_rate: f32,
    steps: Vec<u32>,
    reply: UpdateKind,
    /// Number of parameters in the payload.
    params_len: u32,
    /// Bytes they take (deflated int4 varies).
    params_bytes: u32,
    params_encoding: Encoding,
    params_base: Option<u64>,
    reply_encoding: Encoding,
    shift: u8,
    prefetched: bool,
    samples: u32,
    /// Bytes of the coded pixels.
    pixels_len: u32,
    cache: Option<RefsHeader>,
    component: String,
}

/// [`SampleRefs`] on the wire: `held` as a bitmap (bit `i % 8` of byte
/// `i / 8`), unused bits zero.
#[derive(Serialize, Deserialize)]
struct RefsHeader {
    ids: Vec<u32>,
    held: Vec<u8>,
    reset: bool,
}

impl RefsHeader {
    fn from(refs: &SampleRefs) -> Self {
        let mut held = vec![0u8; refs.held.len().div_ceil(8)];
        for (i, _) in refs.held.iter().enumerate().filter(|(_, h)| **h) {
            held[i / 8] |= 1 << (i % 8);
        }
        Self {
            ids: refs.ids.clone(),
            held,
            reset: refs.reset,
        }
    }

    /// The references, if the bitmap fits the ids and `sent` samples are
    /// the ones not held.
    fn refs(self, kind: &'static str, sent: usize) -> Result<SampleRefs, ProtocolError> {
        let n = self.ids.len();
        let bad = |reason: String| ProtocolError::Header { kind, reason };
        if self.held.len() != n.div_ceil(8) {
            return Err(bad(format!(
                "a held bitmap of {} bytes for {n} samples",
                self.held.len()
            )));
        }
        if !n.is_multiple_of(8) && self.held.last().is_some_and(|&b| b >> (n % 8) != 0) {
            return Err(bad("held bits past the last sample".into()));
        }
        let held: Vec<bool> = (0..n)
            .map(|i| self.held[i / 8] >> (i % 8) & 1 == 1)
            .collect();
        let refs = SampleRefs {
            ids: self.ids,
            held,
            reset: self.reset,
        };
        if refs.sent() != sent {
            return Err(bad(format!(
                "{sent} samples sent, but {} of {n} are not held",
                refs.sent()
            )));
        }
        Ok(refs)
    }
}

/// Control fields of [`Prefetch`] (coded pixels, then labels, follow).
#[derive(Serialize, Deserialize)]
struct PrefetchHeader {
    round: u64,
    samples: u32,
    pixels_len: u32,
    cache: Option<RefsHeader>,
    head_start: Option<HeadStart>,
}

/// Control fields of [`Stock`] (coded pixels, then labels, follow).
#[derive(Serialize, Deserialize)]
struct StockHeader {
    samples: u32,
    pixels_len: u32,
    cache: RefsHeader,
}

/// Control fields of [`Offer`] (the component's bytes follow as payload).
#[derive(Serialize, Deserialize)]
struct OfferHeader {
    signature: String,
    len: u32,
}

/// Control fields of [`RoundResult`].
#[derive(Serialize, Deserialize)]
struct ResultHeader {
    round: u64,
    params_version: u64,
    samples: u32,
    loss_sum: f64,
    correct: u32,
    kind: UpdateKind,
    len: u32,
    encoding: Encoding,
    compute_seconds: f32,
}

fn frame(kind: u8, header: &impl Serialize, payload_len: usize) -> Vec<u8> {
    // postcard only fails on writer errors; a Vec writer cannot fail.
    let header = postcard::to_allocvec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(PREFIX + header.len() + payload_len);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// Encodes a message as one binary frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let kind = message.kind();
    match message {
        Message::Hello(m) => frame(kind, m, 0),
        Message::Welcome(m) => frame(kind, m, 0),
        Message::Reject(m) => frame(kind, m, 0),
        Message::Error(m) => frame(kind, m, 0),
        Message::Goodbye(m) => frame(kind, m, 0),
        Message::Challenge(m) => frame(kind, m, 0),
        Message::Proof(m) => frame(kind, m, 0),
        Message::ComponentStatus(m) => frame(kind, m, 0),
        Message::Offer(m) => {
            let header = OfferHeader {
                signature: m.signature.clone(),
                len: m.component.len() as u32,
            };
            let mut out = frame(kind, &header, m.component.len());
            out.extend_from_slice(&m.component);
            out
        }
        Message::Assign(m) => encode_assign(m, None),
        Message::Prefetch(m) => {
            let coded = coded_pixels(&m.pixels);
            let header = PrefetchHeader {
                round: m.round,
                samples: m.labels.len() as u32,
                pixels_len: coded.len() as u32,
                cache: m.cache.as_ref().map(RefsHeader::from),
                head_start: m.head_start.clone(),
            };
            let mut out = frame(kind, &header, coded.len() + m.labels.len());
            out.extend_from_slice(&coded);
            out.extend_from_slice(&m.labels);
            out
        }
        Message::Stock(m) => {
            let coded = coded_pixels(&m.pixels);
            let header = StockHeader {
                samples: m.labels.len() as u32,
                pixels_len: coded.len() as u32,
                cache: RefsHeader::from(&m.cache),
            };
            let mut out = frame(kind, &header, coded.len() + m.labels.len());
            out.extend_from_slice(&coded);
            out.extend_from_slice(&m.labels);
            out
        }
        Message::Result(m) => {
            let header = ResultHeader {
                round: m.round,
                params_version: m.params_version,
                samples: m.samples,
                loss_sum: m.loss_sum,
                correct: m.correct,
                kind: m.kind,
                len: m.values.len() as u32,
                encoding: m.encoding,
                compute_seconds: m.compute_seconds,
            };
            let mut out = frame(kind, &header, m.encoding.max_bytes(m.values.len()));
            m.encoding.put(&mut out, &m.values);
            out
        }
    }
}

/// A parameter vector already put in its encoding.
#[derive(Debug, Clone, Copy)]
pub struct EncodedParams<'a> {
    /// Its bytes, as [`Encoding::put`](crate::Encoding::put) wrote them.
    pub bytes: &'a [u8],
    /// How many values they hold.
    pub len: usize,
}

/// Encodes an assignment. With `params`, those stand for its parameters
/// in `m.params_encoding` and `m.params` is not read (it may be empty): a
/// coordinator that sends one model change to many devices encodes it
/// once and copies the values for none.
pub fn encode_assign(m: &Assign, params: Option<EncodedParams>) -> Vec<u8> {
    let coded = coded_pixels(&m.pixels);
    let params_len = params.map_or(m.params.len(), |p| p.len);
    // Deflated parameters are counted once encoded; the others go
    // straight into the frame (no second copy of a large model).
    let encoded = match params {
        Some(p) => Some(std::borrow::Cow::Borrowed(p.bytes)),
        None => m.params_encoding.is_deflated().then(|| {
            let mut bytes = Vec::new();
            m.params_encoding.put(&mut bytes, &m.params);
            std::borrow::Cow::Owned(bytes)
        }),
    };
    let params_bytes = encoded
        .as_ref()
        .map_or(m.params_encoding.max_bytes(params_len), |p| p.len());
    let header = AssignHeader {
        round: m.round,
        params_version: m.params_version,
        learning_rate: m.learning_rate,
        steps: m.steps.clone(),
        reply: m.reply,
        params_len: params_len as u32,
        params_bytes: params_bytes as u32,
        params_encoding: m.params_encoding,
        params_base: m.params_base,
        reply_encoding: m.reply_encoding,
        shift: m.shift,
        prefetched: m.prefetched,
        samples: m.labels.len() as u32,
        pixels_len: coded.len() as u32,
        cache: m.cache.as_ref().map(RefsHeader::from),
        component: m.component.clone(),
    };
    let mut out = frame(
        ASSIGN_KIND,
        &header,
        params_bytes + coded.len() + m.labels.len(),
    );
    match &encoded {
        Some(bytes) => out.extend_from_slice(bytes),
        None => m.params_encoding.put(&mut out, &m.params),
    }
    out.extend_from_slice(&coded);
    out.extend_from_slice(&m.labels);
    out
}

/// Decodes one frame. Total: any input gives a message or an error.
pub fn decode(bytes: &[u8]) -> Result<Message, ProtocolError> {
    decode_within(bytes, MAX_FRAME)
}

/// Decodes one frame whose vectors hold at most `max_values` values (a
/// receiver that knows its model's size refuses a larger vector before
/// it is decoded: a million deflated int4 zeros take 5 KB on the wire and
/// 4 MB decoded). Total, as [`decode`].
pub fn decode_within(bytes: &[u8], max_values: usize) -> Result<Message, ProtocolError> {
    let max_values = max_values.min(MAX_FRAME);
    if bytes.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    if bytes.len() < PREFIX {
        return Err(ProtocolError::Truncated {
            needed: PREFIX,
            have: bytes.len(),
        });
    }
    if bytes[0] != VERSION {
        return Err(ProtocolError::Version {
            found: bytes[0],
            supported: VERSION,
        });
    }
    let kind = bytes[1];
    let header_len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    let header_end = PREFIX
        .checked_add(header_len)
        .ok_or(ProtocolError::TooLarge(usize::MAX))?;
    if bytes.len() < header_end {
        return Err(ProtocolError::Truncated {
            needed: header_end,
            have: bytes.len(),
        });
    }
    let header = &bytes[PREFIX..header_end];
    let payload = &bytes[header_end..];
    let name = Message::kind_name(kind);
    // The payload must be exactly as long as the header says.
    let payload_is = |expected: usize| {
        if payload.len() == expected {
            Ok(())
        } else {
            Err(ProtocolError::PayloadLength {
                kind: name,
                expected,
                found: payload.len(),
            })
        }
    };
    let no_payload = |m: Message| payload_is(0).map(|()| m);
    match kind {
        1 => no_payload(Message::Hello(parse(name, header)?)),
        2 => no_payload(Message::Welcome(parse(name, header)?)),
        3 => no_payload(Message::Reject(parse(name, header)?)),
        7 => no_payload(Message::Error(parse(name, header)?)),
        8 => no_payload(Message::Goodbye(parse(name, header)?)),
        9 => no_payload(Message::Challenge(parse(name, header)?)),
        10 => no_payload(Message::Proof(parse(name, header)?)),
        12 => no_payload(Message::ComponentStatus(parse(name, header)?)),
        11 => {
            let h: OfferHeader = parse(name, header)?;
            payload_is(h.len as usize)?;
            Ok(Message::Offer(Offer {
                signature: h.signature,
                component: payload.to_vec(),
            }))
        }
        ASSIGN_KIND => {
            let h: AssignHeader = parse(name, header)?;
            too_many(name, h.params_len, max_values)?;
            let params_bytes = h.params_bytes as usize;
            let most = h.params_encoding.max_bytes(h.params_len as usize);
            if params_bytes > most {
                return Err(ProtocolError::Header {
                    kind: name,
                    reason: format!(
                        "{params_bytes} bytes of {} {} parameters (at most {most})",
                        h.params_len, h.params_encoding
                    ),
                });
            }
            let samples = h.samples as usize;
            let cache = h.cache.map(|c| c.refs(name, samples)).transpose()?;
            // Prefetched samples are not sent again: the worker holds them.
            if !h.prefetched {
                let total = cache.as_ref().map_or(samples, |c| c.ids.len());
                check_steps(name, &h.steps, total)?;
            } else if samples != 0 || cache.is_some() || h.steps.contains(&0) {
                return Err(steps_error(name, &h.steps, samples));
            }
            let expected = params_bytes
                .checked_add(h.pixels_len as usize)
                .and_then(|n| n.checked_add(samples))
                .ok_or(ProtocolError::TooLarge(usize::MAX))?;
            payload_is(expected)?;
            let (params, rest) = payload.split_at(params_bytes);
            let params = h
                .params_encoding
                .get(params, h.params_len as usize)
                .map_err(|reason| ProtocolError::Payload { kind: name, reason })?;
            let (pixels, labels) = images(name, rest, h.pixels_len as usize, samples)?;
            Ok(Message::Assign(Assign {
                round: h.round,
                params_version: h.params_version,
                learning_rate: h.learning_rate,
                steps: h.steps,
                reply: h.reply,
                params,
                params_encoding: h.params_encoding,
                params_base: h.params_base,
                reply_encoding: h.reply_encoding,
                shift: h.shift,
                prefetched: h.prefetched,
                pixels,
                labels,
                cache,
                component: h.component,
            }))
        }
        13 => {
            let h: PrefetchHeader = parse(name, header)?;
            let samples = h.samples as usize;
            let cache = h.cache.map(|c| c.refs(name, samples)).transpose()?;
            if let Some(start) = &h.head_start {
                let total = cache.as_ref().map_or(samples, |c| c.ids.len());
                check_steps(name, &start.steps, total)?;
                if !(0.0..=1.0).contains(&start.own_share) {
                    return Err(ProtocolError::Header {
                        kind: name,
                        reason: format!(
                            "a worker's share of a round must be 0 to 1, not {}",
                            start.own_share
                        ),
                    });
                }
            }
            let (pixels, labels) = image_payload(name, payload, h.pixels_len as usize, samples)?;
            Ok(Message::Prefetch(Prefetch {
                round: h.round,
                pixels,
                labels,
                cache,
                head_start: h.head_start,
            }))
        }
        14 => {
            let h: StockHeader = parse(name, header)?;
            let samples = h.samples as usize;
            let cache = h.cache.refs(name, samples)?;
            if cache.sent() != cache.ids.len() {
                return Err(ProtocolError::Header {
                    kind: name,
                    reason: "a stock names samples as held: it only brings new ones".into(),
                });
            }
            let (pixels, labels) = image_payload(name, payload, h.pixels_len as usize, samples)?;
            Ok(Message::Stock(Stock {
                pixels,
                labels,
                cache,
            }))
        }
        5 => {
            let h: ResultHeader = parse(name, header)?;
            too_many(name, h.len, max_values)?;
            let most = h.encoding.max_bytes(h.len as usize);
            if payload.len() > most {
                return Err(ProtocolError::PayloadLength {
                    kind: name,
                    expected: most,
                    found: payload.len(),
                });
            }
            let values = h
                .encoding
                .get(payload, h.len as usize)
                .map_err(|reason| ProtocolError::Payload { kind: name, reason })?;
            Ok(Message::Result(RoundResult {
                round: h.round,
                params_version: h.params_version,
                samples: h.samples,
                loss_sum: h.loss_sum,
                correct: h.correct,
                kind: h.kind,
                values,
                encoding: h.encoding,
                compute_seconds: h.compute_seconds,
            }))
        }
        other => Err(ProtocolError::UnknownKind(other)),
    }
}

/// An error if a vector of `len` values is longer than `max_values`.
fn too_many(kind: &'static str, len: u32, max_values: usize) -> Result<(), ProtocolError> {
    if len as usize > max_values {
        return Err(ProtocolError::Header {
            kind,
            reason: format!("{len} values where at most {max_values} are expected"),
        });
    }
    Ok(())
}

/// `pixels` run-length coded.
/// An error unless `steps` (samples per local step) are none empty and
/// add up to `samples`.
fn check_steps(kind: &'static str, steps: &[u32], samples: usize) -> Result<(), ProtocolError> {
    let stepped: u64 = steps.iter().map(|&n| u64::from(n)).sum();
    if stepped != samples as u64 || steps.contains(&0) {
        return Err(steps_error(kind, steps, samples));
    }
    Ok(())
}

/// Local steps that do not split the samples they are for.
fn steps_error(kind: &'static str, steps: &[u32], samples: usize) -> ProtocolError {
    ProtocolError::Header {
        kind,
        reason: format!("local steps {steps:?} do not split the {samples} samples"),
    }
}

fn coded_pixels(pixels: &[u8]) -> Vec<u8> {
    let mut coded = Vec::with_capacity(pixels.len() / 3);
    pixels::put(&mut coded, pixels);
    coded
}

/// The pixels and labels of `samples` images from `bytes` (`coded_len`
/// bytes of coded pixels, then the labels; the caller checked the length).
/// The images of a payload that holds nothing else (`coded_len` bytes of
/// coded pixels, then `samples` labels), which must be exactly that long.
fn image_payload(
    kind: &'static str,
    payload: &[u8],
    coded_len: usize,
    samples: usize,
) -> Result<(Vec<u8>, Vec<u8>), ProtocolError> {
    let expected = coded_len
        .checked_add(samples)
        .ok_or(ProtocolError::TooLarge(usize::MAX))?;
    if payload.len() != expected {
        return Err(ProtocolError::PayloadLength {
            kind,
            expected,
            found: payload.len(),
        });
    }
    images(kind, payload, coded_len, samples)
}

fn images(
    kind: &'static str,
    bytes: &[u8],
    coded_len: usize,
    samples: usize,
) -> Result<(Vec<u8>, Vec<u8>), ProtocolError> {
    let pixels_len = samples
        .checked_mul(IMAGE_LEN)
        .filter(|&n| n <= MAX_FRAME)
        .ok_or(ProtocolError::TooLarge(usize::MAX))?;
    let (coded, labels) = bytes.split_at(coded_len.min(bytes.len()));
    let pixels =
        pixels::get(coded, pixels_len).map_err(|reason| ProtocolError::Header { kind, reason })?;
    if let Some(index) = labels.iter().position(|&l| l > 9) {
        return Err(ProtocolError::BadLabel {
            index,
            value: labels[index],
        });
    }
    Ok((pixels, labels.to_vec()))
}

/// Decodes a header that must use every byte.
fn parse<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, ProtocolError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| ProtocolError::Header {
        kind,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ProtocolError::Header {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
