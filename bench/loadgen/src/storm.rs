//! `storm`: (being written).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use crate::{Common, Outcome};

/// Options of `storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Runs `storm`.
pub async fn run(_args: &StormArgs, _started: Instant) -> Result<Outcome> {
    bail!("storm: not written yet")
}
