//! Both parties in one process: for demos, benchmarks and tests.
//!
//! Real deployments put the two parties on different machines (the share
//! split is the point); this driver only moves each party's messages to the
//! other and counts the bytes.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use rand_core::CryptoRngCore;

use crate::error::{Error, Result};
use crate::protocol::{Protocol, Step};

/// Bytes and messages each party sent in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Encoded bytes sent by party A and by party B.
    pub bytes: [usize; 2],
    /// Messages sent by party A and by party B.
    pub messages: [usize; 2],
}

/// Runs `a` (role A) against `b` (role B) until both finish.
///
/// # Errors
///
/// The first error either party returns (of any class: nothing tampers with
/// messages here, so any error is a real failure), or [`Error::Stalled`] if
/// both wait with no message in flight.
pub fn run_pair<A: Protocol, B: Protocol>(
    rng: &mut impl CryptoRngCore,
    a: &mut A,
    b: &mut B,
) -> Result<(A::Output, B::Output, Traffic)> {
    let mut traffic = Traffic::default();
    let mut to_b: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_a: VecDeque<Vec<u8>> = VecDeque::new();
    let mut count = |queue: &mut VecDeque<Vec<u8>>, index: usize, message: Vec<u8>| {
        traffic.bytes[index] += message.len();
        traffic.messages[index] += 1;
        queue.push_back(message);
    };
    count(&mut to_b, 0, a.start(rng)?);
    count(&mut to_a, 1, b.start(rng)?);
    let (mut out_a, mut out_b) = (None, None);
    while out_a.is_none() || out_b.is_none() {
        let mut progressed = false;
        if let Some(message) = to_b.pop_front() {
            progressed = true;
            match b.handle(rng, &message)? {
                Step::Send(next) => count(&mut to_a, 1, next),
                Step::Finished(output) => out_b = Some(output),
            }
        }
        if let Some(message) = to_a.pop_front() {
            progressed = true;
            match a.handle(rng, &message)? {
                Step::Send(next) => count(&mut to_b, 0, next),
                Step::Finished(output) => out_a = Some(output),
            }
        }
        if !progressed {
            return Err(Error::Stalled);
        }
    }
    match (out_a, out_b) {
        (Some(a), Some(b)) => Ok((a, b, traffic)),
        _ => Err(Error::Stalled),
    }
}
