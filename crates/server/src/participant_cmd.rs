//! `sagaflow participant`: runs built-in participant services as a process of their own, over
//! a broker, as a distributed deployment does (`scripts/cluster`, the fault tests). Each
//! service keeps its tables and its inbox in the database given.

use anyhow::bail;

use crate::drill::shutdown_signal;
use crate::transport_url::Kind;

/// Which participants to run.
#[derive(Debug, Clone, clap::Args)]
pub struct ParticipantArgs {
    /// The built-in application: `demo` (the order saga's stock, billing, delivery and
    /// notifications services), `shop` (the reference shop's services), `social` (the social
    /// network's services), `blog` (the blog's subscribers: moderation, preview, publication,
    /// notification) or `drill` (the crash drill's service).
    #[arg(long, default_value = "demo")]
    pub app: String,
    /// Run only these services of the application (repeatable); all of them by default.
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// The broker: `nats://HOST:PORT`, `amqp://USER:PASS@HOST:PORT/VHOST` or `kafka://HOST:PORT`
    /// [env: SAGAFLOW_TRANSPORT].
    #[arg(long, env = "SAGAFLOW_TRANSPORT")]
    pub transport: String,
    /// Redis for the social app's unread-counter cache (`redis://HOST:PORT[/DB]`), which the
    /// counters service writes after each change [env: SAGAFLOW_REDIS_URL].
    #[arg(long, env = "SAGAFLOW_REDIS_URL")]
    pub redis_url: Option<String>,
}

/// Runs the participants until SIGINT or SIGTERM.
pub async fn run(args: ParticipantArgs, database_url: &str) -> anyhow::Result<()> {
    if crate::transport_url::kind(&args.transport).map_err(anyhow::Error::msg)? == Kind::Memory {
        bail!("a participant process needs a broker the engine reaches: --transport nats://…, amqp://… or kafka://…");
    }
    let store = crate::store_url::open(database_url).await?;
    let mut subscribers = Vec::new();
    let all = match args.app.as_str() {
        "demo" => {
            crate::demo::prepare(&store).await?;
            crate::demo::participants()
        }
        "drill" => {
            crate::drill::prepare(&store).await?;
            vec![crate::drill::participant()]
        }
        "shop" => {
            let env = |k: &str| std::env::var(k).ok();
            let config = sagaflow_shop::ShopConfig::from_env(&env).map_err(anyhow::Error::msg)?;
            let config = sagaflow_shop::prepare(&store, config).await?;
            sagaflow_shop::participants(&config)
        }
        "social" => {
            let env = |k: &str| std::env::var(k).ok();
            let mut config =
                sagaflow_social::SocialConfig::from_env(&env).map_err(anyhow::Error::msg)?;
            config.redis_url = args.redis_url.clone();
            if config.redis_url.is_none() {
                config.cache = sagaflow_social::cache::UnreadCache::off();
            }
            let config = sagaflow_social::prepare(&store, config).await?;
            sagaflow_social::participants(&config, &store)
        }
        "blog" => {
            let env = |k: &str| std::env::var(k).ok();
            let config = sagaflow_blog::BlogConfig::from_env(&env).map_err(anyhow::Error::msg)?;
            let config = sagaflow_blog::prepare(&store, config).await?;
            subscribers = sagaflow_blog::subscribers(&config);
            Vec::new()
        }
        other => bail!("unknown --app {other:?}: use demo, drill, shop, social or blog"),
    };
    let known: Vec<String> = all
        .iter()
        .map(|p| p.service().to_string())
        .chain(subscribers.iter().map(|s| s.service().to_string()))
        .collect();
    for s in &args.services {
        if !known.contains(s) {
            bail!(
                "--service {s:?} is not a service of {}: it has {}",
                args.app,
                known.join(", ")
            );
        }
    }
    let transport = crate::transport_url::open(&args.transport, store.clone()).await?;
    let mut handles = Vec::new();
    for p in all {
        if args.services.is_empty() || args.services.iter().any(|s| s == p.service()) {
            let name = p.service().to_string();
            handles.push(p.start(store.clone(), transport.clone()).await?);
            println!("participant {name} ready");
        }
    }
    let wanted = |name: &str| args.services.is_empty() || args.services.iter().any(|s| s == name);
    let mut subscribed = Vec::new();
    // The events the subscribers emit leave through a relay of this process.
    let relay = if subscribers.iter().any(|s| wanted(s.service())) {
        Some(sagaflow_engine::EventRelay::start(store.clone(), transport.clone()).await?)
    } else {
        None
    };
    for s in subscribers {
        if wanted(s.service()) {
            let name = s.service().to_string();
            let wake = relay.as_ref().map(|r| r.waker());
            subscribed.push(s.start(store.clone(), transport.clone(), wake).await?);
            println!("subscriber {name} ready");
        }
    }
    shutdown_signal().await;
    for h in handles {
        h.shutdown().await;
    }
    for s in subscribed {
        s.shutdown().await;
    }
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    println!("participants stopped");
    Ok(())
}
