//! The tokens file: names, roles and the SHA-256 of each secret, never the secret itself.
//!
//! ```toml
//! [[token]]
//! name = "maria"
//! role = "operator"
//! sha256 = "9f2c…"
//! created = "2026-12-05T18:30:00Z"
//! ```
//!
//! `vibelux auth token` appends an entry (writing a new file and renaming it into place, so a
//! running engine never reads half of one); removing an entry revokes the token. The running
//! engine looks at the file's modification time and length before each check and reads it
//! again when they changed; a file it cannot read then keeps the tokens it had, with a warning,
//! rather than locking everyone out in the middle of an edit.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::Role;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name: recorded as the actor of what it does.
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "a token named `{0}` exists already: remove its entry from the tokens file to replace it"
    )]
    Duplicate(String),
    #[error(
        "`{0}` cannot name a token: use 1 to 64 letters, digits and `_.@-` (it is recorded as the actor of what the token does)"
    )]
    BadName(String),
    #[error("cannot draw a random secret: the system's random source failed")]
    Random,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    /// Hex SHA-256 of the secret.
    sha256: String,
    created: String,
}

/// A token just created: its secret is shown once and stored nowhere.
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub secret: String,
}

fn secret_hash(secret: &str) -> String {
    hex::encode(digest(&SHA256, secret.as_bytes()))
}

fn read_file(path: &Path) -> Result<TokenFile, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: TokenFile = toml::from_str(&text).map_err(|error| AuthError::Invalid {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    let mut seen = std::collections::HashSet::new();
    for entry in &file.tokens {
        if !seen.insert(entry.name.as_str()) {
            return Err(AuthError::Invalid {
                path: path.to_path_buf(),
                message: format!("two tokens are named `{}`", entry.name),
            });
        }
        if entry.sha256.len() != 64 || hex::decode(&entry.sha256).is_err() {
            return Err(AuthError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "token `{}`: `sha256` must be 64 hex digits (the hash `vibelux auth token` wrote)",
                    entry.name
                ),
            });
        }
    }
    Ok(file)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// Creates a token named `name` with `role` in the tokens file at `path` (created if missing,
/// readable by its owner only). Returns the secret, which is not stored.
pub fn add_token(path: &Path, name: &str, role: Role) -> Result<NewToken, AuthError> {
    if !valid_name(name) {
        return Err(AuthError::BadName(name.to_string()));
    }
    let mut file = if path.exists() {
        read_file(path)?
    } else {
        TokenFile::default()
    };
    if file.tokens.iter().any(|entry| entry.name == name) {
        return Err(AuthError::Duplicate(name.to_string()));
    }
    let mut random = [0u8; 32];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| AuthError::Random)?;
    let secret = format!("vlx_{}", hex::encode(random));
    file.tokens.push(TokenEntry {
        name: name.to_string(),
        role,
        sha256: secret_hash(&secret),
        created: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    write_file(path, &file)?;
    Ok(NewToken {
        name: name.to_string(),
        role,
        secret,
    })
}

fn write_file(path: &Path, file: &TokenFile) -> Result<(), AuthError> {
    let failed = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = format!(
        "# Vibelux API tokens (vibelux auth token). Only hashes of the secrets are kept;\n\
         # delete an entry to revoke its token: a running engine reads this file again.\n\n{}",
        toml::to_string(file).expect("tokens serialize")
    );
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut staged = tempfile_in(directory).map_err(failed)?;
    staged.1.write_all(text.as_bytes()).map_err(failed)?;
    staged.1.sync_all().map_err(failed)?;
    std::fs::rename(&staged.0, path).map_err(failed)
}

/// A new file beside the tokens file, readable and writable by its owner only.
fn tempfile_in(directory: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = directory.join(format!(".vibelux-tokens.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// The tokens a running engine accepts, read again when the file changes.
pub struct TokenStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    /// JWTs accepted beside the file's tokens (`--jwks`).
    jwt: Option<super::jwt::JwtVerifier>,
}

struct Loaded {
    /// Modification time and length of the file as read.
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, Identity>,
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn index(file: TokenFile) -> HashMap<String, Identity> {
    file.tokens
        .into_iter()
        .map(|entry| {
            (
                entry.sha256.to_ascii_lowercase(),
                Identity {
                    name: entry.name,
                    role: entry.role,
                },
            )
        })
        .collect()
}

impl TokenStore {
    /// Reads the tokens file; a missing or invalid one is an error at start.
    pub fn open(path: &Path) -> Result<TokenStore, AuthError> {
        let stamp = stamp_of(path);
        let file = read_file(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp,
                by_hash: index(file),
            }),
            jwt: None,
        })
    }

    /// Also accepts JWTs that `verifier` verifies.
    pub fn with_jwt(mut self, verifier: super::jwt::JwtVerifier) -> TokenStore {
        self.jwt = Some(verifier);
        self
    }

    /// Whether JWTs are accepted too.
    pub fn accepts_jwts(&self) -> bool {
        self.jwt.is_some()
    }

    /// How many tokens it accepts now.
    pub fn len(&self) -> usize {
        self.refreshed().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Who holds `secret`, or `None` for a token that is unknown or revoked.
    pub fn identify(&self, secret: &str) -> Option<Identity> {
        if let Some(verifier) = &self.jwt
            && super::jwt::looks_like_jwt(secret)
        {
            return verifier
                .identify(secret)
                .inspect_err(|why| tracing::info!("a JWT was refused: {why}"))
                .ok();
        }
        let hash = secret_hash(secret);
        self.refreshed().by_hash.get(&hash).cloned()
    }

    fn refreshed(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = stamp_of(&self.path);
        if stamp != loaded.stamp {
            match read_file(&self.path) {
                Ok(file) => {
                    loaded.by_hash = index(file);
                    loaded.stamp = stamp;
                    tracing::info!(
                        tokens = loaded.by_hash.len(),
                        "read the tokens file {} again",
                        self.path.display()
                    );
                }
                Err(error) => {
                    // Remembered, so the warning is not repeated for every request.
                    loaded.stamp = stamp;
                    tracing::warn!("{error}; keeping the tokens read before");
                }
            }
        }
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_is_accepted_with_its_role_and_revoked_when_its_entry_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let maria = add_token(&path, "maria", Role::Operator).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&maria.secret),
            "the secret must not be stored"
        );
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(
            store.identify(&maria.secret),
            Some(Identity {
                name: "maria".into(),
                role: Role::Operator
            })
        );
        assert_eq!(store.identify("vlx_0000"), None);

        // Another token added while the store is open is seen at once.
        let ci = add_token(&path, "ci", Role::Engineer).unwrap();
        assert_eq!(store.identify(&ci.secret).unwrap().role, Role::Engineer);

        // Deleting maria's entry revokes her token.
        let kept: String = std::fs::read_to_string(&path)
            .unwrap()
            .split("[[token]]")
            .filter(|entry| !entry.contains("\"maria\""))
            .collect::<Vec<_>>()
            .join("[[token]]");
        std::fs::write(&path, kept).unwrap();
        assert_eq!(store.identify(&maria.secret), None);
        assert!(store.identify(&ci.secret).is_some());
    }

    #[test]
    fn names_are_unique_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        add_token(&path, "grafana", Role::Viewer).unwrap();
        assert!(matches!(
            add_token(&path, "grafana", Role::Admin),
            Err(AuthError::Duplicate(_))
        ));
        for bad in ["", "two words", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(
                    add_token(&path, bad, Role::Viewer),
                    Err(AuthError::BadName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_damaged_file_keeps_the_tokens_read_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let token = add_token(&path, "ops", Role::Operator).unwrap();
        let store = TokenStore::open(&path).unwrap();
        std::fs::write(&path, "[[token]]\nname = ").unwrap();
        assert!(store.identify(&token.secret).is_some());
        assert!(matches!(
            TokenStore::open(&path),
            Err(AuthError::Invalid { .. })
        ));
    }
}
