//! Executor that runs scripts through a long-lived libnftables context,
//! loaded at run time from `libnftables.so.1`.
//!
//! Keeping one context (and so one netlink socket) for the daemon's whole
//! life is what lets orch create its table with `flags owner`: the kernel
//! ties the table to this socket, so `nft flush ruleset` from another
//! process cannot touch it. This module only runs scripts; it must not
//! decide what they say.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

use libloading::Library;

use super::{Executor, FirewallError};

const LIBRARY_NAME: &str = "libnftables.so.1";
const NFT_CTX_DEFAULT: c_uint = 0;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The entry points orch uses, resolved once.
struct Symbols {
    ctx_new: CtxNew,
    buffer_output: CtxBuffer,
    buffer_error: CtxBuffer,
    ctx_free: CtxFree,
    get_error_buffer: CtxGetBuffer,
    run_cmd_from_buffer: RunCmd,
}

/// A libnftables context owned by this process.
pub struct LibNftExecutor {
    ctx: *mut c_void,
    symbols: Symbols,
    // Declared last so it is dropped after the context is freed.
    _library: Library,
}

// SAFETY: the context is only ever used through `&mut self`, so from one
// thread at a time; libnftables keeps no thread-local state.
unsafe impl Send for LibNftExecutor {}

impl LibNftExecutor {
    /// Loads libnftables and creates a context whose output and errors are
    /// captured in buffers rather than printed.
    pub fn open() -> Result<Self, FirewallError> {
        let unavailable =
            |why: String| FirewallError::LibraryUnavailable(format!("{LIBRARY_NAME}: {why}"));
        // SAFETY: loading a system library whose initialisers are benign.
        let library =
            unsafe { Library::new(LIBRARY_NAME) }.map_err(|e| unavailable(e.to_string()))?;
        // SAFETY: each type matches libnftables' public C API (nftables/libnftables.h).
        let symbols = unsafe {
            Symbols {
                ctx_new: symbol(&library, b"nft_ctx_new\0")?,
                buffer_output: symbol(&library, b"nft_ctx_buffer_output\0")?,
                buffer_error: symbol(&library, b"nft_ctx_buffer_error\0")?,
                ctx_free: symbol(&library, b"nft_ctx_free\0")?,
                get_error_buffer: symbol(&library, b"nft_ctx_get_error_buffer\0")?,
                run_cmd_from_buffer: symbol(&library, b"nft_run_cmd_from_buffer\0")?,
            }
        };
        let ctx = new_context(&symbols).ok_or_else(|| unavailable("nft_ctx_new failed".into()))?;
        Ok(LibNftExecutor {
            ctx,
            symbols,
            _library: library,
        })
    }
}

/// Resolves one function of libnftables.
///
/// # Safety
/// `T` must be the function's real signature.
unsafe fn symbol<T: Copy>(library: &Library, name: &[u8]) -> Result<T, FirewallError> {
    // SAFETY: the caller vouches for T.
    unsafe { library.get::<T>(name) }
        .map(|found| *found)
        .map_err(|e| FirewallError::LibraryUnavailable(format!("{LIBRARY_NAME}: {e}")))
}

/// A new context with output and errors captured in buffers.
fn new_context(symbols: &Symbols) -> Option<*mut c_void> {
    // SAFETY: nft_ctx_new returns an owned context or null; the buffer
    // calls only configure that live context.
    unsafe {
        let ctx = (symbols.ctx_new)(NFT_CTX_DEFAULT);
        if ctx.is_null() {
            return None;
        }
        (symbols.buffer_output)(ctx);
        (symbols.buffer_error)(ctx);
        Some(ctx)
    }
}

/// Runs `script` in `ctx`, returning nft's error text on failure.
fn run_in(symbols: &Symbols, ctx: *mut c_void, script: &str) -> Result<(), FirewallError> {
    let command = CString::new(script)
        .map_err(|_| FirewallError::Refused("script contains a NUL byte".into()))?;
    // SAFETY: ctx is live; command is a valid C string for the call's duration.
    let status = unsafe { (symbols.run_cmd_from_buffer)(ctx, command.as_ptr()) };
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the error buffer is owned by ctx and valid until the next call.
    let message = unsafe {
        let errors = (symbols.get_error_buffer)(ctx);
        if errors.is_null() {
            String::new()
        } else {
            CStr::from_ptr(errors).to_string_lossy().into_owned()
        }
    };
    Err(FirewallError::Refused(super::summarise_nft_error(&message)))
}

impl Executor for LibNftExecutor {
    fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        run_in(&self.symbols, self.ctx, script)
    }

    fn name(&self) -> &'static str {
        "libnftables"
    }
}

impl Drop for LibNftExecutor {
    fn drop(&mut self) {
        // SAFETY: ctx came from nft_ctx_new and is freed exactly once.
        unsafe { (self.symbols.ctx_free)(self.ctx) };
    }
}
