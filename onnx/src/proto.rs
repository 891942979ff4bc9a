//! Just enough of the protobuf wire format to write ONNX messages: varint,
//! and length-delimited fields (repeated scalars unpacked, which
//! every protobuf reader accepts).

/// One message being written.
#[derive(Debug, Default, Clone)]
pub struct Message(Vec<u8>);

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    fn tag(&mut self, field: u32, wire: u64) {
        varint(&mut self.0, (u64::from(field) << 3) | wire);
    }

    /// An `int64`/`int32`/enum field.
    pub fn int(mut self, field: u32, v: i64) -> Self {
        self.tag(field, VARINT);
        varint(&mut self.0, v as u64);
        self
    }

    /// A repeated integer field, one entry per value.
    pub fn ints(mut self, field: u32, vs: &[i64]) -> Self {
        for &v in vs {
            self = self.int(field, v);
        }
        self
    }

    /// A `bytes` field.
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        self.tag(field, LEN);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    /// A `string` field.
    pub fn string(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }

    /// An embedded message field.
    pub fn message(self, field: u32, m: &Message) -> Self {
        self.bytes(field, &m.0)
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_encoded_as_the_protobuf_spec_says() {
        // The spec's examples: field 1 = 150 is 08 96 01; a string "testing" in
        // field 2 is 12 07 74 65 73 74 69 6e 67.
        assert_eq!(Message::new().int(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
        assert_eq!(
            Message::new().string(2, "testing").into_bytes(),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        // Negative int64 values take ten bytes (two's complement as u64).
        assert_eq!(Message::new().int(1, -1).into_bytes().len(), 11);
        let inner = Message::new().int(1, 150);
        assert_eq!(
            Message::new().message(3, &inner).into_bytes(),
            [0x1a, 0x03, 0x08, 0x96, 0x01]
        );
    }
}
