//! The moderation service: on `blog.publish_requested` it approves the post
//! (`blog.post_approved`) or rejects it (status `REJECTED`). Its rules: a title of at least 3
//! characters, a body of at least 10, none of a few banned words; then, of the posts that
//! pass, a configurable share is approved (80 % by default) by a draw seeded per deployment
//! (`SAGAFLOW_BLOG_SEED`), the same for the same post every time. Three attempts; when they
//! are exhausted the compensation rejects the post.

use sagaflow_core::{ParticipantTx, StoreError};
use sagaflow_engine::{async_trait, Emitter, EventCall, EventHandler, HandlerError, Subscriber};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::posts::{self, Transition, Transitioned};
use crate::BlogConfig;

/// The event an approval emits.
pub const APPROVED: &str = "blog.post_approved";

/// Words a post may not contain.
pub const BANNED: [&str; 3] = ["spam", "scam", "casino"];

/// The content rules: `Err(reason)` when the post breaks one.
pub fn rules(title: &str, body: &str) -> Result<(), String> {
    if title.trim().chars().count() < 3 {
        return Err("the title is shorter than 3 characters".into());
    }
    if body.trim().chars().count() < 10 {
        return Err("the body is shorter than 10 characters".into());
    }
    let text = format!("{title} {body}").to_lowercase();
    if let Some(word) = BANNED.iter().find(|w| text.contains(*w)) {
        return Err(format!("it contains the banned word {word:?}"));
    }
    Ok(())
}

/// The approval draw for a post: a number in [0, 1) from the seed and the post id.
pub fn draw(seed: u64, post_id: i64) -> f64 {
    let hash = Sha256::digest(format!("{seed}:{post_id}").as_bytes());
    let n = u64::from_be_bytes(hash[..8].try_into().unwrap_or_default());
    (n >> 11) as f64 / (1u64 << 53) as f64
}

struct Moderate {
    approval_rate: f64,
    seed: u64,
}

#[async_trait]
impl EventHandler for Moderate {
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        let id = posts::post_id_of(event)?;
        let Some(post) = posts::by_id(tx, id).await? else {
            return Ok(());
        };
        if post.status != posts::PENDING_PUBLISH
            || post.flow_id.as_deref() != Some(&event.correlation_id)
        {
            // Another flow's, or already decided: nothing to do.
            return Ok(());
        }
        let verdict = rules(&post.title, &post.body).and_then(|()| {
            if draw(self.seed, id) < self.approval_rate {
                Ok(())
            } else {
                Err(format!(
                    "not approved this time (the approval rate is {})",
                    self.approval_rate
                ))
            }
        });
        match verdict {
            Ok(()) => out.emit(event.follow(APPROVED, json!({ "post_id": id }))),
            Err(reason) => {
                posts::transition(tx, id, Transition::Reject { reason }).await?;
            }
        }
        Ok(())
    }

    async fn on_exhausted(
        &self,
        event: &EventCall,
        error: &str,
        tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        let id = event.payload["post_id"].as_i64().unwrap_or_default();
        if posts::in_flow(tx, id, &event.correlation_id)
            .await?
            .is_some()
        {
            let reason = format!("moderation could not decide: {error}");
            if let Transitioned::Invalid(why) =
                posts::transition(tx, id, Transition::Reject { reason }).await?
            {
                tracing::info!(why, "moderation compensation: nothing to reject");
            }
        }
        Ok(())
    }
}

/// The moderation service.
pub fn subscriber(config: &BlogConfig) -> Subscriber {
    Subscriber::new("blog-moderation").on(
        crate::articles::PUBLISH_REQUESTED,
        config.retry(3),
        Moderate {
            approval_rate: config.approval_rate,
            seed: config.seed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_say_why() {
        assert_eq!(rules("Hello", "a proper body"), Ok(()));
        assert!(rules("Hi", "a proper body").unwrap_err().contains("title"));
        assert!(rules("Hello", "short").unwrap_err().contains("body"));
        assert!(rules("Cheap casino", "come and play")
            .unwrap_err()
            .contains("casino"));
    }

    #[test]
    fn the_draw_is_seeded_and_spread() {
        assert_eq!(draw(1, 5), draw(1, 5));
        assert_ne!(draw(1, 5), draw(2, 5));
        let approved = (0..1000).filter(|i| draw(7, *i) < 0.8).count();
        assert!((750..850).contains(&approved), "{approved}");
    }
}
