//! `sagaflow serve`: the engine behind the HTTP API, on embedded SQLite and the in-memory bus
//! by default. Until the reference systems land it serves the built-in order saga; its
//! participants run in this process on the in-memory bus, and as `sagaflow participant`
//! processes over a broker.
//!
//! `--role engine` and `--role api` split one deployment into processes sharing a
//! PostgreSQL database and a broker: engine processes consume replies, fire timers and
//! publish commands; API processes answer HTTP and decide what callers ask.

use anyhow::Context;
use sagaflow_engine::{Engine, EngineConfig};

use crate::config::{Role, ServeArgs, ServeConfig};
use crate::transport_url::Kind;

/// Every route of the reference apps, with who may call it (the API's own routes are in its
/// OpenAPI document: all need an API key but health, readiness, metrics and the docs).
pub fn app_route_table() -> Vec<(&'static str, sagaflow_api::RouteRule)> {
    let tagged = |app: &'static str, table: &[sagaflow_api::RouteRule]| {
        table
            .iter()
            .map(|rule| (app, rule.clone()))
            .collect::<Vec<_>>()
    };
    [
        tagged("shop", sagaflow_shop::routes().table()),
        tagged("social", sagaflow_social::routes().table()),
        tagged("blog", sagaflow_blog::routes().table()),
    ]
    .concat()
}

/// Starts the server and runs until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs, database_url: Option<&str>) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let config = crate::config::resolve(&args, database_url, &env)?;
    config.check_exposure()?;
    serve(config).await
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another sagaflow running there? pick another address with --listen)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let store = crate::store_url::open(&config.database_url).await?;
    // Definition files are read before anything starts, so a bad one stops the start.
    let file_definitions = match &config.definitions {
        Some(dir) => crate::definition_files::load_dir(dir)?,
        None => Vec::new(),
    };
    let transport = crate::transport_url::open(&config.transport, store.clone()).await?;
    // Services bound to a URL are called from the outbox; the rest go through the transport.
    let transport: std::sync::Arc<dyn sagaflow_core::Transport> = if config.services.is_empty() {
        transport
    } else {
        std::sync::Arc::new(
            sagaflow_http::HttpParticipants::new(transport, config.services.clone())
                .map_err(anyhow::Error::msg)?,
        )
    };
    let env = |k: &str| std::env::var(k).ok();
    let shop_config = sagaflow_shop::ShopConfig::from_env(&env).map_err(anyhow::Error::msg)?;
    // An engine-only process serves no shop endpoints and runs no shop services.
    let shop_config = if config.role == Role::Engine {
        shop_config
    } else {
        sagaflow_shop::prepare(&store, shop_config).await?
    };
    let mut social_config =
        sagaflow_social::SocialConfig::from_env(&env).map_err(anyhow::Error::msg)?;
    social_config.redis_url = config.redis_url.clone();
    if social_config.redis_url.is_none()
        && crate::transport_url::kind(&config.transport) != Ok(Kind::Memory)
    {
        // Counters change in other processes: a cache here would not see it.
        social_config.cache = sagaflow_social::cache::UnreadCache::off();
    }
    let social_config = if config.role == Role::Engine {
        social_config
    } else {
        sagaflow_social::prepare(&store, social_config).await?
    };
    let blog_config = sagaflow_blog::BlogConfig::from_env(&env).map_err(anyhow::Error::msg)?;
    let blog_config = if config.role == Role::Engine {
        blog_config
    } else {
        sagaflow_blog::prepare(&store, blog_config).await?
    };
    // Events the API emits (a post to publish) leave through this process's relay.
    let relay = match config.role {
        Role::Engine => None,
        Role::All | Role::Api => {
            Some(sagaflow_engine::EventRelay::start(store.clone(), transport.clone()).await?)
        }
    };
    let mut participants = Vec::new();
    let mut subscribers = Vec::new();
    // Nobody outside this process reaches the in-memory bus: the participants run here.
    if crate::transport_url::kind(&config.transport) == Ok(Kind::Memory) {
        for s in sagaflow_blog::subscribers(&blog_config) {
            let wake = relay.as_ref().map(|r| r.waker());
            subscribers.push(s.start(store.clone(), transport.clone(), wake).await?);
        }
        crate::demo::prepare(&store).await?;
        let all = crate::demo::participants()
            .into_iter()
            .chain(sagaflow_shop::participants(&shop_config))
            .chain(sagaflow_social::participants(&social_config, &store));
        for p in all {
            participants.push(p.start(store.clone(), transport.clone()).await?);
        }
    }
    let engine_config = match config.role {
        Role::All | Role::Engine => EngineConfig::default(),
        Role::Api => EngineConfig::api_only(),
    };
    let built_in: Vec<_> = std::iter::once(crate::demo::order_definition())
        .chain(sagaflow_shop::definitions())
        .chain(sagaflow_social::definitions(&social_config))
        .collect();
    // A file may not reuse the name and version of a saga the server brings itself.
    for (path, def) in &file_definitions {
        if built_in
            .iter()
            .any(|b| b.name == def.name && b.version == def.version)
        {
            anyhow::bail!(
                "{}: definition {} v{} is taken by a saga built into sagaflow serve (the demo, shop or social app); give yours another name or version",
                path.display(),
                def.name,
                def.version
            );
        }
    }
    let mut builder = Engine::builder(store.clone(), transport).config(engine_config);
    for def in built_in {
        builder = builder.register(def);
    }
    for (_, def) in &file_definitions {
        builder = builder.register(def.clone());
    }
    let engine = builder
        .start()
        .await
        .map_err(|e| match &config.definitions {
            Some(dir) if !file_definitions.is_empty() => {
                anyhow::anyhow!("{e} (definitions from {})", dir.display())
            }
            _ => anyhow::Error::new(e),
        })?;
    let apps = sagaflow_shop::router(sagaflow_shop::ShopState {
        engine: engine.clone(),
        store: store.clone(),
        config: std::sync::Arc::new(shop_config),
    });
    let blog_init_keys =
        sagaflow_blog::InitKeys::new(!config.api_keys.is_empty(), blog_config.init_token.clone());
    let blog = sagaflow_blog::router(sagaflow_blog::BlogState {
        engine: engine.clone(),
        store: store.clone(),
        config: std::sync::Arc::new(blog_config),
        relay_wake: relay.as_ref().map(|r| r.waker()),
        init_keys: blog_init_keys.clone(),
    });
    let social = sagaflow_social::SocialState {
        engine: engine.clone(),
        store,
        config: std::sync::Arc::new(social_config),
        api_keys: config.api_keys.clone(),
    };
    let reconciliation = match config.role {
        Role::Engine => None,
        Role::All | Role::Api => sagaflow_social::spawn_jobs(&social),
    };
    let apps = apps.merge(sagaflow_social::router(social)).merge(blog);
    let state = sagaflow_api::ApiState {
        engine: engine.clone(),
        config: sagaflow_api::ApiConfig {
            body_limit_bytes: config.body_limit,
            keys: config.api_keys.clone(),
            read_open: config.read_open,
            // Open (no keys) on loopback: only loopback names, so a web page elsewhere
            // cannot reach this server through a DNS name pointed at 127.0.0.1.
            allowed_hosts: (config.api_keys.is_empty() && config.listen.ip().is_loopback()).then(
                || {
                    sagaflow_api::LOOPBACK_HOSTS
                        .iter()
                        .map(|h| h.to_string())
                        .collect()
                },
            ),
            ..sagaflow_api::ApiConfig::default()
        },
    };
    let app = match config.role {
        Role::Engine => sagaflow_api::ops_app(state),
        // The reference apps answer at the root, the engine's API under /api/v1: one
        // router behind one edge (request ids, body limit, API keys by each route's table).
        Role::All | Role::Api => sagaflow_api::app_with(state, apps),
    };
    let base = format!("http://{addr}");
    println!(
        "sagaflow listening on {base} (role {}, database {}, transport {})",
        config.role.as_str(),
        crate::store_url::redact(&config.database_url),
        crate::store_url::redact(&config.transport)
    );
    if config.role != Role::Engine {
        println!("  dashboard: {base}/");
        println!("  API:      {base}/api/v1");
        println!("  OpenAPI:  {base}/api/v1/openapi.json");
        println!("  docs:     {base}/api/docs");
    }
    for (path, def) in &file_definitions {
        println!(
            "  definition {} v{} from {}",
            def.name,
            def.version,
            path.display()
        );
    }
    for service in &config.services {
        println!("  service {} over HTTP at {}", service.name, service.url);
    }
    println!("  metrics:  {base}/metrics");
    println!("  health:   {base}/healthz");
    if config.api_keys.is_empty() {
        println!("  auth:     none (no API keys configured; everything is open)");
        if config.role != Role::Engine {
            if let Some(token) = blog_init_keys.token() {
                println!(
                    "  blog:     POST /api/internal/init-keys takes X-Init-Token: {token} (once)"
                );
            }
        }
    } else {
        let reading = if config.read_open {
            "open"
        } else {
            "needs `read`"
        };
        println!(
            "  auth:     {} API key(s); operating needs `operate`, reading {reading}",
            config.api_keys.len()
        );
    }
    crate::connections::serve(listener, app, crate::drill::shutdown_signal()).await;
    // Stop taking work, finish the decisions in hand, then let the participants finish.
    if let Some(job) = reconciliation {
        job.abort();
    }
    engine.shutdown().await;
    for p in participants {
        p.shutdown().await;
    }
    for s in subscribers {
        s.shutdown().await;
    }
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    println!("sagaflow stopped");
    Ok(())
}
