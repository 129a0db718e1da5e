//! Context switching. (skeleton)
