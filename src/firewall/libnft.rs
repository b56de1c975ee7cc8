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
        // SAFETY: the symbol types match libnftables' public C API (nftables/libnftables.h).
        let (ctx_new, symbols, buffer_output, buffer_error) = unsafe {
            let ctx_new = *library
                .get::<CtxNew>(b"nft_ctx_new\0")
                .map_err(|e| unavailable(e.to_string()))?;
            let symbols = Symbols {
                ctx_free: *library
                    .get::<CtxFree>(b"nft_ctx_free\0")
                    .map_err(|e| unavailable(e.to_string()))?,
                get_error_buffer: *library
                    .get::<CtxGetBuffer>(b"nft_ctx_get_error_buffer\0")
                    .map_err(|e| unavailable(e.to_string()))?,
                run_cmd_from_buffer: *library
                    .get::<RunCmd>(b"nft_run_cmd_from_buffer\0")
                    .map_err(|e| unavailable(e.to_string()))?,
            };
            let buffer_output = *library
                .get::<CtxBuffer>(b"nft_ctx_buffer_output\0")
                .map_err(|e| unavailable(e.to_string()))?;
            let buffer_error = *library
                .get::<CtxBuffer>(b"nft_ctx_buffer_error\0")
                .map_err(|e| unavailable(e.to_string()))?;
            (ctx_new, symbols, buffer_output, buffer_error)
        };
        // SAFETY: nft_ctx_new returns an owned context or null.
        let ctx = unsafe { ctx_new(NFT_CTX_DEFAULT) };
        if ctx.is_null() {
            return Err(unavailable("nft_ctx_new failed".into()));
        }
        // SAFETY: ctx is a live context.
        unsafe {
            buffer_output(ctx);
            buffer_error(ctx);
        }
        Ok(LibNftExecutor {
            ctx,
            symbols,
            _library: library,
        })
    }
}

impl Executor for LibNftExecutor {
    fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        let command = CString::new(script)
            .map_err(|_| FirewallError::Refused("script contains a NUL byte".into()))?;
        // SAFETY: ctx is live; command is a valid C string for the call's duration.
        let status = unsafe { (self.symbols.run_cmd_from_buffer)(self.ctx, command.as_ptr()) };
        if status == 0 {
            return Ok(());
        }
        // SAFETY: the error buffer is owned by ctx and valid until the next call.
        let message = unsafe {
            let errors = (self.symbols.get_error_buffer)(self.ctx);
            if errors.is_null() {
                String::new()
            } else {
                CStr::from_ptr(errors).to_string_lossy().into_owned()
            }
        };
        Err(FirewallError::Refused(super::summarise_nft_error(&message)))
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
