//! Statements given over the API in a cluster: process 0 serves the API and applies them; the
//! other processes must build the same dataflows, in the same order, or their workers would
//! not line up with process 0's. Process 0 passes each accepted request's SQL on over the
//! cluster link (`cluster_link.rs`), in the order it applied them, and every other process
//! applies it to its own copy of the pipeline, opening no sink (process 0 writes them).

use std::sync::Mutex;

/// Applies a request's SQL on a process other than 0.
type Apply = Box<dyn Fn(&str) + Send + Sync>;

/// The statements on their way between the API and the cluster link.
#[derive(Default)]
pub struct StatementRelay {
    /// Applied on process 0, to send on.
    outgoing: Mutex<Vec<String>>,
    incoming: Mutex<Incoming>,
}

impl std::fmt::Debug for StatementRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementRelay").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Incoming {
    apply: Option<Apply>,
    /// Arrived before this process was ready to apply them.
    waiting: Vec<String>,
}

impl StatementRelay {
    /// Process 0 applied `sql`: send it on.
    pub fn forward(&self, sql: &str) {
        self.outgoing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sql.to_string());
    }

    pub(super) fn take_forwarded(&self) -> Vec<String> {
        std::mem::take(&mut self.outgoing.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `sql` arrived from process 0: applied now, or once [`StatementRelay::apply_with`] is
    /// called.
    pub(super) fn deliver(&self, sql: String) {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        match &incoming.apply {
            Some(apply) => apply(&sql),
            None => incoming.waiting.push(sql),
        }
    }

    /// How this process applies what arrives; what arrived before is applied first.
    pub fn apply_with(&self, apply: impl Fn(&str) + Send + Sync + 'static) {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        for sql in std::mem::take(&mut incoming.waiting) {
            apply(&sql);
        }
        incoming.apply = Some(Box::new(apply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn statements_arriving_before_the_process_is_ready_are_applied_first_and_in_order() {
        let relay = StatementRelay::default();
        relay.deliver("CREATE VIEW a AS SELECT 1".into());
        relay.deliver("DROP VIEW a".into());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let into = applied.clone();
        relay.apply_with(move |sql| into.lock().unwrap().push(sql.to_string()));
        relay.deliver("CREATE VIEW b AS SELECT 2".into());
        assert_eq!(
            *applied.lock().unwrap(),
            [
                "CREATE VIEW a AS SELECT 1",
                "DROP VIEW a",
                "CREATE VIEW b AS SELECT 2"
            ]
        );
        relay.forward("x");
        assert_eq!(relay.take_forwarded(), ["x"]);
        assert!(relay.take_forwarded().is_empty());
    }
}
