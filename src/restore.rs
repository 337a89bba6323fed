//! Point-in-time restore.
