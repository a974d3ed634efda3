//! libFuzzer target: the gateway's request validation on protobuf bytes, and the agent's stdin
//! frame parser, with the invariants of `exec-gateway/tests/fuzz_requests/` (compiled in here).
//!
//! Input: first byte picks the message (ExecRequest, RunCodeRequest, CreateSandboxRequest,
//! UploadRequest, DownloadRequest, ListDirRequest, StatRequest, RemoveRequest, MakeDirRequest,
//! ExecInput, Get/Delete/ExtendSandboxRequest, or raw agent frames); the rest is its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../exec-gateway/tests/fuzz_requests/main.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    if let Err(violation) = checks::check_wire(kind, rest, &mut checks::Stats::default()) {
        panic!("invariant violated (kind {}): {violation}", kind % 14);
    }
});
