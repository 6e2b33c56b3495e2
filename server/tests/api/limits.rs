//! Resource limits: per-user rate limits with `Retry-After`, compressed bodies, DEFLATE bombs
//! inside Automerge changes, and the cap on changes per push.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use linli_sync_core::RecordKind;
use linli_sync_core::protocol::{self, PushChange, RejectCode, SyncRequest};

use crate::common::{TestApp, new_case, push};

#[tokio::test]
async fn a_user_over_the_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::demo_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 3;
        c.login_per_minute = 1;
        c.login_burst = 4;
    })
    .await;
    let bus1 = app.login("bus1").await;
    let bus2 = app.login("bus2").await;
    for _ in 0..3 {
        let (status, _) = app.json("GET", "/v1/places", Some(&bus1.token), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let req = Request::get("/v1/places")
        .header(header::AUTHORIZATION, format!("Bearer {}", bus1.token))
        .body(Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "too_many_requests");
    // Keyed on the token's subject: another user is not slowed down.
    let (status, _) = app.json("GET", "/v1/places", Some(&bus2.token), None).await;
    assert_eq!(status, StatusCode::OK);
    // Password guessing is limited per user name.
    let mut statuses = vec![];
    for _ in 0..5 {
        let body = serde_json::json!({"username": "office1", "password": "guess",
                                      "device_id": uuid::Uuid::new_v4().to_string()});
        statuses.push(app.json("POST", "/v1/auth/login", None, Some(body)).await.0);
    }
    assert_eq!(statuses[..4], [StatusCode::UNAUTHORIZED; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn compressed_bodies_are_refused_before_they_are_read() {
    let app = TestApp::demo().await;
    let phone = app.login("bus1").await;
    // A gzip bomb: 64 MiB of zeros in about 64 KiB, sent as Content-Encoding: gzip.
    let mut gz = Vec::new();
    {
        let mut enc = GzipLike::new(&mut gz);
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    }
    for (uri, ct) in [
        ("/v1/sync", protocol::CONTENT_TYPE),
        ("/v1/auth/login", "application/json"),
    ] {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", phone.token))
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(gz.clone()))
            .unwrap();
        let (status, _, body) = app.send(req).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{uri}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"].as_str().unwrap().contains("compressed"), "{v}");
    }
}

/// A stand-in "compressor" (the server refuses by header, whatever the bytes).
struct GzipLike<'a>(&'a mut Vec<u8>);
impl<'a> GzipLike<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0]);
        Self(out)
    }
}
impl Write for GzipLike<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(&buf[..buf.len().min(64)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_deflate_bomb_inside_a_change_is_rejected_quickly() {
    let app = TestApp::demo().await;
    let mut phone = app.login("bus1").await;
    let (doc, _) = new_case(&phone, "hz/baiyang/haitian", "noise");
    // Automerge's compressed-change chunk: magic, checksum, type 2, length, DEFLATE data that
    // inflates to 20 MiB.
    let mut deflated = vec![];
    {
        let mut enc = flate2_like::deflate_zeros(20 << 20);
        deflated.append(&mut enc);
    }
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = deflated.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            chunk.push(b);
            break;
        }
        chunk.push(b | 0x80);
    }
    chunk.extend_from_slice(&deflated);
    assert!(chunk.len() < protocol::MAX_CHANGE_BYTES);
    let bomb = PushChange {
        record: *doc.id().as_bytes(),
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: chunk,
    };
    let started = std::time::Instant::now();
    let (status, reply) = app.sync(&mut phone, vec![bomb.clone(); 20], 0).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.rejected.len(), 20);
    assert!(
        reply
            .rejected
            .iter()
            .all(|r| r.code == RejectCode::MalformedChange && r.message.contains("inflates past"))
    );
    // 20 × 20 MiB (and two copies of each inside Automerge) would take seconds; refusing after 256 KiB each does not.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// DEFLATE without a compression crate in the tests: stored zeros would not be a bomb, so this
/// builds the stream by hand from fixed-Huffman blocks of long back-references.
mod flate2_like {
    /// A DEFLATE stream that inflates to `n` zero bytes (a literal 0, then runs of 258-byte
    /// copies at distance 1), far smaller than `n`.
    pub fn deflate_zeros(n: usize) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(1, 1); // BFINAL
        w.bits(1, 2); // BTYPE = fixed Huffman
        w.lit(0);
        let mut left = n - 1;
        while left >= 258 {
            w.len258_dist1();
            left -= 258;
        }
        for _ in 0..left {
            w.lit(0);
        }
        w.code(0, 7); // end of block (256): 7-bit code 0000000
        w.finish()
    }

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl BitWriter {
        fn bits(&mut self, v: u32, count: u32) {
            self.acc |= v << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            for i in (0..len).rev() {
                self.bits((code >> i) & 1, 1);
            }
        }
        /// Literal 0..=143: 8-bit codes 00110000 + v.
        fn lit(&mut self, v: u32) {
            self.code(0x30 + v, 8);
        }
        /// Length 258 (symbol 285: 8-bit code 11000101), distance 1 (5-bit code 0).
        fn len258_dist1(&mut self) {
            self.code(0xc5, 8);
            self.code(0, 5);
        }
        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }
}

#[tokio::test]
async fn a_push_over_the_change_cap_is_413() {
    let app = TestApp::demo().await;
    let phone = app.login("bus1").await;
    let (doc, c) = new_case(&phone, "hz/baiyang/haitian", "noise");
    let req = SyncRequest {
        changes: vec![push(&doc, RecordKind::Case, &c); protocol::MAX_CHANGES_PER_PUSH + 1],
        ..Default::default()
    };
    let (status, _, body) = app
        .sync_raw(&phone.token, protocol::CONTENT_TYPE, req.encode())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("1001 changes"),
        "{v}"
    );
}
