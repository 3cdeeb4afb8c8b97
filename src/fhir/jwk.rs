//! A private signing key from a JWK Set file (RFC 7517), for SMART Backend Services clients
//! whose keys are kept as JWKS rather than PEM. The key's base64url components are re-encoded
//! as the DER that `jsonwebtoken` signs with: PKCS#1 for RSA, PKCS#8 (SEC 1 inside) for P-384.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::Encode;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The members of a private RSA or EC JWK that we use; the others are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    d: Option<String>,
    // RSA
    n: Option<String>,
    e: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
    // EC
    x: Option<String>,
    y: Option<String>,
}

/// The key and its `kid`, which goes into the assertion's header.
pub struct SigningKey {
    pub key: EncodingKey,
    pub key_id: Option<String>,
}

/// Why no signing key can be had from a JWK Set.
#[derive(Debug, thiserror::Error)]
pub enum JwkError {
    #[error("neither a JWK Set nor a JWK")]
    NotJson(#[source] serde_json::Error),
    #[error("no private {kty} key with kid {kid:?}")]
    NoKeyWithKid { kty: &'static str, kid: String },
    #[error("no private {kty} key for {algorithm}")]
    NoKey {
        kty: &'static str,
        algorithm: String,
    },
    #[error("{count} private {kty} keys: set server.auth.key_id to choose one")]
    SeveralKeys { count: usize, kty: &'static str },
    #[error("the {kty} key lacks \"{name}\"")]
    Missing { kty: String, name: String },
    #[error("\"{0}\" is not base64url")]
    NotBase64(String),
    #[error("an RSA component is not an integer")]
    NotAnInteger(#[source] der::Error),
    #[error("ES384 needs a P-384 key, this one is {0:?}")]
    Curve(String),
    #[error("a P-384 key's d, x and y are 48 bytes each")]
    PointSize,
    #[error("cannot encode the key")]
    Encode(#[source] der::Error),
}

/// Whether a key file holds JSON (a JWK Set or one JWK) rather than PEM.
pub fn looks_like_jwks(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The private key for `algorithm` from a JWK Set (or a lone JWK): the one whose `kid` is
/// `key_id` when that is given, otherwise the only private key of the right type.
pub fn signing_key(
    bytes: &[u8],
    algorithm: Algorithm,
    key_id: Option<&str>,
) -> Result<SigningKey, JwkError> {
    let keys = match serde_json::from_slice::<JwkSet>(bytes) {
        Ok(set) => set.keys,
        Err(_) => vec![serde_json::from_slice::<Jwk>(bytes).map_err(JwkError::NotJson)?],
    };
    let kty = match algorithm {
        Algorithm::RS384 => "RSA",
        _ => "EC",
    };
    let wanted_alg = format!("{algorithm:?}");
    let candidates: Vec<&Jwk> = keys
        .iter()
        .filter(|k| k.kty == kty && k.d.is_some())
        .filter(|k| k.alg.as_deref().is_none_or(|alg| alg == wanted_alg))
        .filter(|k| key_id.is_none_or(|id| k.kid.as_deref() == Some(id)))
        .collect();
    let jwk = match (candidates.as_slice(), key_id) {
        ([one], _) => *one,
        ([], Some(id)) => {
            return Err(JwkError::NoKeyWithKid {
                kty,
                kid: id.to_owned(),
            })
        }
        ([], None) => {
            return Err(JwkError::NoKey {
                kty,
                algorithm: wanted_alg,
            })
        }
        (_, _) => {
            return Err(JwkError::SeveralKeys {
                count: candidates.len(),
                kty,
            })
        }
    };
    let der = match algorithm {
        Algorithm::RS384 => rsa_pkcs1_der(jwk)?,
        _ => p384_pkcs8_der(jwk)?,
    };
    let key = match algorithm {
        Algorithm::RS384 => EncodingKey::from_rsa_der(&der),
        _ => EncodingKey::from_ec_der(&der),
    };
    Ok(SigningKey {
        key,
        key_id: jwk.kid.clone(),
    })
}

fn component(jwk: &Jwk, name: &str, value: &Option<String>) -> Result<Vec<u8>, JwkError> {
    let text = value.as_deref().ok_or_else(|| JwkError::Missing {
        kty: jwk.kty.clone(),
        name: name.to_owned(),
    })?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| JwkError::NotBase64(name.to_owned()))
}

fn uint(bytes: &[u8]) -> Result<pkcs1::UintRef<'_>, JwkError> {
    pkcs1::UintRef::new(bytes).map_err(JwkError::NotAnInteger)
}

fn rsa_pkcs1_der(jwk: &Jwk) -> Result<Vec<u8>, JwkError> {
    let parts = [
        ("n", &jwk.n),
        ("e", &jwk.e),
        ("d", &jwk.d),
        ("p", &jwk.p),
        ("q", &jwk.q),
        ("dp", &jwk.dp),
        ("dq", &jwk.dq),
        ("qi", &jwk.qi),
    ]
    .iter()
    .map(|(name, value)| component(jwk, name, value))
    .collect::<Result<Vec<_>, _>>()?;
    let key = pkcs1::RsaPrivateKey {
        modulus: uint(&parts[0])?,
        public_exponent: uint(&parts[1])?,
        private_exponent: uint(&parts[2])?,
        prime1: uint(&parts[3])?,
        prime2: uint(&parts[4])?,
        exponent1: uint(&parts[5])?,
        exponent2: uint(&parts[6])?,
        coefficient: uint(&parts[7])?,
        other_prime_infos: None,
    };
    key.to_der().map_err(JwkError::Encode)
}

/// `secp384r1`, the curve of ES384.
const SECP384R1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `id-ecPublicKey`.
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

fn p384_pkcs8_der(jwk: &Jwk) -> Result<Vec<u8>, JwkError> {
    if jwk.crv.as_deref() != Some("P-384") {
        return Err(JwkError::Curve(
            jwk.crv.as_deref().unwrap_or("without crv").to_owned(),
        ));
    }
    let d = component(jwk, "d", &jwk.d)?;
    let x = component(jwk, "x", &jwk.x)?;
    let y = component(jwk, "y", &jwk.y)?;
    if d.len() != 48 || x.len() != 48 || y.len() != 48 {
        return Err(JwkError::PointSize);
    }
    // The uncompressed public point, 0x04 || x || y.
    let public_point: Vec<u8> = [&[4u8][..], &x, &y].concat();
    let ec_private_key = sec1::EcPrivateKey {
        private_key: &d,
        parameters: None,
        public_key: Some(&public_point),
    }
    .to_der()
    .map_err(JwkError::Encode)?;
    let curve = der::asn1::AnyRef::from(&SECP384R1);
    pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(curve),
        },
        private_key: &ec_private_key,
        public_key: None,
    }
    .to_der()
    .map_err(JwkError::Encode)
}
