//! Who may do what over the network: API tokens and the roles they carry.
//!
//! Vibelux writes to PLCs, so its HTTP API is a control surface, not a read-only status page.
//! A token is a random secret handed to one person or program; the engine keeps only its
//! SHA-256 (the secret has 256 random bits, so a fast hash is enough: nothing is left to guess
//! by brute force), in a file that an administrator edits with `vibelux auth token` and that a
//! running engine reads again when it changes, so a token is revoked by deleting its entry.
//! Roles are ordered: each one may do everything the one below it may. Sites with an identity
//! provider may also accept its JWTs (`jwt`).

pub mod jwt;
mod role;
mod tokens;

pub use role::Role;
pub use tokens::{AuthError, Identity, NewToken, TokenStore, add_token};
