//! Interning of ban reasons and sources: one shared allocation per distinct
//! text, cut to [`MAX_BAN_TEXT_BYTES`].
//!
//! Pure memory bookkeeping; it must not do any I/O or look at what the
//! texts say.

use std::collections::HashSet;
use std::sync::Arc;

use super::MAX_BAN_TEXT_BYTES;

/// Texts are cut at a char boundary by the one helper that cuts untrusted
/// text everywhere.
use crate::quote::cut as truncate_at_char_boundary;

/// Shares one allocation per distinct reason/source text. The last few
/// texts handed out are compared before hashing: bans (and loads of a
/// million of them) cycle through a handful of reasons and sources.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) strings: HashSet<Arc<str>>,
    recent: [Option<Arc<str>>; Interner::RECENT],
    next_recent: usize,
}

impl Interner {
    const RECENT: usize = 8;

    pub(super) fn len(&self) -> usize {
        self.strings.len()
    }

    pub(super) fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.recently_used(text) {
            return shared;
        }
        let shared = match self.strings.get(text) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(text);
                self.strings.insert(Arc::clone(&shared));
                shared
            }
        };
        self.remember(&shared);
        shared
    }

    /// Like `intern` after cutting to [`MAX_BAN_TEXT_BYTES`], reusing the
    /// caller's allocation when the text is new and short enough.
    pub(super) fn intern_shared(&mut self, text: &Arc<str>) -> Arc<str> {
        let kept = truncate_at_char_boundary(text, MAX_BAN_TEXT_BYTES);
        if kept.len() < text.len() || self.strings.contains(kept) {
            return self.intern(kept);
        }
        self.strings.insert(Arc::clone(text));
        Arc::clone(text)
    }

    fn recently_used(&self, text: &str) -> Option<Arc<str>> {
        self.recent
            .iter()
            .flatten()
            .find(|shared| shared.len() == text.len() && ***shared == *text)
            .cloned()
    }

    fn remember(&mut self, shared: &Arc<str>) {
        self.recent[self.next_recent] = Some(Arc::clone(shared));
        self.next_recent = (self.next_recent + 1) % Self::RECENT;
    }

    /// Forgets strings no ban refers to any more.
    pub(super) fn drop_unused(&mut self) {
        self.recent = Default::default();
        self.strings.retain(|text| Arc::strong_count(text) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BanRecord;
    use crate::store::test_support::{HOUR, NOW, ban, net, open};

    #[test]
    fn reason_and_source_are_truncated_at_char_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let long_reason = "é".repeat(600); // 1200 bytes
        let long_source = "x".repeat(5000);
        let mut record = ban("192.0.2.1/32", NOW, NOW + HOUR, &long_reason);
        record.source = Arc::from(long_source.as_str());
        {
            let mut store = open(dir.path());
            store.insert_bans(&[record]).unwrap();
            let stored = store.get_ban(&net("192.0.2.1/32")).unwrap();
            assert_eq!(stored.reason.len(), MAX_BAN_TEXT_BYTES);
            assert_eq!(&*stored.reason, "é".repeat(128));
            assert_eq!(stored.source.len(), MAX_BAN_TEXT_BYTES);
        }
        let store = open(dir.path());
        let stored = store.get_ban(&net("192.0.2.1/32")).unwrap();
        assert_eq!(&*stored.reason, "é".repeat(128));
        assert_eq!(stored.source.len(), MAX_BAN_TEXT_BYTES);
        assert_eq!(truncate_at_char_boundary("aé", 2), "a");
    }

    #[test]
    fn equal_strings_share_one_allocation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + HOUR, "sshd"),
                    ban("192.0.2.2/32", NOW, NOW + HOUR, "sshd"),
                ])
                .unwrap();
            let first = store.get_ban(&net("192.0.2.1/32")).unwrap();
            let second = store.get_ban(&net("192.0.2.2/32")).unwrap();
            assert!(Arc::ptr_eq(&first.reason, &second.reason));
        }
        let store = open(dir.path());
        let first = store.get_ban(&net("192.0.2.1/32")).unwrap();
        let second = store.get_ban(&net("192.0.2.2/32")).unwrap();
        assert!(Arc::ptr_eq(&first.reason, &second.reason));
        assert!(Arc::ptr_eq(&first.source, &second.source));
    }

    #[test]
    fn unused_strings_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let bans: Vec<BanRecord> = (0..200u32)
            .map(|i| {
                ban(
                    &format!("10.0.{}.{}/32", i / 256, i % 256),
                    NOW,
                    NOW + 1,
                    &format!("reason {i}"),
                )
            })
            .collect();
        store.insert_bans(&bans).unwrap();
        drop(bans);
        assert!(store.state.interner.len() >= 200);
        assert_eq!(store.purge_expired(NOW + 1).len(), 200);
        assert!(store.purge_expired(NOW + 2).is_empty());
        assert!(store.state.interner.len() <= 64);
    }
}
