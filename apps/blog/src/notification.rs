//! The notification service: on `blog.post_published` it writes one push record for each
//! subscriber of the author who set a push key — at most one per subscriber and post (the
//! table's key), however often the event comes. Five attempts; when they are exhausted it only
//! logs: the post is already published.

use sagaflow_app_kit::sql::now_ms;
use sagaflow_core::{ParticipantTx, StoreError};
use sagaflow_engine::{async_trait, Emitter, EventCall, EventHandler, HandlerError, Subscriber};

use crate::BlogConfig;

struct Notify {
    failures: u32,
}

#[async_trait]
impl EventHandler for Notify {
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        if event.attempt <= self.failures {
            return Err(HandlerError(format!(
                "the push gateway is unavailable (attempt {})",
                event.attempt
            )));
        }
        let (Some(post), Some(author)) = (
            event.payload["post_id"].as_i64(),
            event.payload["author_id"].as_i64(),
        ) else {
            return Err(HandlerError("the event has no post_id or author_id".into()));
        };
        let title = event.payload["title"].as_str().unwrap_or("a new post");
        tx.execute(
            "INSERT INTO blog_push (subscriber_id, post_id, push_key, message, created_at) \
             SELECT u.id, $1, u.subscription_key, $2, $3 FROM blog_subscriptions s JOIN blog_users u ON u.id = s.subscriber_id \
             WHERE s.target_id = $4 AND u.subscription_key IS NOT NULL \
             ON CONFLICT (subscriber_id, post_id) DO NOTHING",
            &[
                post.into(),
                format!("new post: {title}").into(),
                now_ms().into(),
                author.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn on_exhausted(
        &self,
        event: &EventCall,
        error: &str,
        _tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        tracing::warn!(flow = %event.correlation_id, error, "subscribers were not notified; the post stays published");
        Ok(())
    }
}

/// The notification service.
pub fn subscriber(config: &BlogConfig) -> Subscriber {
    Subscriber::new("blog-notification").on(
        crate::publication::PUBLISHED,
        config.retry(5),
        Notify {
            failures: config.notify_failures,
        },
    )
}
