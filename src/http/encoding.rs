//! Content codings of `/graphql` answers (RFC 9110 §8.4.1 and §12.5.3): gzip or brotli, as the
//! client's `Accept-Encoding` prefers, for bodies of at least [`MIN_BYTES`]. The response cache
//! keeps each answer's compressed forms beside it (`cache::CachedAnswer::encoded`), so a warm hit
//! never compresses again; the other routes (the dashboard's files, GraphiQL) go through
//! tower-http's compression layer.
//!
//! Each coding is its own representation, so it has its own entity tag: the identity answer's
//! `"<sha256>"`, and `"<sha256>-gzip"` / `"<sha256>-br"` for the compressed ones (RFC 9110
//! §8.8.3.3).

use std::io::Write;

use axum::body::Bytes;

/// Bodies below this many bytes are sent as they are: compressing them saves less than it costs.
pub const MIN_BYTES: usize = 1024;

/// A content coding this gateway can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` value; `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }

    /// The entity tag of this coding's representation of the answer tagged `etag` (a quoted
    /// strong tag).
    pub fn etag(self, etag: &str) -> String {
        match self.header() {
            None => etag.to_owned(),
            Some(name) => match etag.strip_suffix('"') {
                Some(open) => format!("{open}-{name}\""),
                None => format!("{etag}-{name}"),
            },
        }
    }

    /// `body` in this coding. Errors only if the encoder's writer fails, which a `Vec` does not.
    pub fn encode(self, body: &[u8]) -> Bytes {
        match self {
            Coding::Identity => Bytes::copy_from_slice(body),
            Coding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                encoder
                    .write_all(body)
                    .expect("writing to a Vec cannot fail");
                encoder
                    .finish()
                    .expect("writing to a Vec cannot fail")
                    .into()
            }
            Coding::Brotli => {
                let mut out = Vec::new();
                {
                    // Quality 5 of 11: most of the size gain at a fraction of the top level's time.
                    let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    encoder
                        .write_all(body)
                        .expect("writing to a Vec cannot fail");
                }
                out.into()
            }
        }
    }
}

/// The coding to send for `accept_encoding` (RFC 9110 §12.5.3): the acceptable one (q > 0) with
/// the highest weight, brotli before gzip at equal weight; identity when the header is absent or
/// names neither. `*` stands for any coding not listed.
pub fn negotiate(accept_encoding: Option<&str>) -> Coding {
    let Some(header) = accept_encoding else {
        return Coding::Identity;
    };
    let mut gzip: Option<f32> = None;
    let mut br: Option<f32> = None;
    let mut any: Option<f32> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match name.as_str() {
            "gzip" | "x-gzip" => gzip = Some(weight),
            "br" => br = Some(weight),
            "*" => any = Some(weight),
            _ => {}
        }
    }
    let br = br.or(any).unwrap_or(0.0);
    let gzip = gzip.or(any).unwrap_or(0.0);
    if br > 0.0 && br >= gzip {
        Coding::Brotli
    } else if gzip > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn negotiation_follows_the_weights() {
        assert_eq!(negotiate(None), Coding::Identity);
        assert_eq!(negotiate(Some("")), Coding::Identity);
        assert_eq!(negotiate(Some("gzip")), Coding::Gzip);
        assert_eq!(negotiate(Some("gzip, deflate, br")), Coding::Brotli);
        assert_eq!(negotiate(Some("br;q=0.5, gzip")), Coding::Gzip);
        assert_eq!(negotiate(Some("br;q=0, gzip;q=0")), Coding::Identity);
        assert_eq!(negotiate(Some("*")), Coding::Brotli);
        assert_eq!(negotiate(Some("gzip;q=1, *;q=0")), Coding::Gzip);
        assert_eq!(negotiate(Some("deflate, identity")), Coding::Identity);
    }

    #[test]
    fn both_codings_decode_to_the_body() {
        let body = br#"{"data":{"contacts":[{"id":"a"},{"id":"b"}]}}"#.repeat(50);
        let mut gunzipped = Vec::new();
        flate2::read::GzDecoder::new(&Coding::Gzip.encode(&body)[..])
            .read_to_end(&mut gunzipped)
            .unwrap();
        assert_eq!(gunzipped, body);
        let mut unbrotlied = Vec::new();
        brotli::Decompressor::new(&Coding::Brotli.encode(&body)[..], 4096)
            .read_to_end(&mut unbrotlied)
            .unwrap();
        assert_eq!(unbrotlied, body);
    }

    #[test]
    fn each_coding_has_its_own_tag() {
        assert_eq!(Coding::Identity.etag("\"abc\""), "\"abc\"");
        assert_eq!(Coding::Gzip.etag("\"abc\""), "\"abc-gzip\"");
        assert_eq!(Coding::Brotli.etag("\"abc\""), "\"abc-br\"");
    }
}
