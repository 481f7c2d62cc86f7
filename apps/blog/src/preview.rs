//! The preview service: on `blog.post_approved` it sets the post's preview URL — derived
//! from the post's content alone, so the same content always gets the same URL — and emits
//! `blog.preview_ready`. Three attempts; when they are exhausted the event goes to the dead
//! letters and the compensation marks the post `ERROR`.

use sagaflow_core::{ParticipantTx, StoreError};
use sagaflow_engine::{async_trait, Emitter, EventCall, EventHandler, HandlerError, Subscriber};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::posts::{self, Transition};
use crate::BlogConfig;

/// The event a preview emits.
pub const READY: &str = "blog.preview_ready";

/// The preview URL of a post's content.
pub fn preview_url(slug: &str, title: &str, body: &str) -> String {
    let hash = Sha256::digest(format!("{title}\n{body}").as_bytes());
    let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("https://previews.blog.example/{slug}-{short}.png")
}

struct Preview {
    failures: u32,
}

/// Marks the post `ERROR` once a technical step gave up (preview and publication share it).
pub(crate) async fn fail_post(
    tx: &mut dyn ParticipantTx,
    event: &EventCall,
    step: &str,
    error: &str,
) -> Result<(), StoreError> {
    let id = event.payload["post_id"].as_i64().unwrap_or_default();
    // Only the flow that failed may fail the post: not a later publication attempt.
    if posts::in_flow(tx, id, &event.correlation_id)
        .await?
        .is_some()
    {
        let reason = format!("{step} failed: {error}");
        posts::transition(tx, id, Transition::Fail { reason }).await?;
    }
    Ok(())
}

#[async_trait]
impl EventHandler for Preview {
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        if event.attempt <= self.failures {
            return Err(HandlerError(format!(
                "the preview renderer is unavailable (attempt {})",
                event.attempt
            )));
        }
        let id = posts::post_id_of(event)?;
        let Some(post) = posts::in_flow(tx, id, &event.correlation_id).await? else {
            return Ok(());
        };
        if post.status != posts::PENDING_PUBLISH {
            return Ok(());
        }
        let url = preview_url(&post.slug, &post.title, &post.body);
        posts::transition(tx, id, Transition::Preview { url: url.clone() }).await?;
        out.emit(event.follow(READY, json!({ "post_id": id, "preview_url": url })));
        Ok(())
    }

    async fn on_exhausted(
        &self,
        event: &EventCall,
        error: &str,
        tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        fail_post(tx, event, "preview", error).await
    }
}

/// The preview service.
pub fn subscriber(config: &BlogConfig) -> Subscriber {
    Subscriber::new("blog-preview").on(
        crate::moderation::APPROVED,
        config.retry(3),
        Preview {
            failures: config.preview_failures,
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_content_has_the_same_preview() {
        let a = super::preview_url("hello-1", "Hello", "body");
        assert_eq!(a, super::preview_url("hello-1", "Hello", "body"));
        assert_ne!(a, super::preview_url("hello-1", "Hello", "other body"));
        assert!(a.starts_with("https://previews.blog.example/hello-1-"));
    }
}
