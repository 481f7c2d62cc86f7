//! The publication service: on `blog.preview_ready` it publishes the post (`PUBLISHED`) and
//! emits `blog.post_published`. Three attempts; when they are exhausted the compensation marks
//! the post `ERROR`.

use sagaflow_core::{ParticipantTx, StoreError};
use sagaflow_engine::{async_trait, Emitter, EventCall, EventHandler, HandlerError, Subscriber};
use serde_json::json;

use crate::posts::{self, Transition, Transitioned};
use crate::BlogConfig;

/// The event publication emits.
pub const PUBLISHED: &str = "blog.post_published";

struct Publish;

#[async_trait]
impl EventHandler for Publish {
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        let id = posts::post_id_of(event)?;
        if posts::in_flow(tx, id, &event.correlation_id)
            .await?
            .is_none()
        {
            // Gone, or moved on to another publication attempt.
            return Ok(());
        }
        match posts::transition(tx, id, Transition::Publish).await? {
            Transitioned::Done(post) => out.emit(event.follow(
                PUBLISHED,
                json!({ "post_id": id, "author_id": post.author_id, "title": post.title }),
            )),
            // Published already (this event's first handling did it), or decided otherwise
            // meanwhile (an operator rejected it): nothing to retry.
            Transitioned::Already(_) | Transitioned::NotFound | Transitioned::Invalid(_) => {}
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
        crate::preview::fail_post(tx, event, "publication", error).await
    }
}

/// The publication service.
pub fn subscriber(config: &BlogConfig) -> Subscriber {
    Subscriber::new("blog-publication").on(crate::preview::READY, config.retry(3), Publish)
}
