//! The two-reference frame. (skeleton)
