//! `airlock-boot SRC DST ARGS...`: inflates the zlib stream in file SRC into a new executable file
//! DST (written under a temporary name, then renamed) and execs `DST ARGS...` with the same
//! environment. On any failure it prints what failed to stderr and exits with status 127, which the
//! kubelet reports as the container's termination message.
//!
//! In a sandbox pod: SRC is the agent in the operator's ConfigMap (`/.airlock-boot/agent.z`), DST is
//! the agent's path in the memory-backed agent volume (`/.airlock/airlock-agent`), and ARGS are
//! `init -- <command>`, so the agent becomes PID 1 exactly as if the container had started it.
//!
//! Linux x86_64 only, raw system calls. The output is bounded (64 MiB of reserved, lazily backed
//! address space) and every system call's result is checked.
#![no_std]
#![no_main]
// memcpy and friends are defined here; stop LLVM from turning their loops back into calls to them.
#![no_builtins]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("airlock-boot supports Linux x86_64 only");

use core::arch::{asm, global_asm};

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// Largest agent this will unpack.
const MAX_OUTPUT: usize = 64 << 20;
/// Exit status on failure (as a shell's "command not found": the sandbox could not start).
const FAILED: i32 = 127;

mod sys {
    pub const WRITE: usize = 1;
    pub const OPEN: usize = 2;
    pub const CLOSE: usize = 3;
    pub const LSEEK: usize = 8;
    pub const MMAP: usize = 9;
    pub const RENAME: usize = 82;
    pub const UNLINK: usize = 87;
    pub const EXECVE: usize = 59;
    pub const EXIT_GROUP: usize = 231;

    pub const O_RDONLY: usize = 0;
    pub const O_WRONLY: usize = 1;
    pub const O_CREAT: usize = 0o100;
    pub const O_TRUNC: usize = 0o1000;
    pub const O_CLOEXEC: usize = 0o2000000;
    pub const SEEK_END: usize = 2;
    pub const PROT_READ: usize = 1;
    pub const PROT_WRITE: usize = 2;
    pub const MAP_PRIVATE: usize = 2;
    pub const MAP_ANONYMOUS: usize = 0x20;
    pub const MAP_NORESERVE: usize = 0x4000;
    pub const EINTR: isize = 4;
}

global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// Process entry: the kernel leaves argc, argv[], NULL, envp[], NULL on the stack.
unsafe extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: the layout above is the Linux process-start ABI.
    let (argc, argv, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    let code = match unsafe { run(argc, argv, envp) } {
        Ok(never) => match never {},
        Err(e) => {
            e.report();
            FAILED
        }
    };
    exit(code)
}

enum Never {}

/// What failed, on which path, with which errno (0 if not a system call).
struct Failure {
    what: &'static str,
    path: *const u8,
    errno: isize,
}

impl Failure {
    fn report(&self) {
        write_all(2, b"airlock-boot: ");
        write_all(2, self.what.as_bytes());
        if !self.path.is_null() {
            write_all(2, b" ");
            // SAFETY: paths come from argv (NUL-terminated) or from `Path`, which NUL-terminates.
            write_all(2, unsafe { cstr(self.path) });
        }
        if self.errno != 0 {
            write_all(2, b": errno ");
            let mut buf = [0u8; 20];
            write_all(2, decimal(self.errno.unsigned_abs(), &mut buf));
        }
        write_all(2, b"\n");
    }
}

fn fail(what: &'static str, path: *const u8, ret: isize) -> Failure {
    Failure {
        what,
        path,
        errno: if ret < 0 { -ret } else { 0 },
    }
}

unsafe fn run(
    argc: usize,
    argv: *const *const u8,
    envp: *const *const u8,
) -> Result<Never, Failure> {
    if argc < 4 {
        return Err(fail(
            "usage: airlock-boot SRC DST ARGS...",
            core::ptr::null(),
            0,
        ));
    }
    // SAFETY: argc counts the argv entries.
    let (src, dst) = unsafe { (*argv.add(1), *argv.add(2)) };

    let input = map_file(src)?;
    let output = unsafe {
        syscall6(
            sys::MMAP,
            0,
            MAX_OUTPUT,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_NORESERVE,
            usize::MAX,
            0,
        )
    };
    if output < 0 {
        return Err(fail("cannot reserve memory to unpack", src, output));
    }
    // SAFETY: a fresh private mapping of MAX_OUTPUT bytes.
    let output = unsafe { core::slice::from_raw_parts_mut(output as *mut u8, MAX_OUTPUT) };
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
        | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
        | inflate_flags::TINFL_FLAG_COMPUTE_ADLER32;
    let (status, _, len) = decompress(&mut state, input, output, 0, flags);
    if status != TINFLStatus::Done {
        return Err(fail(
            "not a complete zlib stream (or larger than 64 MiB)",
            src,
            0,
        ));
    }

    let tmp = Path::with_suffix(dst, b".tmp").ok_or_else(|| fail("path too long", dst, 0))?;
    unsafe { syscall3(sys::UNLINK, tmp.ptr() as usize, 0, 0) };
    let fd = unsafe {
        syscall3(
            sys::OPEN,
            tmp.ptr() as usize,
            sys::O_WRONLY | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC,
            0o555,
        )
    };
    if fd < 0 {
        return Err(fail("cannot create", tmp.ptr(), fd));
    }
    let mut rest = &output[..len];
    while !rest.is_empty() {
        let n = unsafe { syscall3(sys::WRITE, fd as usize, rest.as_ptr() as usize, rest.len()) };
        if n == -sys::EINTR {
            continue;
        }
        if n <= 0 {
            return Err(fail("cannot write", tmp.ptr(), n));
        }
        rest = &rest[n as usize..];
    }
    let r = unsafe { syscall3(sys::CLOSE, fd as usize, 0, 0) };
    if r < 0 {
        return Err(fail("cannot write", tmp.ptr(), r));
    }
    let r = unsafe { syscall3(sys::RENAME, tmp.ptr() as usize, dst as usize, 0) };
    if r < 0 {
        return Err(fail("cannot rename into place", dst, r));
    }
    // argv[2..] is `DST ARGS... NULL`: exactly the new program's argv.
    let r = unsafe {
        syscall3(
            sys::EXECVE,
            dst as usize,
            argv.add(2) as usize,
            envp as usize,
        )
    };
    Err(fail("cannot execute", dst, r))
}

/// Maps a whole file read-only.
fn map_file(path: *const u8) -> Result<&'static [u8], Failure> {
    let fd = unsafe { syscall3(sys::OPEN, path as usize, sys::O_RDONLY | sys::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("cannot open", path, fd));
    }
    let size = unsafe { syscall3(sys::LSEEK, fd as usize, 0, sys::SEEK_END) };
    if size <= 0 {
        return Err(fail("cannot read (empty?)", path, size));
    }
    let addr = unsafe {
        syscall6(
            sys::MMAP,
            0,
            size as usize,
            sys::PROT_READ,
            sys::MAP_PRIVATE,
            fd as usize,
            0,
        )
    };
    if addr < 0 {
        return Err(fail("cannot map", path, addr));
    }
    unsafe { syscall3(sys::CLOSE, fd as usize, 0, 0) };
    // SAFETY: a private read-only mapping of `size` bytes that is never unmapped.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) })
}

/// A NUL-terminated path built on the stack.
struct Path {
    buf: [u8; 4096],
}

impl Path {
    fn with_suffix(base: *const u8, suffix: &[u8]) -> Option<Path> {
        let base = unsafe { cstr(base) };
        let mut p = Path { buf: [0; 4096] };
        let len = base.len() + suffix.len();
        if len >= p.buf.len() {
            return None;
        }
        p.buf[..base.len()].copy_from_slice(base);
        p.buf[base.len()..len].copy_from_slice(suffix);
        Some(p)
    }

    fn ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }
}

/// The bytes of a NUL-terminated string.
unsafe fn cstr<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    unsafe { core::slice::from_raw_parts(p, n) }
}

fn decimal(mut v: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

fn write_all(fd: usize, mut b: &[u8]) {
    while !b.is_empty() {
        let n = unsafe { syscall3(sys::WRITE, fd, b.as_ptr() as usize, b.len()) };
        if n == -sys::EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

fn exit(code: i32) -> ! {
    loop {
        // exit_group does not return.
        unsafe { syscall3(sys::EXIT_GROUP, code as usize, 0, 0) };
    }
}

unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
    let ret: isize;
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

unsafe fn syscall6(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let ret: isize;
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_all(2, b"airlock-boot: internal error\n");
    exit(FAILED)
}

// The compiler's own calls (struct copies, zeroing) need these; there is no libc.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        unsafe { *d.add(i) = *s.add(i) };
        i += 1;
    }
    d
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) <= (s as usize) {
        return unsafe { memcpy(d, s, n) };
    }
    let mut i = n;
    while i > 0 {
        i -= 1;
        unsafe { *d.add(i) = *s.add(i) };
    }
    d
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        unsafe { *d.add(i) = c as u8 };
        i += 1;
    }
    d
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe { memcmp(a, b, n) }
}
