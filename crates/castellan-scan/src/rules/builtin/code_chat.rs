//! Source hosts, chat and collaboration tools.

use super::{assigned, end, rule, Builtin};

pub(super) const RULES: &[Builtin] = &[
    rule(
        "github-pat",
        "GitHub personal access token (classic)",
        &["ghp_"],
        concat!(r"\b(ghp_[0-9A-Za-z]{36})", end!()),
    )
    .entropy(3.0),
    rule(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token",
        &["github_pat_"],
        concat!(r"\b(github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59})", end!()),
    ),
    rule(
        "github-oauth-token",
        "GitHub OAuth access token",
        &["gho_"],
        concat!(r"\b(gho_[0-9A-Za-z]{36})", end!()),
    )
    .entropy(3.0),
    rule(
        "github-app-token",
        "GitHub App user-to-server or server-to-server token",
        &["ghu_", "ghs_"],
        concat!(r"\b(gh[us]_[0-9A-Za-z]{36})", end!()),
    )
    .entropy(3.0),
    rule(
        "github-refresh-token",
        "GitHub refresh token",
        &["ghr_"],
        concat!(r"\b(ghr_[0-9A-Za-z]{36,76})", end!()),
    )
    .entropy(3.0),
    rule(
        "gitlab-pat",
        "GitLab personal access token",
        &["glpat-"],
        concat!(r"\b(glpat-[0-9A-Za-z_\-]{20,})", end!()),
    ),
    rule(
        "gitlab-pipeline-trigger-token",
        "GitLab pipeline trigger token",
        &["glptt-"],
        concat!(r"\b(glptt-[0-9a-f]{40})", end!()),
    ),
    rule(
        "gitlab-runner-token",
        "GitLab runner registration or authentication token",
        &["gr1348941", "glrt-"],
        concat!(r"\b((?:GR1348941|glrt-)[0-9A-Za-z_\-]{20,})", end!()),
    ),
    rule(
        "gitlab-deploy-token",
        "GitLab deploy token",
        &["gldt-"],
        concat!(r"\b(gldt-[0-9A-Za-z_\-]{20,})", end!()),
    ),
    rule(
        "bitbucket-app-password",
        "Bitbucket app password",
        &["atbb"],
        concat!(r"\b(ATBB[A-Za-z0-9_=.\-]{32})", end!()),
    )
    .entropy(3.5),
    rule(
        "atlassian-api-token",
        "Atlassian (Jira, Confluence) API token",
        &["atatt3"],
        concat!(r"\b(ATATT3[A-Za-z0-9_\-=]{186})", end!()),
    ),
    rule(
        "sourcegraph-access-token",
        "Sourcegraph access token",
        &["sgp_"],
        concat!(
            r"\b(sgp_(?:[a-fA-F0-9]{16}_|local_)?[a-fA-F0-9]{40})",
            end!()
        ),
    ),
    rule(
        "slack-bot-token",
        "Slack bot token",
        &["xoxb-"],
        concat!(
            r"\b(xoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24})",
            end!()
        ),
    ),
    rule(
        "slack-user-token",
        "Slack user or workspace token",
        &["xoxp-", "xoxe-", "xoxa-", "xoxs-"],
        concat!(
            r"\b(xox[pesa]-[0-9]{10,13}-[0-9]{10,13}-[0-9]{10,13}-[a-f0-9]{32})",
            end!()
        ),
    ),
    rule(
        "slack-app-token",
        "Slack app-level token",
        &["xapp-"],
        concat!(r"\b(xapp-\d-[A-Z0-9]{9,12}-\d{10,13}-[a-f0-9]{64})", end!()),
    ),
    rule(
        "slack-webhook-url",
        "Slack incoming webhook URL",
        &["hooks.slack.com"],
        r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{8,12}/[AB][A-Z0-9]{8,12}/[A-Za-z0-9]{23,24})",
    ),
    rule(
        "discord-bot-token",
        "Discord bot token assigned to a Discord setting",
        &["discord"],
        assigned!(
            "discord",
            r"[MNO][A-Za-z0-9_\-]{23,25}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38}"
        ),
    ),
    rule(
        "discord-webhook-url",
        "Discord webhook URL",
        &["discord.com/api/webhooks", "discordapp.com/api/webhooks"],
        r"(https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_\-]{60,70})",
    ),
    rule(
        "telegram-bot-token",
        "Telegram bot API token",
        &[":aa"],
        concat!(r"\b([0-9]{8,10}:AA[0-9A-Za-z_\-]{33})", end!()),
    ),
    rule(
        "microsoft-teams-webhook-url",
        "Microsoft Teams incoming webhook URL",
        &["webhook.office.com"],
        r"(https://[a-z0-9\-]+\.webhook\.office\.com/webhookb2/[a-f0-9\-]{36}@[a-f0-9\-]{36}/IncomingWebhook/[a-f0-9]{32}/[a-f0-9\-]{36}(?:/[A-Za-z0-9_\-]{40,})?)",
    ),
    rule(
        "twilio-api-key",
        "Twilio API key SID",
        // `SK` followed by a hex digit: plain `sk` occurs in most source
        // files and would make the keyword prefilter useless for this rule.
        &[
            "sk0", "sk1", "sk2", "sk3", "sk4", "sk5", "sk6", "sk7", "sk8", "sk9", "ska", "skb",
            "skc", "skd", "ske", "skf",
        ],
        concat!(r"\b(SK[0-9a-f]{32})", end!()),
    )
    .entropy(3.0),
    rule(
        "sendgrid-api-key",
        "SendGrid API key",
        &["sg."],
        concat!(r"\b(SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43})", end!()),
    ),
    rule(
        "mailgun-api-key",
        "Mailgun private API key",
        &["key-"],
        concat!(r"\b(key-[0-9a-f]{32})", end!()),
    )
    .entropy(3.0)
    .line_local(),
    rule(
        "mailchimp-api-key",
        "Mailchimp API key",
        &["-us"],
        concat!(r"\b([0-9a-f]{32}-us[0-9]{1,2})", end!()),
    )
    .entropy(3.0),
    rule(
        "linear-api-key",
        "Linear API key",
        &["lin_api_"],
        concat!(r"\b(lin_api_[A-Za-z0-9]{40})", end!()),
    ),
    rule(
        "notion-integration-token",
        "Notion integration token",
        &["ntn_"],
        concat!(r"\b(ntn_[0-9]{11}[A-Za-z0-9]{35})", end!()),
    ),
    rule(
        "postman-api-key",
        "Postman API key",
        &["pmak-"],
        concat!(r"\b(PMAK-[a-f0-9]{24}-[a-f0-9]{34})", end!()),
    ),
    rule(
        "twitter-bearer-token",
        "Twitter / X app bearer token",
        &["aaaaaaaaaaaaaaaaaaaaa"],
        concat!(r"\b(A{22}[A-Za-z0-9%]{80,120})", end!()),
    ),
    rule(
        "okta-api-token",
        "Okta API token assigned to an Okta setting",
        &["okta"],
        assigned!("okta", r"00[A-Za-z0-9_\-]{40}"),
    ),
];
