//! `tenants`: (being written).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use crate::{Common, Outcome};

/// Options of `tenants`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Runs `tenants`.
pub async fn run(_args: &TenantsArgs, _started: Instant) -> Result<Outcome> {
    bail!("tenants: not written yet")
}
