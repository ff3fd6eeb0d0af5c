//! `floor`: (being written).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use crate::{Common, Outcome};

/// Options of `floor`.
#[derive(Debug, Args)]
pub struct FloorArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Runs `floor`.
pub async fn run(_args: &FloorArgs, _started: Instant) -> Result<Outcome> {
    bail!("floor: not written yet")
}
