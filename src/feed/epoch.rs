//! The epoch of a tenant's history: a value that changes whenever that
//! history starts anew (a memory-mode process start; in Redis mode a tenant
//! whose stored history is gone, or went backwards). `seq` is gapless within
//! one epoch, so an offset, a kept session or a copy of another epoch is
//! never taken for this one ([`super::recovery`] applies the rule).

use std::fmt;

/// The epoch of a tenant's history: random, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub(super) u32);

impl Epoch {
    /// A new epoch, other than `not` (the one it replaces, if any).
    pub fn new_other_than(not: Option<Epoch>) -> Epoch {
        loop {
            let e = rand::random::<u32>();
            if e != 0 && Some(Epoch(e)) != not {
                return Epoch(e);
            }
        }
    }

    /// A new epoch.
    pub fn random() -> Epoch {
        Epoch::new_other_than(None)
    }

    /// Its bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Reads the 8 hex digits [`Display`](fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Epoch> {
        if text.len() != 8 {
            return None;
        }
        u32::from_str_radix(text, 16).ok().filter(|e| *e != 0).map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}
