//! Secrets out of what is shown: a URL as it may be logged, printed or put in an error.

/// Query parameters whose values are secrets.
const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "api_key",
    "apikey",
    "sslpassword",
    "access_token",
];

/// `url` with its password replaced by `***`: the one in the userinfo
/// (`redis://:pw@host`, `postgres://user:pw@host/db`) and the value of any query parameter
/// that names one (`?password=…`, `?token=…`). Anything that is not a URL comes back as it
/// is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{user}:***{}", &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if SECRET_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            let mut tail = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                tail.push('#');
                tail.push_str(f);
            }
            tail
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_wherever_the_url_holds_them() {
        for (url, shown) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "postgres://app:s3cr3t@db/test?schema=a",
                "postgres://app:***@db/test?schema=a",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://db/test?user=app&password=s3cr3t",
                "postgres://db/test?user=app&password=***",
            ),
            ("redis://h:6379?Token=abc#x", "redis://h:6379?Token=***#x"),
            (
                "nats://127.0.0.1:4222?namespace=a",
                "nats://127.0.0.1:4222?namespace=a",
            ),
            ("amqp://user@h/v", "amqp://user@h/v"),
            ("memory", "memory"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        // An '@' in the path is not userinfo.
        assert_eq!(redact_url("http://h/a:b@c"), "http://h/a:b@c");
    }
}
