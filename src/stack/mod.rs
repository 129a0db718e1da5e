//! Stacks. (skeleton)
