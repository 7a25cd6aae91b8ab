//! The engine's clock: wall time anchored once at start-up and advanced by the
//! monotonic clock, so expiry never jumps with wall-clock changes and tests can run
//! with tokio's paused time.

use presence_model::Timestamp;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            base_ms: chrono::Utc::now().timestamp_millis(),
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.base_ms + self.base.elapsed().as_millis() as i64)
    }

    /// The monotonic instant at which `at` falls.
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let offset = (at.millis() - self.base_ms).max(0) as u64;
        self.base + std::time::Duration::from_millis(offset)
    }
}
