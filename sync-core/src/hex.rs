//! Lowercase hex for hashes and actor ids in JSON, logs and stores.

/// Lowercase hex of some bytes.
pub fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes from lowercase or uppercase hex, `None` if it is not hex.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(encode(&[0, 15, 255]), "000fff");
        assert_eq!(decode("000fff").unwrap(), vec![0, 15, 255]);
        assert_eq!(decode("00FF").unwrap(), vec![0, 255]);
        assert!(decode("0g").is_none());
        assert!(decode("abc").is_none());
    }
}
