//! HTTP basic authentication for the stand-in API endpoints.
//!
//! Credentials are compared without early exit and are never logged.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::StandIn;
use super::handlers::ApiError;

/// Middleware rejecting requests without the configured basic-auth credentials.
pub(super) async fn require_basic_auth(
    State(stand_in): State<StandIn>,
    req: Request,
    next: Next,
) -> Response {
    let Some((user, password)) = stand_in.config.basic_auth.as_ref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_basic);
    let authorised = presented.is_some_and(|(u, p)| {
        // Evaluate both comparisons, whatever the first one says.
        same_bytes(&u, user.as_bytes()) & same_bytes(&p, password.as_bytes())
    });
    if authorised {
        next.run(req).await
    } else {
        tracing::debug!(
            path = req.uri().path(),
            "stand-in: missing or wrong credentials"
        );
        ApiError::unauthorised().into_response()
    }
}

/// Parses an `Authorization: Basic <base64(user:password)>` value into its
/// user and password bytes.
fn parse_basic(header: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(token.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Compares two byte strings in time depending only on their lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Decodes standard (RFC 4648 §4) base64; padding is optional but, when present,
/// must be correct. Returns `None` on any invalid input.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    let data = input.trim_end_matches('=');
    let padding = input.len() - data.len();
    if padding > 2 || (padding > 0 && !input.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.bytes() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, as every conforming encoder writes them.
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        let vectors: [(&str, &str); 7] = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ];
        for (encoded, plain) in vectors {
            assert_eq!(
                decode_base64(encoded).as_deref(),
                Some(plain.as_bytes()),
                "{encoded}"
            );
        }
        // Unpadded input is accepted too.
        assert_eq!(decode_base64("Zg").as_deref(), Some(&b"f"[..]));
        // Binary output and the two non-alphanumeric symbols.
        assert_eq!(decode_base64("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
    }

    #[test]
    fn base64_rejects_invalid_input() {
        for bad in [
            "Z", "Zg=", "Zg===", "Z===", "Zm9v!", "Zm 9v", "Zh==", "=Zg=", "Zg==Zg==",
        ] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_basic_header() {
        // "user:pa:ss" — the password may contain colons.
        assert_eq!(
            parse_basic("Basic dXNlcjpwYTpzcw=="),
            Some((b"user".to_vec(), b"pa:ss".to_vec()))
        );
        assert_eq!(
            parse_basic("basic dXNlcjpwYTpzcw=="),
            Some((b"user".to_vec(), b"pa:ss".to_vec()))
        );
        assert_eq!(parse_basic("Bearer dXNlcjpwYTpzcw=="), None);
        // "nocolon"
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None);
        assert_eq!(parse_basic("Basic"), None);
    }

    #[test]
    fn same_bytes_compares_whole_strings() {
        assert!(same_bytes(b"secret", b"secret"));
        assert!(!same_bytes(b"secret", b"secreT"));
        assert!(!same_bytes(b"secret", b"secret!"));
        assert!(same_bytes(b"", b""));
    }
}
