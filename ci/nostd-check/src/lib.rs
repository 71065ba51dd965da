//! Link check: `mpc-core` with `default-features = false` must build into a
//! `#![no_std]` static library.
//!
//! The panic handler below is a lang item that `std` also defines, so if any
//! dependency links `std` the build fails with a duplicate lang item error.
//! The exported function calls into `mpc-core` so that its code is really
//! compiled and linked, not optimised away.
//!
//! `unsafe` is confined to this check crate: a global allocator and reading
//! C pointers cannot be written without it. `mpc-core` itself forbids it.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::panic::PanicInfo;

use mpc_core::transcript::{tags, Transcript};
use mpc_core::wire::{decode_point, Envelope, Expected, ProtocolId, Role, SessionId};

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {}
}

unsafe extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
    fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32;
}

/// Forwards to the C allocator of whoever links the static library.
struct CAlloc;

/// `malloc` guarantees this alignment on the 64-bit targets we check.
const MALLOC_ALIGN: usize = 16;

// SAFETY: malloc/posix_memalign return blocks that are valid for `size`
// bytes at (at least) the requested alignment, or null on failure, which
// `GlobalAlloc` allows; `free` releases blocks from either.
unsafe impl GlobalAlloc for CAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain C call; a null result is reported as failure.
            unsafe { malloc(layout.size()) }
        } else {
            let mut out = core::ptr::null_mut();
            // SAFETY: `align` is a power of two and a multiple of the pointer
            // size because it exceeds `MALLOC_ALIGN`.
            if unsafe { posix_memalign(&mut out, layout.align(), layout.size()) } == 0 {
                out
            } else {
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { free(ptr) }
    }
}

#[global_allocator]
static ALLOCATOR: CAlloc = CAlloc;

/// Decodes an envelope from `bytes[..len]`, checks it is a round-1 signing
/// message from party A in the all-zero session, decodes its payload as a
/// point, and writes a transcript hash of the payload to `digest_out`.
///
/// Returns 0 on success, 1 for a null pointer, 2 for a bad envelope or
/// point.
///
/// # Safety
///
/// `bytes` must point to `len` readable bytes and `digest_out` to 32
/// writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mpc_nostd_check(bytes: *const u8, len: usize, digest_out: *mut u8) -> i32 {
    if bytes.is_null() || digest_out.is_null() {
        return 1;
    }
    // SAFETY: guaranteed by the caller, see `# Safety`.
    let input = unsafe { core::slice::from_raw_parts(bytes, len) };
    // SAFETY: guaranteed by the caller, see `# Safety`.
    let out = unsafe { core::slice::from_raw_parts_mut(digest_out, 32) };

    let expected = Expected {
        protocol: ProtocolId::Sign,
        session: SessionId([0; 32]),
        round: 1,
        sender: Role::A,
    };
    let result = Envelope::decode(input, usize::MAX)
        .and_then(|env| env.check(&expected).map(|()| env))
        .and_then(|env| decode_point(&env.payload).map(|_| env));
    match result {
        Ok(env) => {
            let digest = Transcript::new(tags::TEST).chain(&env.payload).finalize();
            out.copy_from_slice(&digest);
            0
        }
        Err(_) => 2,
    }
}
