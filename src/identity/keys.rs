//! Ed25519 keys and their on-disk and text forms.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Errors about keys: parsing, files, signatures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Text that should be a base64 public key is not one.
    #[error("invalid public key {0:?}: expected 32 bytes in base64")]
    BadPublicKey(String),
    /// A key file's contents could not be parsed.
    #[error("{path}: not an Ed25519 secret key ({reason})")]
    BadSecretKey {
        /// File that was read.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Refused to replace an existing key.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// Filesystem error on a key file.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 public key: a node's identity, a network id, or a file signer.
///
/// Text form (config, JSON, CLI) is standard base64 of the 32 bytes; binary form is the raw
/// bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies a strict Ed25519 signature of `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), KeyError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadSignature)?;
        vk.verify_strict(msg, &Signature::from_bytes(sig))
            .map_err(|_| KeyError::BadSignature)
    }

    /// Base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// First characters of the base64 form, for tables and logs.
    pub fn short(&self) -> String {
        self.to_base64()[..10].to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|_| KeyError::BadPublicKey(s.to_string()))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadPublicKey(s.to_string()))?;
        // Reject byte strings that are not curve points now rather than at first verify.
        VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::BadPublicKey(s.to_string()))?;
        Ok(PublicKey(arr))
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_base64())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(PublicKey(<[u8; 32]>::deserialize(d)?))
        }
    }
}

/// An Ed25519 secret key. Never printed, never serialized except to its own file.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().short())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// PKCS#8 v1 DER encoding of the key, as TLS libraries want it.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        // RFC 8410: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        der.extend_from_slice(&self.seed());
        der
    }

    /// Reads a key file: either shoal's own format (base64 seed, `#` comments allowed) or a
    /// PKCS#8 PEM file as written by `openssl genpkey -algorithm ed25519`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "secret key file is readable by group or others; chmod 600 it"
            );
        }
        Self::parse(&text).map_err(|reason| KeyError::BadSecretKey {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with("-----BEGIN") {
            return SigningKey::from_pkcs8_pem(text)
                .map(SecretKey)
                .map_err(|e| format!("PKCS#8 PEM: {e}"));
        }
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let bytes = B64.decode(body).map_err(|e| format!("base64: {e}"))?;
        match bytes.len() {
            // A seed, or a seed followed by its public key (the 64-byte "keypair" form).
            32 | 64 => {
                let seed: [u8; 32] = bytes[..32].try_into().expect("length checked above");
                let key = SecretKey::from_seed(seed);
                if bytes.len() == 64 && key.public().0[..] != bytes[32..] {
                    return Err("public half does not match the secret half".into());
                }
                Ok(key)
            }
            n => Err(format!("expected 32 bytes, found {n}")),
        }
    }

    /// Writes the key to `path` with mode 0600, creating parent directories. Refuses to replace
    /// an existing file unless `force`; a forced write replaces the file atomically.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let text = format!(
            "# shoal Ed25519 secret key. Public key: {}\n{}\n",
            self.public(),
            B64.encode(self.seed())
        );
        let target = if force {
            path.with_extension("tmp-new")
        } else {
            path.to_path_buf()
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists && !force {
                    KeyError::Exists(path.to_path_buf())
                } else {
                    io(e)
                }
            })?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if force {
            std::fs::rename(&target, path).map_err(io)?;
        }
        Ok(())
    }

    /// Loads the key at `path`, or creates it (0600) when the file does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match Self::load(path) {
            Ok(k) => Ok((k, false)),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                match key.save(path, false) {
                    Ok(()) => Ok((key, true)),
                    // Someone else created it between our read and write: use theirs.
                    Err(KeyError::Exists(_)) => Ok((Self::load(path)?, false)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// In the API a key is its base64 string.
impl utoipa::PartialSchema for PublicKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Ed25519 public key, standard base64 of 32 bytes"))
            .examples([serde_json::json!("hnuGNlUHyozNi1egatsI9GGx7dh+bNPHdugf5J9yJHQ=")])
            .into()
    }
}

impl utoipa::ToSchema for PublicKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_roundtrip_and_errors() {
        let k = SecretKey::generate().public();
        assert_eq!(k.to_base64().parse::<PublicKey>().unwrap(), k);
        assert!("not base64!".parse::<PublicKey>().is_err());
        assert!(B64.encode([1u8; 31]).parse::<PublicKey>().is_err());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let k = SecretKey::generate();
        let sig = k.sign(b"hello");
        k.public().verify(b"hello", &sig).unwrap();
        assert!(k.public().verify(b"hellp", &sig).is_err());
        assert!(SecretKey::generate().public().verify(b"hello", &sig).is_err());
    }

    #[test]
    fn save_load_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let k = SecretKey::generate();
        k.save(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SecretKey::load(&path).unwrap().public(), k.public());
        assert!(matches!(
            SecretKey::generate().save(&path, false),
            Err(KeyError::Exists(_))
        ));
        assert_eq!(SecretKey::load(&path).unwrap().public(), k.public());
        let k2 = SecretKey::generate();
        k2.save(&path, true).unwrap();
        assert_eq!(SecretKey::load(&path).unwrap().public(), k2.public());
    }

    #[test]
    fn loads_openssl_pkcs8_pem() {
        // `openssl genpkey -algorithm ed25519` output (RFC 8410 test vector seed).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let k = SecretKey::parse(pem).unwrap();
        assert_eq!(k.public().to_base64(), "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=");
        // Our hand-built PKCS#8 matches what openssl writes.
        let der = B64
            .decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC")
            .unwrap();
        assert_eq!(k.to_pkcs8_der(), der);
    }

    #[test]
    fn rejects_garbage_key_file() {
        assert!(SecretKey::parse("zzz").is_err());
        assert!(SecretKey::parse(&B64.encode([0u8; 16])).is_err());
    }
}
