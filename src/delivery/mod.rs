//! Delivery: getting events to the endpoints that subscribed to them.
//!
//! Events are written by the store in the same transaction as the change that
//! caused them; this room claims them, signs them, sends them and records each
//! attempt.
