//! The four roles, least privilege first.

use serde::{Deserialize, Serialize};

/// What a token may do. Each role includes every role before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and subscribes to views, reads metrics.
    Viewer,
    /// + acknowledges, shelves and unshelves alarms.
    Operator,
    /// + changes the running pipeline: views and sinks over `POST /v1/sql`.
    Engineer,
    /// + sinks that act on equipment (PLC writes).
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn includes(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_those_below_it_and_none_above() {
        let all = [Role::Viewer, Role::Operator, Role::Engineer, Role::Admin];
        for (i, role) in all.iter().enumerate() {
            for (j, needed) in all.iter().enumerate() {
                assert_eq!(role.includes(*needed), i >= j, "{role} for {needed}");
            }
        }
    }
}
