//! Short texts a source reads again and again (sensor ids, rooms, zones, units), shared from
//! one allocation per thread.
//!
//! A fleet sends the same few thousand identifiers in every reading. Allocating each afresh
//! costs an allocation, a copy and a free per field per row, and every group or join lookup
//! then compares the bytes; a shared text costs a hash and a reference count, and lookups find
//! equal keys by pointer. The cache is bounded (it is emptied when full, so free text that never
//! repeats costs a hash and an insert, and never memory beyond the bound) and per thread (no
//! locks between workers).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use foldhash::fast::FixedState;

/// Longer texts are rarely identifiers; they are allocated as they come.
const LONGEST_SHARED: usize = 64;
/// Distinct texts kept per thread before the cache starts again.
const CAPACITY: usize = 1 << 16;

thread_local! {
    static RECENT: RefCell<HashSet<Arc<str>, FixedState>> = RefCell::new(HashSet::default());
}

/// `text` as a shared allocation: the one handed out before if this thread has seen it lately.
pub fn shared_text(text: &str) -> Arc<str> {
    if text.len() > LONGEST_SHARED {
        return Arc::from(text);
    }
    RECENT.with_borrow_mut(|recent| {
        if let Some(known) = recent.get(text) {
            return known.clone();
        }
        if recent.len() >= CAPACITY {
            recent.clear();
        }
        let text: Arc<str> = Arc::from(text);
        recent.insert(text.clone());
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_seen_before_is_the_same_allocation_and_the_cache_stays_bounded() {
        let first = shared_text("s-0001");
        assert!(Arc::ptr_eq(&first, &shared_text("s-0001")));
        assert!(!Arc::ptr_eq(&first, &shared_text("s-0002")));
        let long = "x".repeat(LONGEST_SHARED + 1);
        assert!(!Arc::ptr_eq(&shared_text(&long), &shared_text(&long)));
        for index in 0..CAPACITY + 10 {
            assert_eq!(&*shared_text(&format!("t{index}")), format!("t{index}"));
        }
        RECENT.with_borrow(|recent| assert!(recent.len() <= CAPACITY));
    }
}
