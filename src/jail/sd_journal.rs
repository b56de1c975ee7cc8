//! A journal reading handle from `libsystemd.so.0`, loaded at run time
//! (as `firewall/libnft.rs` loads libnftables), so orch links nothing of
//! systemd's and a host without the library only loses its journal jails.
//!
//! A safe face on the few `sd_journal_*` calls orch needs: open the local
//! journal, add matches, seek, step, read a field, the time and the
//! cursor, and pick up rotated files. A handle belongs to one thread at a
//! time (sd-journal is not thread safe, so [`Journal`] is `Send` but not
//! `Sync`). This module reads; it must not interpret entries.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};

use libloading::Library;

const LIBRARY_NAME: &str = "libsystemd.so.0";
/// `SD_JOURNAL_LOCAL_ONLY`: this machine's journal, as `journalctl` reads
/// it by default (system and user journals, not remote ones).
const SD_JOURNAL_LOCAL_ONLY: c_int = 1;

type Open = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
type Close = unsafe extern "C" fn(*mut c_void);
type AddMatch = unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int;
type Step = unsafe extern "C" fn(*mut c_void) -> c_int;
type SeekCursor = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SeekRealtime = unsafe extern "C" fn(*mut c_void, u64) -> c_int;
type GetData =
    unsafe extern "C" fn(*mut c_void, *const c_char, *mut *const c_void, *mut usize) -> c_int;
type GetRealtime = unsafe extern "C" fn(*mut c_void, *mut u64) -> c_int;
type GetCursor = unsafe extern "C" fn(*mut c_void, *mut *mut c_char) -> c_int;
type SetThreshold = unsafe extern "C" fn(*mut c_void, usize) -> c_int;

/// The entry points orch uses, resolved once per process.
struct Api {
    open: Open,
    close: Close,
    add_match: AddMatch,
    add_disjunction: Step,
    seek_tail: Step,
    seek_cursor: SeekCursor,
    test_cursor: SeekCursor,
    seek_realtime: SeekRealtime,
    next: Step,
    get_data: GetData,
    get_realtime: GetRealtime,
    get_cursor: GetCursor,
    set_data_threshold: SetThreshold,
    get_fd: Step,
    process: Step,
    // Declared last: the functions above point into it.
    _library: Library,
}

/// Why the journal cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SdJournalError {
    #[error("cannot load {LIBRARY_NAME}: {0}")]
    Unavailable(String),
    #[error("{call} failed: {}", std::io::Error::from_raw_os_error(*.errno))]
    Call { call: &'static str, errno: i32 },
}

/// The library, loaded on first use; a failure is kept and reported to
/// every caller.
fn api() -> Result<Arc<Api>, SdJournalError> {
    static API: OnceLock<Result<Arc<Api>, SdJournalError>> = OnceLock::new();
    API.get_or_init(|| load().map(Arc::new)).clone()
}

fn load() -> Result<Api, SdJournalError> {
    let unavailable = |why: String| SdJournalError::Unavailable(why);
    // SAFETY: loading a system library whose initialisers are benign.
    let library = unsafe { Library::new(LIBRARY_NAME) }.map_err(|e| unavailable(e.to_string()))?;
    // SAFETY: each type matches systemd's public C API (sd-journal.h).
    unsafe {
        Ok(Api {
            open: symbol(&library, b"sd_journal_open\0")?,
            close: symbol(&library, b"sd_journal_close\0")?,
            add_match: symbol(&library, b"sd_journal_add_match\0")?,
            add_disjunction: symbol(&library, b"sd_journal_add_disjunction\0")?,
            seek_tail: symbol(&library, b"sd_journal_seek_tail\0")?,
            seek_cursor: symbol(&library, b"sd_journal_seek_cursor\0")?,
            test_cursor: symbol(&library, b"sd_journal_test_cursor\0")?,
            seek_realtime: symbol(&library, b"sd_journal_seek_realtime_usec\0")?,
            next: symbol(&library, b"sd_journal_next\0")?,
            get_data: symbol(&library, b"sd_journal_get_data\0")?,
            get_realtime: symbol(&library, b"sd_journal_get_realtime_usec\0")?,
            get_cursor: symbol(&library, b"sd_journal_get_cursor\0")?,
            set_data_threshold: symbol(&library, b"sd_journal_set_data_threshold\0")?,
            get_fd: symbol(&library, b"sd_journal_get_fd\0")?,
            process: symbol(&library, b"sd_journal_process\0")?,
            _library: library,
        })
    }
}

/// Resolves one function of libsystemd.
///
/// # Safety
/// `T` must be the function's real signature.
unsafe fn symbol<T: Copy>(library: &Library, name: &[u8]) -> Result<T, SdJournalError> {
    // SAFETY: the caller vouches for T.
    unsafe { library.get::<T>(name) }
        .map(|found| *found)
        .map_err(|e| SdJournalError::Unavailable(e.to_string()))
}

/// A negative return is `-errno`.
fn check(call: &'static str, status: c_int) -> Result<c_int, SdJournalError> {
    if status < 0 {
        Err(SdJournalError::Call {
            call,
            errno: -status,
        })
    } else {
        Ok(status)
    }
}

/// An open view of the local journal.
pub struct Journal {
    handle: *mut c_void,
    api: Arc<Api>,
    /// Readable when journal files were created, rotated or changed (the
    /// handle's inotify descriptor, owned by the handle).
    changes: c_int,
}

// SAFETY: sd-journal handles may move between threads; they must not be
// used from two at once, which `&mut self` on every call ensures.
unsafe impl Send for Journal {}

impl Journal {
    /// Opens this machine's journal. Field values longer than
    /// `field_limit` bytes may be cut to it (a hint to libsystemd, which
    /// then need not decompress the rest).
    pub fn open_local(field_limit: usize) -> Result<Journal, SdJournalError> {
        let api = api()?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` is written by the call; a null one is never used.
        check("sd_journal_open", unsafe {
            (api.open)(&mut handle, SD_JOURNAL_LOCAL_ONLY)
        })?;
        let mut journal = Journal {
            handle,
            api,
            changes: -1,
        };
        // SAFETY: live handle.
        check("sd_journal_set_data_threshold", unsafe {
            (journal.api.set_data_threshold)(journal.handle, field_limit)
        })?;
        // Sets up the inotify watches `process` reads, for new and rotated
        // journal files.
        // SAFETY: live handle.
        journal.changes = check("sd_journal_get_fd", unsafe {
            (journal.api.get_fd)(journal.handle)
        })?;
        journal.process()?;
        Ok(journal)
    }

    /// Restricts reading to `matches`, in `journalctl` syntax: `FIELD=value`
    /// words, where matches on one field are alternatives, different fields
    /// must all hold, and `+` separates alternative groups.
    pub fn add_matches(&mut self, matches: &[String]) -> Result<(), SdJournalError> {
        for word in matches {
            if word == "+" {
                // SAFETY: live handle.
                check("sd_journal_add_disjunction", unsafe {
                    (self.api.add_disjunction)(self.handle)
                })?;
                continue;
            }
            // SAFETY: live handle; the bytes are read for the call only.
            check("sd_journal_add_match", unsafe {
                (self.api.add_match)(self.handle, word.as_ptr().cast(), word.len())
            })?;
        }
        Ok(())
    }

    /// Goes to just after the last entry.
    pub fn seek_tail(&mut self) -> Result<(), SdJournalError> {
        // SAFETY: live handle.
        check("sd_journal_seek_tail", unsafe {
            (self.api.seek_tail)(self.handle)
        })
        .map(drop)
    }

    /// Goes to the entry `cursor` names, or where it was: the next step
    /// lands on it (if it still exists) or on the first entry after it.
    pub fn seek_cursor(&mut self, cursor: &str) -> Result<(), SdJournalError> {
        let cursor = CString::new(cursor).map_err(|_| SdJournalError::Call {
            call: "sd_journal_seek_cursor",
            errno: libc::EINVAL,
        })?;
        // SAFETY: live handle, valid C string.
        check("sd_journal_seek_cursor", unsafe {
            (self.api.seek_cursor)(self.handle, cursor.as_ptr())
        })
        .map(drop)
    }

    /// Whether the current entry is the one `cursor` names.
    pub fn is_at(&mut self, cursor: &str) -> bool {
        let Ok(cursor) = CString::new(cursor) else {
            return false;
        };
        // SAFETY: live handle, valid C string.
        unsafe { (self.api.test_cursor)(self.handle, cursor.as_ptr()) > 0 }
    }

    /// Goes to the first entry written at or after `micros` (Unix time).
    pub fn seek_realtime(&mut self, micros: u64) -> Result<(), SdJournalError> {
        // SAFETY: live handle.
        check("sd_journal_seek_realtime_usec", unsafe {
            (self.api.seek_realtime)(self.handle, micros)
        })
        .map(drop)
    }

    /// Steps to the next entry; false at the end.
    pub fn step(&mut self) -> Result<bool, SdJournalError> {
        // SAFETY: live handle.
        check("sd_journal_next", unsafe { (self.api.next)(self.handle) }).map(|moved| moved > 0)
    }

    /// The current entry's first value of `field`, without the `FIELD=`
    /// prefix; `None` when the entry has no such field.
    pub fn field(&mut self, field: &CStr) -> Option<Vec<u8>> {
        let mut data: *const c_void = std::ptr::null();
        let mut length = 0usize;
        // SAFETY: live handle; on success `data` points at `length` bytes
        // owned by the handle, valid until the next call on it, and copied
        // before that.
        unsafe {
            if (self.api.get_data)(self.handle, field.as_ptr(), &mut data, &mut length) < 0
                || data.is_null()
            {
                return None;
            }
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), length);
            let prefix = field.to_bytes().len() + 1;
            bytes.get(prefix..).map(<[u8]>::to_vec)
        }
    }

    /// When the current entry was written, in microseconds of Unix time.
    pub fn realtime_micros(&mut self) -> Result<u64, SdJournalError> {
        let mut micros = 0u64;
        // SAFETY: live handle; writes one u64.
        check("sd_journal_get_realtime_usec", unsafe {
            (self.api.get_realtime)(self.handle, &mut micros)
        })?;
        Ok(micros)
    }

    /// The current entry's cursor: where to resume after it.
    pub fn cursor(&mut self) -> Result<String, SdJournalError> {
        let mut text: *mut c_char = std::ptr::null_mut();
        // SAFETY: live handle; on success `text` is a malloc'd C string
        // that is ours to free, exactly once.
        unsafe {
            check(
                "sd_journal_get_cursor",
                (self.api.get_cursor)(self.handle, &mut text),
            )?;
            if text.is_null() {
                return Err(SdJournalError::Call {
                    call: "sd_journal_get_cursor",
                    errno: libc::ENOENT,
                });
            }
            let cursor = CStr::from_ptr(text).to_string_lossy().into_owned();
            libc::free(text.cast());
            Ok(cursor)
        }
    }

    /// A descriptor that becomes readable when journal files change, for
    /// `poll`; [`Journal::process`] reads it. journald signals a write
    /// only when its 250 ms timer fires, so this is for quiet spells.
    pub fn changes_fd(&self) -> c_int {
        self.changes
    }

    /// Takes in journal files created, rotated or deleted since the last
    /// call, without waiting.
    pub fn process(&mut self) -> Result<(), SdJournalError> {
        // SAFETY: live handle.
        check("sd_journal_process", unsafe {
            (self.api.process)(self.handle)
        })
        .map(drop)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: the handle came from sd_journal_open and is closed once.
        unsafe { (self.api.close)(self.handle) };
    }
}
