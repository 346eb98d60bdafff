//! OCI request signing, "Signature Version 1" (draft-cavage HTTP signatures as Oracle Cloud
//! Infrastructure uses them).
//!
//! Every request to an OCI API carries an `Authorization` header of the form
//!
//! ```text
//! Signature version="1",headers="date (request-target) host",keyId="<tenancy>/<user>/<fingerprint>",algorithm="rsa-sha256",signature="<base64>"
//! ```
//!
//! where the signature is RSA PKCS#1 v1.5 with SHA-256 over the *signing string*: one
//! `name: value` line per signed header, in the order of `headers=`, joined by `\n` with no
//! trailing newline. The pseudo-header `(request-target)` is the lower-case method, a space,
//! and the path plus `?query` exactly as sent on the wire. Requests without a body (GET, HEAD,
//! DELETE) sign `date (request-target) host`; POST/PUT with a JSON body also sign
//! `content-length content-type x-content-sha256`, the last being base64(SHA-256(body)).
//! Object Storage's PutObject signs only the minimal set, since its body is streamed.
//!
//! [`RequestSigner`] holds the private key (read from a PEM file, PKCS#1
//! `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`) and the key id; [`SigningInput`]
//! describes one request and builds its signing string.
//!
//! Two RSA implementations sign, chosen by key size:
//!
//! - **2048 to 8192 bits** (every key OCI accepts as an API key): aws-lc-rs, the crate the rest
//!   of ferry's TLS and hashing uses, constant-time and FIPS-validated upstream.
//! - **1024 to 2047 bits**: the RustCrypto `rsa` crate, because aws-lc-rs refuses keys under
//!   2048 bits in every signing API it has (`RsaKeyPair` checks `2048..=8192` on load; only
//!   *verification* has a `1024_8192 ... FOR_LEGACY_USE_ONLY` variant). OCI itself rejects such
//!   keys, so in practice this path signs with Oracle's published 1024-bit test key, which lets
//!   the tests check the production signer against Oracle's published signatures byte for
//!   byte (PKCS#1 v1.5 signatures are deterministic). A warning is logged when it is used.
//!
//! The `rsa` crate carries RUSTSEC-2023-0071 (Marvin): its modular exponentiation is not
//! constant-time, and the timing of *decryption* observed over a network may leak the key. ferry
//! never decrypts with it; it signs locally, and signs with blinding (a fresh random blinding
//! factor per signature, `RandomizedSigner`), which is the mitigation the advisory's authors
//! point to for private-key operations. Keeping real (2048+ bit) keys on aws-lc-rs means the
//! advisory cannot touch a key OCI would accept.

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Url;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::ConnectorError;

/// The only algorithm OCI Signature Version 1 uses.
pub const ALGORITHM: &str = "rsa-sha256";

/// Headers signed on requests without a signed body (GET, HEAD, DELETE, PutObject).
pub const MINIMAL_HEADERS: &str = "date (request-target) host";

/// Headers signed on POST/PUT requests with a JSON body.
pub const BODY_HEADERS: &str =
    "date (request-target) host content-length content-type x-content-sha256";

/// The `Content-Type` of signed JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The key id OCI expects: `tenancy/user/fingerprint`.
pub fn key_id(tenancy: &str, user: &str, fingerprint: &str) -> String {
    format!("{tenancy}/{user}/{fingerprint}")
}

/// base64(SHA-256(`body`)), the value of `x-content-sha256`.
pub fn content_sha256(body: &[u8]) -> String {
    BASE64.encode(digest::digest(&digest::SHA256, body))
}

/// A `Date` header value in the RFC 7231 format, e.g. `Thu, 05 Jan 2014 21:31:40 GMT`.
pub fn http_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The `(request-target)` path part of `url`: its path plus `?query` when it has one,
/// exactly as an HTTP client puts it on the request line.
pub fn request_target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}

/// The `Host` header an HTTP client sends for `url`: the host, plus `:port` when the URL
/// names a port other than its scheme's default.
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The signed body headers of a POST/PUT with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyHeaders {
    /// `Content-Length`.
    pub content_length: u64,
    /// `Content-Type`, normally [`JSON_CONTENT_TYPE`].
    pub content_type: String,
    /// `x-content-sha256`: base64(SHA-256(body)), see [`content_sha256`].
    pub content_sha256: String,
}

impl BodyHeaders {
    /// The headers for a JSON `body`.
    pub fn json(body: &[u8]) -> Self {
        BodyHeaders {
            content_length: body.len() as u64,
            content_type: JSON_CONTENT_TYPE.to_string(),
            content_sha256: content_sha256(body),
        }
    }
}

/// What is signed for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningInput {
    /// The HTTP method, e.g. `GET` (lower-cased in the signing string).
    pub method: String,
    /// Path plus `?query` exactly as sent, see [`request_target`].
    pub target: String,
    /// The `Host` header, see [`host_header`].
    pub host: String,
    /// The `Date` header, see [`http_date`].
    pub date: String,
    /// The body headers when they are signed (JSON bodies); `None` signs the minimal set.
    pub body: Option<BodyHeaders>,
}

impl SigningInput {
    /// The input for a request to `url` at `date`.
    pub fn for_url(method: &str, url: &Url, date: &str, body: Option<BodyHeaders>) -> Self {
        SigningInput {
            method: method.to_string(),
            target: request_target(url),
            host: host_header(url),
            date: date.to_string(),
            body,
        }
    }

    /// The `headers=` list: [`MINIMAL_HEADERS`] or [`BODY_HEADERS`].
    pub fn header_names(&self) -> &'static str {
        if self.body.is_some() {
            BODY_HEADERS
        } else {
            MINIMAL_HEADERS
        }
    }

    /// The signing string: `name: value` lines in [`Self::header_names`] order, `\n`-joined,
    /// no trailing newline.
    pub fn signing_string(&self) -> String {
        let mut s = format!(
            "date: {}\n(request-target): {} {}\nhost: {}",
            self.date,
            self.method.to_ascii_lowercase(),
            self.target,
            self.host
        );
        if let Some(body) = &self.body {
            s.push_str(&format!(
                "\ncontent-length: {}\ncontent-type: {}\nx-content-sha256: {}",
                body.content_length, body.content_type, body.content_sha256
            ));
        }
        s
    }
}

/// The `Authorization` header value, in the field order Oracle's SDKs and documentation use.
pub fn authorization_header(key_id: &str, header_names: &str, signature: &str) -> String {
    format!(
        "Signature version=\"1\",headers=\"{header_names}\",keyId=\"{key_id}\",algorithm=\"{ALGORITHM}\",signature=\"{signature}\""
    )
}

/// The smallest RSA key ferry signs with (Oracle's published test key is this size).
pub const MIN_KEY_BITS: usize = 1024;

/// The RSA implementation holding one key; see the module documentation.
enum SigningKey {
    /// 2048–8192 bits: aws-lc-rs.
    AwsLc(RsaKeyPair),
    /// 1024–2047 bits: RustCrypto `rsa`, signing with blinding.
    Legacy(rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>),
}

impl SigningKey {
    fn bits(&self) -> usize {
        match self {
            SigningKey::AwsLc(k) => k.public_modulus_len() * 8,
            SigningKey::Legacy(k) => k.as_ref().size() * 8,
        }
    }
}

/// An API signing key and its key id. `Debug` shows the key id only.
pub struct RequestSigner {
    key_id: String,
    key: SigningKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("key_id", &self.key_id)
            .field("key_bits", &self.key.bits())
            .finish_non_exhaustive()
    }
}

impl RequestSigner {
    /// Reads the private key from the PEM file at `path`.
    pub fn from_key_file(key_id: String, path: &Path) -> Result<Self, ConnectorError> {
        let pem = std::fs::read(path).map_err(|e| {
            ConnectorError::Config(format!("key_file '{}' cannot be read: {e}", path.display()))
        })?;
        Self::from_pem(key_id, &pem, &path.display().to_string())
    }

    /// Parses a PEM private key (PKCS#1 or PKCS#8, unencrypted, RSA 1024–8192 bits; keys under
    /// 2048 bits, which OCI refuses, are accepted with a warning for test keys).
    /// `source` names where it came from, for error messages; the key never appears in them.
    pub fn from_pem(key_id: String, pem: &[u8], source: &str) -> Result<Self, ConnectorError> {
        let err = |msg: String| ConnectorError::Config(format!("key_file '{source}' {msg}"));
        let text = String::from_utf8_lossy(pem);
        if text.contains("ENCRYPTED") {
            return Err(err(
                "holds a passphrase-protected key, which ferry cannot use yet; store a \
                 decrypted copy readable only by ferry's user (`openssl rsa -in KEY -out \
                 KEY.plain.pem`) and point key_file at it"
                    .to_string(),
            ));
        }
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            err(format!(
                "holds no usable PEM private key (expected '-----BEGIN RSA PRIVATE KEY-----' \
                 or '-----BEGIN PRIVATE KEY-----'): {e}"
            ))
        })?;
        let parsed = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(_) => {
                return Err(err(
                    "holds an EC key; OCI API signing keys are RSA".to_string()
                ));
            }
            _ => return Err(err("holds a key of an unknown kind".to_string())),
        };
        let key = match parsed {
            Ok(key) => SigningKey::AwsLc(key),
            Err(e) if e.description_() == "TooSmall" => {
                let key = Self::legacy_key(&der).map_err(err)?;
                tracing::warn!(
                    key_file = source,
                    bits = key.as_ref().size() * 8,
                    "OCI signing key is smaller than 2048 bits; OCI refuses such API keys"
                );
                SigningKey::Legacy(key)
            }
            Err(e) => {
                return Err(match e.description_() {
                    "TooLarge" => err("holds an RSA key larger than 8192 bits".to_string()),
                    other => err(format!(
                        "holds a key that is not a usable RSA key ({other})"
                    )),
                });
            }
        };
        Ok(RequestSigner {
            key_id,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Parses a key aws-lc-rs found too small with the `rsa` crate, refusing keys under
    /// [`MIN_KEY_BITS`]. Errors are the tail of a "key_file '…' …" message.
    fn legacy_key(
        der: &PrivateKeyDer<'_>,
    ) -> Result<rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>, String> {
        let parsed =
            match der {
                PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                    .map_err(|e| e.to_string()),
                PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|e| e.to_string()),
                _ => Err("not an RSA key".to_string()),
            };
        let key = parsed.map_err(|e| format!("holds a key that is not a usable RSA key ({e})"))?;
        if key.size() * 8 < MIN_KEY_BITS {
            return Err(format!(
                "holds an RSA key of {} bits; OCI API keys are RSA 2048 bits or more",
                key.size() * 8
            ));
        }
        key.validate()
            .map_err(|e| format!("holds an inconsistent RSA key ({e})"))?;
        Ok(rsa::pkcs1v15::SigningKey::new(key))
    }

    /// The key id, `tenancy/user/fingerprint`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The base64 RSA-SHA256 (PKCS#1 v1.5) signature of `signing_string`.
    pub fn sign(&self, signing_string: &str) -> Result<String, ConnectorError> {
        let failed = || ConnectorError::Config("signing the request failed".to_string());
        let signature = match &self.key {
            SigningKey::AwsLc(key) => {
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_string.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| failed())?;
                signature
            }
            SigningKey::Legacy(key) => key
                .try_sign_with_rng(&mut OsRng, signing_string.as_bytes())
                .map_err(|_| failed())?
                .to_vec(),
        };
        Ok(BASE64.encode(signature))
    }

    /// The `Authorization` header value for `input`.
    pub fn authorization(&self, input: &SigningInput) -> Result<String, ConnectorError> {
        let signature = self.sign(&input.signing_string())?;
        Ok(authorization_header(
            &self.key_id,
            input.header_names(),
            &signature,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256,
        UnparsedPublicKey,
    };
    use rustls_pki_types::SubjectPublicKeyInfoDer;

    const ORACLE_KEY: &str =
        include_str!("../../tests/fixtures/oci-signing/oracle_test_private_key.pem");
    const ORACLE_KEY_PKCS8: &str =
        include_str!("../../tests/fixtures/oci-signing/oracle_test_private_key_pkcs8.pem");
    const PUT_SIGNING_STRING: &str =
        include_str!("../../tests/fixtures/oci-signing/put_signing_string.txt");
    const ORACLE_PUBLIC_KEY: &str =
        include_str!("../../tests/fixtures/oci-signing/oracle_test_public_key.pem");
    const GET_SIGNING_STRING: &str =
        include_str!("../../tests/fixtures/oci-signing/get_signing_string.txt");
    const POST_SIGNING_STRING: &str =
        include_str!("../../tests/fixtures/oci-signing/post_signing_string.txt");
    const POST_BODY: &str = include_str!("../../tests/fixtures/oci-signing/post_body.json");
    const TEST_KEY_PKCS1: &str = include_str!("../../tests/fixtures/oci/test_key_pkcs1.pem");
    const TEST_KEY_PKCS8: &str = include_str!("../../tests/fixtures/oci/test_key_pkcs8.pem");
    const TEST_PUBLIC_KEY: &str = include_str!("../../tests/fixtures/oci/test_key_public.pem");

    const ORACLE_KEY_ID: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
    const DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
    const GET_URL: &str = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
    const GET_SIGNATURE: &str = "GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=";
    const POST_SIGNATURE: &str = "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=";

    /// The production signer with Oracle's test key, from its PKCS#1 and its PKCS#8 form.
    fn oracle_signers() -> [RequestSigner; 2] {
        [ORACLE_KEY, ORACLE_KEY_PKCS8]
            .map(|pem| RequestSigner::from_pem(oracle_key_id(), pem.as_bytes(), "oracle").unwrap())
    }

    fn oracle_key_id() -> String {
        key_id(
            "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq",
            "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq",
            "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
        )
    }

    /// Verifies a base64 RSA-SHA256 signature with a PEM SPKI public key of 1024+ bits.
    fn verifies(public_pem: &str, message: &str, signature_b64: &str) -> bool {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes()).unwrap();
        let signature = BASE64.decode(signature_b64).unwrap();
        UnparsedPublicKey::new(
            &RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            spki.as_ref(),
        )
        .verify(message.as_bytes(), &signature)
        .is_ok()
    }

    fn oracle_get() -> SigningInput {
        SigningInput::for_url("GET", &Url::parse(GET_URL).unwrap(), DATE, None)
    }

    fn oracle_post() -> SigningInput {
        let url =
            Url::parse("https://iaas.us-phoenix-1.oraclecloud.com/20160918/volumeAttachments")
                .unwrap();
        SigningInput::for_url(
            "POST",
            &url,
            DATE,
            Some(BodyHeaders::json(POST_BODY.as_bytes())),
        )
    }

    #[test]
    fn oracle_get_example_signing_string_and_signature() {
        let input = oracle_get();
        assert_eq!(input.signing_string(), GET_SIGNING_STRING);
        assert_eq!(input.header_names(), "date (request-target) host");
        // Oracle's published signature is the RSA-SHA256 signature of exactly our string.
        assert!(verifies(
            ORACLE_PUBLIC_KEY,
            &input.signing_string(),
            GET_SIGNATURE
        ));
        // The production signer reproduces Oracle's published header byte for byte.
        for signer in oracle_signers() {
            assert_eq!(signer.sign(GET_SIGNING_STRING).unwrap(), GET_SIGNATURE);
            assert_eq!(
                signer.authorization(&input).unwrap(),
                format!(
                    "Signature version=\"1\",headers=\"date (request-target) host\",keyId=\"{ORACLE_KEY_ID}\",algorithm=\"rsa-sha256\",signature=\"{GET_SIGNATURE}\""
                )
            );
        }
        assert_eq!(
            authorization_header(&oracle_key_id(), input.header_names(), GET_SIGNATURE),
            format!(
                "Signature version=\"1\",headers=\"date (request-target) host\",keyId=\"{ORACLE_KEY_ID}\",algorithm=\"rsa-sha256\",signature=\"{GET_SIGNATURE}\""
            )
        );
    }

    #[test]
    fn oracle_post_example_signing_string_and_signature() {
        assert_eq!(POST_BODY.len(), 316);
        let input = oracle_post();
        assert_eq!(
            content_sha256(POST_BODY.as_bytes()),
            "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="
        );
        assert_eq!(input.signing_string(), POST_SIGNING_STRING);
        assert!(verifies(
            ORACLE_PUBLIC_KEY,
            &input.signing_string(),
            POST_SIGNATURE
        ));
        // The production signer reproduces Oracle's published header byte for byte.
        for signer in oracle_signers() {
            assert_eq!(signer.sign(POST_SIGNING_STRING).unwrap(), POST_SIGNATURE);
            assert_eq!(
                signer.authorization(&input).unwrap(),
                format!(
                    "Signature version=\"1\",headers=\"date (request-target) host content-length content-type x-content-sha256\",keyId=\"{ORACLE_KEY_ID}\",algorithm=\"rsa-sha256\",signature=\"{POST_SIGNATURE}\""
                )
            );
        }
        // A wrong body hash no longer matches Oracle's signature.
        let mut tampered = input.clone();
        if let Some(body) = tampered.body.as_mut() {
            body.content_sha256 = content_sha256(b"{}");
        }
        assert!(!verifies(
            ORACLE_PUBLIC_KEY,
            &tampered.signing_string(),
            POST_SIGNATURE
        ));
    }

    #[test]
    fn host_includes_a_non_default_port() {
        let input = SigningInput::for_url(
            "GET",
            &Url::parse("http://localhost:7000/api").unwrap(),
            DATE,
            None,
        );
        assert_eq!(
            input.signing_string(),
            "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /api\nhost: localhost:7000"
        );
        // Computed with `openssl dgst -sha256 -sign oracle_test_private_key.pem | base64`.
        let openssl = "bA7yY54T16j4VZQZ46bCZ1irXJRcIf0bnQSvVyENrzPiRTPLWuPpYn4vqd4SNCB4flzwpQmtYs8awLW5Ql+xrxCLRkuNOmEMt/YvfvRygkeV4rDGgQaS/zm1iWqdUl1GcdL1ZL/ERvaYdwT9AY/mFugurgFU/ES3eXqDXm4wgm8=";
        assert!(verifies(
            ORACLE_PUBLIC_KEY,
            &input.signing_string(),
            openssl
        ));
        for signer in oracle_signers() {
            assert_eq!(signer.sign(&input.signing_string()).unwrap(), openssl);
        }
        // Default ports are not part of Host.
        let url = Url::parse("https://objectstorage.example.com:443/n/").unwrap();
        assert_eq!(host_header(&url), "objectstorage.example.com");
    }

    #[test]
    fn signer_reproduces_the_sdk_vectors_with_oracles_key() {
        // Oracle's Go "httpsigner" test (SDK_SIGNER_EXTRA_VECTORS.txt, 1): only `date`
        // signed, with an empty Date header — the signing string is exactly "date: ".
        let published = "Fp7Zpew1qWbpyqVeOyTznBOpcG112PPcLy4jeYmxf6exYNlsY8Tn7ao0qDiAbOiC/6hE7/0O6qbub3mG3jgW3uv5V+g8/TPTB2gdnz7QPeXW4YIAOb2/DPlrq2M2DaH4cxhuMJZP8cmOxmojfPHZdwrQSv+WGuddZTH27Tqib6g=";
        for signer in oracle_signers() {
            assert_eq!(
                authorization_header(signer.key_id(), "date", &signer.sign("date: ").unwrap()),
                format!(
                    "Signature version=\"1\",headers=\"date\",keyId=\"{ORACLE_KEY_ID}\",algorithm=\"rsa-sha256\",signature=\"{published}\""
                )
            );
        }
        // A PutObject (streamed body, minimal headers). Oracle publishes no PUT example; this
        // signature was made with `openssl dgst -sha256 -sign oracle_test_private_key.pem
        // put_signing_string.txt | base64 -w0`.
        let url = Url::parse(
            "https://objectstorage.us-phoenix-1.oraclecloud.com/n/ns/b/bucket/o/report.csv",
        )
        .unwrap();
        let put = SigningInput::for_url("PUT", &url, DATE, None);
        assert_eq!(put.signing_string(), PUT_SIGNING_STRING);
        let openssl = "SvR4hA5AKePE4VxtpIl044YYwqY3m5GT1AgMhu16GQ1IahLq31o+NO/Xs4rH1dDQdueqRAf7pB8Zul5tzCM85ENM0jMlqL5SMPaDIbuphlArgn/QXMJ5ymdYBSSQNAE4ukounEQmSStByWv6w9Inq9+b7230WaajVXW88Ucmbe0=";
        for signer in oracle_signers() {
            assert_eq!(
                signer.authorization(&put).unwrap(),
                authorization_header(ORACLE_KEY_ID, MINIMAL_HEADERS, openssl)
            );
        }
        assert!(verifies(ORACLE_PUBLIC_KEY, PUT_SIGNING_STRING, openssl));
        // Blinding makes each signature's computation random, never its result.
        let [signer, _] = oracle_signers();
        let first = signer.sign(PUT_SIGNING_STRING).unwrap();
        assert_eq!(signer.sign(PUT_SIGNING_STRING).unwrap(), first);
        assert!(format!("{signer:?}").contains("1024"));
    }

    #[test]
    fn empty_body_hash_and_date_format() {
        assert_eq!(
            content_sha256(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            content_sha256(br#"{"message":"hello"}"#),
            "my1Dr/v0mjZwKN8uFBT4TA4JmsmMPVSoqAFX/XdxryU="
        );
        // (Oracle's example date says "Thu" for 5 January 2014, which was a Sunday; the
        // signing string carries the header verbatim, so the examples are unaffected.)
        let at = chrono::DateTime::parse_from_rfc3339("2014-01-02T21:31:40Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(http_date(at), "Thu, 02 Jan 2014 21:31:40 GMT");
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-09T07:05:09+01:00")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(http_date(at), "Mon, 09 Mar 2026 06:05:09 GMT");
    }

    #[test]
    fn signer_output_matches_openssl_byte_for_byte() {
        // `openssl dgst -sha256 -sign tests/fixtures/oci/test_key_pkcs1.pem
        //  tests/fixtures/oci-signing/get_signing_string.txt | base64 -w0`
        let openssl = "a7oSOGkqWPfB89P0rFclR7+4VfB30H6WK9iAmgcDMdLGhVLPDAjQFvoKgwbBZiDwWPvZxf3zmrAo+4YH4r2E/RWINquu9aAnjFHsxHr+geiVP/q29dXnnb5HnuAYZaLnAhL+cVBm7lffAVgOB7oAMsORvVCCsyrLdIsVwo7TAPB0HYN349LWaA8W9kL6iyCNGlDcdCXdONlxY4TcZZfBFa8o16m/0OjCNsNkaECkB8JDQ/vb8sydk2o10EYj7EYfQ7uVJCCdZGSGAvu3p774tk9GaeI58ZGGswOSKfyWNiHgrjTilKcjCaulEv0ILpszJX8wamT2gsHwFueFbO2MnA==";
        for pem in [TEST_KEY_PKCS1, TEST_KEY_PKCS8] {
            let signer = RequestSigner::from_pem("t/u/f".into(), pem.as_bytes(), "test").unwrap();
            assert_eq!(signer.sign(GET_SIGNING_STRING).unwrap(), openssl);
            let header = signer.authorization(&oracle_get()).unwrap();
            assert_eq!(
                header,
                authorization_header("t/u/f", MINIMAL_HEADERS, openssl)
            );
        }
        // And what it signs verifies with the public key under the 2048+ bit algorithm.
        let signer =
            RequestSigner::from_pem("t/u/f".into(), TEST_KEY_PKCS8.as_bytes(), "t").unwrap();
        let post = oracle_post().signing_string();
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(TEST_PUBLIC_KEY.as_bytes()).unwrap();
        let sig = BASE64.decode(signer.sign(&post).unwrap()).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .verify(post.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn unusable_keys_are_refused_clearly() {
        let text = |pem: &str| {
            RequestSigner::from_pem("k".into(), pem.as_bytes(), "key.pem")
                .unwrap_err()
                .to_string()
        };
        // Under 1024 bits nothing signs (Oracle's 1024-bit test key is the smallest accepted).
        let small = text(include_str!("../../tests/fixtures/oci/small_768_key.pem"));
        assert_eq!(
            small,
            "configuration: key_file 'key.pem' holds an RSA key of 768 bits; OCI API keys are RSA 2048 bits or more"
        );
        let encrypted = text(include_str!("../../tests/fixtures/oci/encrypted_key.pem"));
        assert!(encrypted.contains("passphrase-protected"), "{encrypted}");
        let garbage = text("not a key");
        assert!(garbage.contains("no usable PEM private key"), "{garbage}");
        assert!(garbage.contains("key.pem"), "{garbage}");
        let public = text(TEST_PUBLIC_KEY);
        assert!(public.contains("no usable PEM private key"), "{public}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let signer =
            RequestSigner::from_pem("t/u/f".into(), TEST_KEY_PKCS1.as_bytes(), "t").unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains("t/u/f") && shown.contains("2048"), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
    }
}
