//! Memcheck client requests (valgrind's `memcheck.h`), issued with the
//! x86-64 magic instruction sequence so that no C shim or header is needed.
//!
//! On a real CPU the sequence is a no-op (four rotations of `rdi` by a total
//! of 128 bits, then `xchg rbx, rbx`) and every request returns its default;
//! valgrind's JIT recognises it and performs the request. On other
//! architectures every request is a no-op and [`running_on_valgrind`] is
//! false, so a harness that needs valgrind fails instead of passing vacuously.

/// `VG_USERREQ__RUNNING_ON_VALGRIND` (valgrind.h).
const RUNNING_ON_VALGRIND: usize = 0x1001;
/// `VG_USERREQ_TOOL_BASE('M','C')` (memcheck.h).
const MEMCHECK_BASE: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
/// `VG_USERREQ__MAKE_MEM_UNDEFINED`.
const MAKE_MEM_UNDEFINED: usize = MEMCHECK_BASE + 1;
/// `VG_USERREQ__MAKE_MEM_DEFINED`.
const MAKE_MEM_DEFINED: usize = MEMCHECK_BASE + 2;

#[cfg(target_arch = "x86_64")]
// The request block is read by valgrind through `rax`; inline asm is
// `unsafe` by definition, and this is the one place this crate issues it.
#[allow(unsafe_code)]
fn client_request(default: usize, request: usize, arg1: usize, arg2: usize) -> usize {
    let args: [usize; 6] = [request, arg1, arg2, 0, 0, 0];
    let result: usize;
    // SAFETY: the sequence only rotates `rdi` (declared clobbered) and
    // exchanges `rbx` with itself; under valgrind it reads `args`, which
    // lives until after the asm block. No `nomem`: the compiler must not
    // move memory accesses across a request that changes their shadow state.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") default => result,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(default: usize, _request: usize, _arg1: usize, _arg2: usize) -> usize {
    default
}

/// Whether this process runs under valgrind.
#[must_use]
pub fn running_on_valgrind() -> bool {
    client_request(0, RUNNING_ON_VALGRIND, 0, 0) != 0
}

fn span<T: ?Sized>(value: &T) -> (usize, usize) {
    (
        core::ptr::from_ref(value).cast::<u8>() as usize,
        size_of_val(value),
    )
}

/// Marks the bytes of `value` secret (memcheck: undefined). The bytes keep
/// their values; only valgrind's shadow state changes.
pub fn mark_secret<T: ?Sized>(value: &T) {
    let (address, length) = span(value);
    client_request(0, MAKE_MEM_UNDEFINED, address, length);
}

/// Marks the bytes of `value` public (memcheck: defined): a message on the
/// wire, or a verdict the protocol publishes anyway.
pub fn mark_public<T: ?Sized>(value: &T) {
    let (address, length) = span(value);
    client_request(0, MAKE_MEM_DEFINED, address, length);
}
