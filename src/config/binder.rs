//! The [`Binder`]: how one document's values reach the merged
//! configuration, one line per key.
//!
//! Every key is validated the same way: find where it was written, run its
//! check, and either let the value override what earlier files set or
//! record `"{key}: {message}"` at that place. The binder does that once, and
//! builds each dotted key from the section it is bound to, so a caller names
//! only the field: `b.set(&mut self.grace, raw.grace, "grace", check)`; or,
//! with [`bind!`], which takes the key from the raw field's name,
//! `bind!(b, self.grace, raw.grace, check)`.

use std::fmt::Display;
use std::ops::Range;

use toml::Spanned;

use super::{ConfigIssue, Document, Located, Origin};

/// Validates the keys of one section of one document and binds the valid
/// values to their merged slots; every problem goes to `issues`, located.
pub(super) struct Binder<'a> {
    doc: &'a Document,
    issues: &'a mut Vec<ConfigIssue>,
    /// The dotted path of the section, such as `jails.sshd`; empty at the
    /// top level.
    section: String,
}

impl<'a> Binder<'a> {
    /// A binder for the top level of `doc`.
    pub(super) fn new(doc: &'a Document, issues: &'a mut Vec<ConfigIssue>) -> Self {
        Binder {
            doc,
            issues,
            section: String::new(),
        }
    }

    /// A binder for the sub-section `name` (such as `dns`, or `allow[2]`
    /// for an entry of an array of tables).
    pub(super) fn section(&mut self, name: &str) -> Binder<'_> {
        let section = self.key(name);
        Binder {
            doc: self.doc,
            issues: &mut *self.issues,
            section,
        }
    }

    /// The document being bound.
    pub(super) fn doc(&self) -> &'a Document {
        self.doc
    }

    /// The full dotted key of `field` in this section; an empty `field`
    /// names the section itself.
    pub(super) fn key(&self, field: &str) -> String {
        match (self.section.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => self.section.clone(),
            (false, false) => format!("{}.{field}", self.section),
        }
    }

    /// Where the text at `span` stands.
    pub(super) fn origin(&self, span: &Range<usize>) -> Origin {
        self.doc.origin(span)
    }

    /// Where problems go, for checks that span keys and word their own
    /// messages.
    pub(super) fn issues(&mut self) -> &mut Vec<ConfigIssue> {
        self.issues
    }

    /// Records `"{key}: {message}"` at `at`, `key` being `field`'s full key.
    pub(super) fn issue(&mut self, at: &Origin, field: &str, message: impl Display) {
        let key = self.key(field);
        self.issues.push(at.issue(format!("{key}: {message}")));
    }

    /// Validates one value written for `field`: the value and where it was
    /// written, or `None` with the problem recorded.
    pub(super) fn value<R, T>(
        &mut self,
        raw: Spanned<R>,
        field: &str,
        check: impl FnOnce(R) -> Result<T, String>,
    ) -> Located<T> {
        let at = self.origin(&raw.span());
        match check(raw.into_inner()) {
            Ok(value) => Some((value, at)),
            Err(message) => {
                self.issue(&at, field, message);
                None
            }
        }
    }

    /// Validates `field` if this document sets it and, when valid, lets it
    /// override the merged `slot`; an invalid value leaves `slot` as it was.
    pub(super) fn set<R, T>(
        &mut self,
        slot: &mut Located<T>,
        raw: Option<Spanned<R>>,
        field: &str,
        check: impl FnOnce(R) -> Result<T, String>,
    ) {
        if let Some(raw) = raw
            && let found @ Some(_) = self.value(raw, field, check)
        {
            *slot = found;
        }
    }

    /// Validates every item of the array `field`: the valid ones, in order;
    /// each invalid one is recorded as `"{key}[{index}]: {message}"`.
    pub(super) fn each<R, T, E: Display>(
        &mut self,
        items: Vec<Spanned<R>>,
        field: &str,
        mut check: impl FnMut(R) -> Result<T, E>,
    ) -> Vec<T> {
        let mut valid = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let at = self.origin(&item.span());
            match check(item.into_inner()) {
                Ok(value) => valid.push(value),
                Err(message) => self.issue(&at, &format!("{field}[{index}]"), message),
            }
        }
        valid
    }
}

/// `bind!(b, slot, raw.field, check)` is [`Binder::set`] for the key
/// `field`: the raw structs name their fields as the TOML file names its
/// keys, so the key is spelled once, cannot drift from the field, and each
/// key stays on one line.
/// The merged value of a slot, or `default` when no file set it.
pub(super) fn value_or<T>(slot: Located<T>, default: T) -> T {
    slot.map_or(default, |(value, _)| value)
}

macro_rules! bind {
    ($b:ident, $slot:expr, $raw:ident . $field:ident, $check:expr) => {
        $b.set(&mut $slot, $raw.$field, stringify!($field), $check)
    };
}
pub(super) use bind;
