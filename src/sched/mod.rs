//! Workers and their queues. (skeleton: not built yet)
use crate::error::{Error, Result};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    pub workers: usize,
    pub stack_size: usize,
}

pub struct Runtime {}
impl Runtime {
    pub fn new(_c: Config) -> Result<Arc<Runtime>> {
        Err(Error::NoMem)
    }
    pub fn shutdown(&self) -> Result<()> {
        Ok(())
    }
}
