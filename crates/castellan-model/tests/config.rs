use std::path::Path;
use std::time::Duration;

use castellan_model::{
    AuthMethod, Config, ConfigError, Diagnostic, DlpMode, Location, MethodSet, NormalizedPath,
    TokenLocation, DEFAULT_DLP_MAX_BYTES, DEFAULT_ROTATE_EVERY, DEFAULT_ROTATION_GRACE,
};

const EXAMPLE: &str = r#"
[connections.blog]
upstream = "https://blog.example.com/api/"
auth = { kind = "bearer" }
secret = "blog-token"

[connections.github]
upstream = "https://api.github.com"
auth = { kind = "header", name = "Authorization", value = "token {secret}" }
secret = "github-token"
agent_token_in = ["x-api-key", { query = "key" }]
response_timeout = "30s"

[connections.legacy]
upstream = "http://[::1]:8080"
auth = { kind = "basic", username = "svc" }
secret = "legacy-password"

[connections.maps]
upstream = "https://maps.example.com"
auth = { kind = "query", name = "key" }
secret = "maps-key"

[roles.marketing]
allow = [{ connection = "blog", methods = ["GET", "POST"], paths = ["/posts/**"] }]
deny  = [{ connection = "blog", methods = ["DELETE"], paths = ["/**"] }]

[roles.reader]
allow = [{ connection = "github", methods = ["GET"], paths = ["/repos/*/*"] }]
deny = [{ connection = "github" }]

[agents.marketing-bot]
owner = "jay@example.com"
roles = ["marketing"]
networks = ["127.0.0.0/8", "100.64.0.0/10", "::1"]
expires = "2027-01-31"
"#;

fn parse(source: &str) -> Result<Config, ConfigError> {
    Config::parse(source, Path::new("castellan.toml"))
}

fn errors(source: &str) -> String {
    match parse(source) {
        Ok(_) => panic!("configuration should be rejected:\n{source}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn example_config_parses() {
    let config = parse(EXAMPLE).expect("example is valid");
    let blog = &config.connections["blog"];
    assert_eq!(blog.upstream.origin(), "https://blog.example.com:443");
    assert_eq!(blog.upstream.base_path, "/api");
    assert_eq!(blog.auth, AuthMethod::Bearer);
    assert_eq!(blog.agent_token_in.len(), 4);

    let github = &config.connections["github"];
    let AuthMethod::Header { name, template } = &github.auth else {
        panic!("github uses a header");
    };
    assert_eq!(name, "authorization");
    assert_eq!(template.render("S"), "token S");
    assert_eq!(
        github.agent_token_in,
        vec![TokenLocation::XApiKey, TokenLocation::Query("key".into())]
    );
    assert_eq!(github.timeouts.response.as_secs(), 30);

    assert_eq!(
        config.connections["legacy"].upstream.origin(),
        "http://[::1]:8080"
    );
    assert_eq!(config.secret_names().len(), 4);

    let reader = &config.roles["reader"];
    assert_eq!(reader.deny[0].methods, MethodSet::Any);
    assert_eq!(reader.deny[0].paths[0].as_str(), "/**");
    assert_eq!(reader.allow[0].id.to_string(), "roles.reader.allow[0]");

    let bot = &config.agents["marketing-bot"];
    assert_eq!(bot.owner, "jay@example.com");
    assert_eq!(bot.networks.len(), 3);
    assert!(bot.allows_source("127.0.0.1".parse().unwrap()));
    assert!(bot.allows_source("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!bot.allows_source("10.0.0.1".parse().unwrap()));
    assert!(bot.expires.is_some());
}

/// A gateway keeps the configuration of every agent until the next reload,
/// so the lists of each agent hold no spare capacity.
#[test]
fn agent_lists_without_spare_capacity() {
    let source = format!(
        "{EXAMPLE}
[agents.two-roles]
owner = \"jay@example.com\"
roles = [\"marketing\", \"reader\"]
networks = [\"10.0.0.0/8\"]
"
    );
    let config = parse(&source).expect("valid configuration");
    for agent in config.agents.values() {
        assert_eq!(agent.roles.capacity(), agent.roles.len(), "{}", agent.name);
        assert_eq!(
            agent.networks.capacity(),
            agent.networks.len(),
            "{}",
            agent.name
        );
    }
}

#[test]
fn mapped_ipv4_networks_match_ipv4_sources() {
    let config =
        parse("[agents.bot]\nowner = \"a@example.com\"\nnetworks = [\"::ffff:10.0.0.0/104\"]\n")
            .expect("valid");
    let bot = &config.agents["bot"];
    assert_eq!(bot.networks[0].to_string(), "10.0.0.0/8");
    assert!(bot.allows_source("10.1.2.3".parse().unwrap()));
    assert!(bot.allows_source("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!bot.allows_source("11.0.0.1".parse().unwrap()));
}

#[test]
fn errors_carry_line_and_column() {
    let message = errors(
        "[connections.blog]\nupstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\nsecrte = \"t\"\n",
    );
    assert!(message.contains("castellan.toml:5:1:"), "{message}");
    assert!(message.contains("unknown field `secrte`"), "{message}");
    assert!(message.contains("hint:"), "{message}");
}

#[test]
fn undefined_references_rejected() {
    let source = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.marketing]
allow = [{ connection = "blgo", methods = ["GET"], paths = ["/**"] }]

[agents.bot]
owner = "a@example.com"
roles = ["marketng", "nothing-like-it"]
"#;
    let message = errors(source);
    assert!(message.contains("3 errors"), "{message}");
    assert!(
        message
            .contains(":8:25: rule roles.marketing.allow[0] names undefined connection \"blgo\""),
        "{message}"
    );
    assert!(message.contains("did you mean \"blog\""), "{message}");
    assert!(
        message.contains(":12:10: agent \"bot\" names undefined role \"marketng\""),
        "{message}"
    );
    assert!(message.contains("did you mean \"marketing\""), "{message}");
    assert!(
        message.contains("undefined role \"nothing-like-it\""),
        "{message}"
    );
}

#[test]
fn invalid_values_rejected() {
    let cases = [
        (
            "networks = [\"10.0.0.0/33\"]",
            "invalid network \"10.0.0.0/33\"",
        ),
        (
            "networks = [\"10.0.0.1/8\"]",
            "host bits are set; did you mean \"10.0.0.0/8\"",
        ),
        ("networks = [\"localhost\"]", "not an IP address or CIDR"),
        ("expires = \"next week\"", "invalid expiry \"next week\""),
        ("owner = \"  \"", "has an empty owner"),
    ];
    for (line, expected) in cases {
        let owner = if line.starts_with("owner") {
            ""
        } else {
            "owner = \"a@example.com\"\n"
        };
        let source = format!("[agents.bot]\n{owner}{line}\n");
        let message = errors(&source);
        assert!(message.contains(expected), "{line}: {message}");
    }
}

#[test]
fn invalid_rules_rejected() {
    let connection = "[connections.c]\nupstream = \"https://c.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\n[roles.r]\n";
    let cases = [
        ("allow = [{ connection = \"c\", methods = [\"get\"], paths = [\"/**\"] }]", "write \"GET\""),
        ("allow = [{ connection = \"c\", methods = [], paths = [\"/**\"] }]", "empty methods list"),
        ("allow = [{ connection = \"c\", methods = [\"GET\", \"*\"], paths = [\"/**\"] }]", "together with other methods"),
        ("deny = [{ connection = \"c\", methods = [\"*\", \"*\"], paths = [\"/**\"] }]", "write [\"*\"] alone"),
        ("allow = [{ connection = \"c\", paths = [\"/**\"] }]", "has no methods"),
        ("allow = [{ connection = \"c\", methods = [\"GET\"] }]", "has no paths"),
        ("allow = [{ connection = \"c\", methods = [\"GET\"], paths = [\"posts\"] }]", "must start with '/'"),
        ("allow = [{ connection = \"c\", methods = [\"GET\"], paths = [\"/a/**/b/**\"] }]", "'**' only once"),
        ("allow = [{ connection = \"c\", methods = [\"GET\"], paths = [\"/a/../b\"] }]", "'..' segment"),
        ("allow = [{ connection = \"c\", methods = [\"GET\"], paths = [\"/**\"], path = \"/x\" }]", "unknown field `path`"),
    ];
    for (line, expected) in cases {
        let message = errors(&format!("{connection}{line}\n"));
        assert!(message.contains(expected), "{line}: {message}");
        assert!(message.contains("castellan.toml:6:"), "{line}: {message}");
    }
}

#[test]
fn invalid_connections_rejected() {
    let cases = [
        ("upstream = \"ftp://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"", "scheme \"ftp\" is not supported"),
        ("upstream = \"https://user:pw@x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"", "bypass the vault"),
        ("upstream = \"https://x.example/?a=1\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"", "query or fragment"),
        ("upstream = \"not a url\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"", "invalid upstream URL"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"oauth\" }\nsecret = \"s\"", "unknown variant `oauth`"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"header\", name = \"x-key\", value = \"k\" }\nsecret = \"s\"", "{secret} exactly once"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"header\", name = \"bad header\" }\nsecret = \"s\"", "invalid header name"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"S!\"", "invalid secret name"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\nresponse_timeout = \"soon\"", "invalid duration"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\nagent_token_in = [\"cookie\"]", "unknown agent token location"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }", "missing field `secret`"),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\ndlp = \"deny\"", "invalid dlp \"deny\""),
        ("upstream = \"https://x.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\ndlp = \"block\"\ndlp_max_bytes = 0", "dlp_max_bytes of zero"),
    ];
    for (body, expected) in cases {
        let message = errors(&format!("[connections.c]\n{body}\n"));
        assert!(message.contains(expected), "{body}: {message}");
    }
}

#[test]
fn data_loss_check_settings() {
    let config = parse(
        "[connections.plain]\nupstream = \"https://a.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\n\
         [connections.checked]\nupstream = \"https://b.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\ndlp = \"block\"\ndlp_max_bytes = 65536\n",
    )
    .expect("valid config");
    let plain = &config.connections["plain"].dlp;
    assert_eq!(plain.mode, DlpMode::Off);
    assert_eq!(plain.max_bytes, DEFAULT_DLP_MAX_BYTES);
    let checked = &config.connections["checked"].dlp;
    assert_eq!(checked.mode, DlpMode::Block);
    assert_eq!(checked.max_bytes, 65536);
}

/// Rules on a case-insensitive connection are folded, so a pattern written
/// in mixed case matches every spelling of the path, and the same pattern on
/// an ordinary connection stays exact.
#[test]
fn case_insensitive_connections_fold_patterns() {
    let config = parse(
        "[connections.ci]\nupstream = \"https://a.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\ncase_insensitive_paths = true\n\
         [connections.exact]\nupstream = \"https://b.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\n\
         [roles.r]\ndeny = [{ connection = \"ci\", paths = [\"/Admin/**\"] }, { connection = \"exact\", paths = [\"/Admin/**\"] }]\n",
    )
    .expect("valid config");
    assert!(config.connections["ci"].case_insensitive_paths);
    let deny = &config.roles["r"].deny;
    let request = NormalizedPath::parse("/ADMIN/Users").expect("valid path");
    let folded = request.case_folded().expect("ASCII path folds");
    assert_eq!(folded.as_str(), "/admin/users");
    assert!(deny[0].paths[0].matches(&folded));
    assert!(!deny[1].paths[0].matches(&request));
    assert!(deny[1].paths[0].matches(&NormalizedPath::parse("/Admin/x").expect("valid path")));
    let message = errors(
        "[connections.ci]\nupstream = \"https://a.example\"\nauth = { kind = \"bearer\" }\nsecret = \"s\"\ncase_insensitive_paths = true\n\
         [roles.r]\nallow = [{ connection = \"ci\", methods = [\"GET\"], paths = [\"/caf%C3%A9\"] }]\n",
    );
    assert!(message.contains("escaped non-ASCII"), "{message}");
}

#[test]
fn duplicate_and_invalid_names_rejected() {
    let duplicate =
        "[agents.bot]\nowner = \"a@example.com\"\n[agents.bot]\nowner = \"b@example.com\"\n";
    let message = errors(duplicate);
    assert!(message.contains(":3:"), "{message}");
    assert!(message.to_lowercase().contains("duplicate"), "{message}");

    let message = errors("[agents.Bot]\nowner = \"a@example.com\"\n");
    assert!(message.contains("invalid agent name \"Bot\""), "{message}");
}

#[test]
fn missing_file_error_names_path() {
    let error = Config::load(Path::new("/nonexistent/castellan.toml")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("/nonexistent/castellan.toml"), "{message}");
    assert!(message.contains("castellan init"), "{message}");
}

#[test]
fn shared_certificate_binding_rejected() {
    let source = "[agents.a]\nowner = \"o@example.com\"\nclient_certificate = \"CN=bot\"\n\
                  [agents.b]\nowner = \"o@example.com\"\nclient_certificate = \"CN=bot\"\n";
    let message = errors(source);
    assert!(
        message.contains("same client_certificate CN=bot"),
        "{message}"
    );
    assert!(message.contains("castellan.toml:4:"), "{message}");
}

#[test]
fn departed_owners_parsed_and_matched() {
    let config =
        parse("[gateway]\ndeparted_owners = [\" Sam@Example.com \", \"lee@example.com\"]\n")
            .expect("valid config");
    let gateway = &config.gateway;
    assert_eq!(
        gateway.departed_owners,
        ["Sam@Example.com", "lee@example.com"]
    );
    assert!(gateway.is_departed("sam@example.com"));
    assert!(gateway.is_departed("LEE@example.com "));
    assert!(!gateway.is_departed("jay@example.com"));
    assert!(parse("")
        .expect("empty config")
        .gateway
        .departed_owners
        .is_empty());

    let message = errors("[gateway]\ndeparted_owners = [\"a@example.com\", \"  \"]\n");
    assert!(
        message.contains("departed_owners contains an empty owner"),
        "{message}"
    );
    assert!(message.contains("castellan.toml:2:"), "{message}");
}

#[test]
fn rotation_periods_default_and_override() {
    let defaults = parse(EXAMPLE).expect("example is valid");
    assert_eq!(defaults.gateway.rotate_every, DEFAULT_ROTATE_EVERY);
    assert_eq!(defaults.gateway.rotation_grace, DEFAULT_ROTATION_GRACE);
    assert_eq!(
        defaults.connections["blog"].rotate_every,
        Duration::from_secs(30 * 86_400)
    );
    assert_eq!(DEFAULT_ROTATION_GRACE, Duration::from_secs(7 * 86_400));

    let config = parse(
        "[gateway]\nrotate_every = \"90d\"\nrotation_grace = \"2d\"\n\
         [connections.inherits]\nupstream = \"https://a.example\"\nauth = { kind = \"bearer\" }\nsecret = \"a\"\n\
         [connections.own]\nupstream = \"https://b.example\"\nauth = { kind = \"bearer\" }\nsecret = \"b\"\nrotate_every = \"12h\"\n",
    )
    .expect("valid config");
    assert_eq!(
        config.gateway.rotate_every,
        Duration::from_secs(90 * 86_400)
    );
    assert_eq!(
        config.gateway.rotation_grace,
        Duration::from_secs(2 * 86_400)
    );
    assert_eq!(
        config.connections["inherits"].rotate_every,
        Duration::from_secs(90 * 86_400)
    );
    assert_eq!(
        config.connections["own"].rotate_every,
        Duration::from_secs(12 * 3600)
    );
}

#[test]
fn invalid_rotation_periods_rejected() {
    let message = errors(
        "[connections.a]\nupstream = \"https://a.example\"\nauth = { kind = \"bearer\" }\nsecret = \"a\"\nrotate_every = \"monthly\"\n",
    );
    assert!(message.contains("castellan.toml:5:16:"), "{message}");
    assert!(
        message.contains("invalid rotate_every \"monthly\""),
        "{message}"
    );
    assert!(message.contains("hint:"), "{message}");

    let message = errors("[gateway]\nrotation_grace = \"0s\"\n");
    assert!(message.contains("castellan.toml:2:18:"), "{message}");
    assert!(message.contains("rotation_grace of zero"), "{message}");
    assert!(message.contains("hint:"), "{message}");

    let message = errors("[gateway]\nrotate_every = \"-1d\"\n");
    assert!(message.contains("castellan.toml:2:"), "{message}");
    assert!(message.contains("invalid rotate_every"), "{message}");
}

const CONNECTION_AND_ROLES: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[roles.writer]
allow = [{ connection = "blog", methods = ["POST"], paths = ["/posts"] }]
"#;

/// Returns the diagnostics of `agent` declared after the roles above.
fn agent_diagnostics(agent: &str) -> Vec<Diagnostic> {
    let source = format!("{CONNECTION_AND_ROLES}\n{agent}");
    match parse(&source) {
        Ok(_) => panic!("configuration should be rejected:\n{source}"),
        Err(error) => error.diagnostics,
    }
}

#[test]
fn agent_role_listed_twice_rejected() {
    let diagnostics = agent_diagnostics(
        "[agents.bot]\nowner = \"a@example.com\"\nroles = [\"reader\", \"writer\", \"reader\"]\n",
    );

    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let diagnostic = &diagnostics[0];
    assert_eq!(
        diagnostic.message,
        "agent \"bot\" lists role \"reader\" more than once"
    );
    assert_eq!(
        diagnostic.hint.as_deref(),
        Some("remove the repeated entry from roles")
    );
    // The error points at the second "reader", the entry to remove. The
    // `roles` line follows a blank line, `[agents.bot]` and `owner`.
    let line = CONNECTION_AND_ROLES.lines().count() + 4;
    assert_eq!(diagnostic.location, Location { line, column: 30 });
}

#[test]
fn agent_role_repeated_per_extra_entry() {
    let diagnostics = agent_diagnostics(
        "[agents.bot]\nowner = \"a@example.com\"\nroles = [\"writer\", \"writer\", \"writer\"]\n",
    );

    let repeated = diagnostics
        .iter()
        .filter(|diagnostic| {
            diagnostic.message == "agent \"bot\" lists role \"writer\" more than once"
        })
        .count();
    assert_eq!(repeated, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
}

#[test]
fn agent_distinct_roles_accepted() {
    let source = format!(
        "{CONNECTION_AND_ROLES}\n[agents.bot]\nowner = \"a@example.com\"\nroles = [\"reader\", \"writer\"]\n"
    );

    let config = parse(&source).expect("valid");

    assert_eq!(config.agents["bot"].roles, ["reader", "writer"]);
}
