//! Bookkeeping for calls the driver is not currently handling: the call ids it has already seen (so an
//! OFFER the registry delivers twice, on the push stream and again from `/call/pending` after a
//! reconnect, or replays, is handled once), and the calls waiting while another call is in progress.

use std::collections::{HashSet, VecDeque};

/// How many handled call ids are remembered (a call id is random; this covers hours of calls).
pub const SEEN_MAX: usize = 1024;

/// A bounded set of call ids already handled; the oldest are forgotten first.
#[derive(Debug, Default)]
pub struct SeenCalls {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenCalls {
    /// Marks `call_id` handled. Returns false when it already was.
    pub fn insert(&mut self, call_id: &str) -> bool {
        if self.set.contains(call_id) {
            return false;
        }
        if self.order.len() == SEEN_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(call_id.to_owned());
        self.set.insert(call_id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_id_is_handled_once_and_memory_is_bounded() {
        let mut s = SeenCalls::default();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        for i in 0..SEEN_MAX {
            s.insert(&i.to_string());
        }
        assert_eq!(s.set.len(), SEEN_MAX);
        assert!(s.insert("a"), "forgotten after SEEN_MAX newer calls");
    }
}
