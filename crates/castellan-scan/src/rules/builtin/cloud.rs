//! Cloud providers and hosting platforms.

use super::{assigned, end, rule, Builtin};

pub(super) const RULES: &[Builtin] = &[
    rule(
        "aws-access-key-id",
        "AWS access key ID",
        &["akia", "asia", "abia", "acca"],
        concat!(r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})", end!()),
    )
    .entropy(3.0)
    .line_local(),
    rule(
        "aws-secret-access-key",
        "AWS secret access key",
        &["aws"],
        assigned!(r"aws[A-Za-z0-9_.\-]{0,20}secret", r"[A-Za-z0-9/+]{40}"),
    )
    .entropy(4.0),
    rule(
        "gcp-api-key",
        "Google Cloud API key",
        &["aiza"],
        concat!(r"\b(AIza[0-9A-Za-z_\-]{35})", end!()),
    )
    .entropy(3.5),
    rule(
        "gcp-oauth-client-secret",
        "Google OAuth client secret",
        &["gocspx-"],
        concat!(r"\b(GOCSPX-[0-9A-Za-z_\-]{28})", end!()),
    ),
    rule(
        "google-oauth-access-token",
        "Google OAuth access token",
        &["ya29."],
        concat!(r"\b(ya29\.[0-9A-Za-z_\-]{40,})", end!()),
    ),
    rule(
        "azure-storage-account-key",
        "Azure storage account key in a connection string",
        &["accountkey="],
        r"(?i:AccountKey)=([A-Za-z0-9+/]{86}==)",
    ),
    rule(
        "azure-ad-client-secret",
        "Azure AD (Entra ID) client secret",
        &["q~"],
        concat!(
            r"(?:^|[^A-Za-z0-9_~.\-])([A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})",
            end!()
        ),
    )
    .entropy(3.5),
    rule(
        "azure-devops-pat",
        "Azure DevOps personal access token",
        &["azdo"],
        concat!(
            r"\b([A-Za-z0-9]{52}JQQJ99[A-Za-z0-9]{3}AZDO[A-Za-z0-9]{4})",
            end!()
        ),
    ),
    rule(
        "digitalocean-pat",
        "DigitalOcean personal access token",
        &["dop_v1_"],
        concat!(r"\b(dop_v1_[a-f0-9]{64})", end!()),
    ),
    rule(
        "digitalocean-oauth-token",
        "DigitalOcean OAuth access token",
        &["doo_v1_"],
        concat!(r"\b(doo_v1_[a-f0-9]{64})", end!()),
    ),
    rule(
        "digitalocean-refresh-token",
        "DigitalOcean OAuth refresh token",
        &["dor_v1_"],
        concat!(r"\b(dor_v1_[a-f0-9]{64})", end!()),
    ),
    rule(
        "alibaba-access-key-id",
        "Alibaba Cloud AccessKey ID",
        &["ltai"],
        concat!(r"\b(LTAI[A-Za-z0-9]{20})", end!()),
    )
    .entropy(3.0),
    rule(
        "heroku-api-key",
        "Heroku platform API key",
        &["hrku-"],
        concat!(r"\b(HRKU-AA[0-9A-Za-z_\-]{58})", end!()),
    ),
    rule(
        "heroku-api-key-legacy",
        "Heroku API key (UUID form) assigned to a Heroku setting",
        &["heroku"],
        assigned!(
            "heroku",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        ),
    ),
    rule(
        "cloudflare-origin-ca-key",
        "Cloudflare Origin CA key",
        &["v1.0-"],
        concat!(r"\b(v1\.0-[a-f0-9]{24}-[a-f0-9]{146})", end!()),
    ),
    rule(
        "cloudflare-api-token",
        "Cloudflare API token assigned to a Cloudflare setting",
        &["cloudflare", "cf_api"],
        assigned!("cloudflare|cf_api", "[A-Za-z0-9_\\-]{40}"),
    )
    .entropy(3.5),
    rule(
        "fly-io-access-token",
        "Fly.io access token",
        &["fm1r_", "fm2_", "fo1_"],
        concat!(r"\b((?:fm1[ar]|fm2|fo1)_[A-Za-z0-9+/=_\-]{43,})", end!()),
    ),
    rule(
        "hashicorp-vault-token",
        "HashiCorp Vault service or batch token",
        &["hvs.", "hvb."],
        concat!(r"\b(hv[sb]\.[A-Za-z0-9_\-]{90,})", end!()),
    ),
    rule(
        "terraform-cloud-token",
        "Terraform Cloud / HCP Terraform API token",
        &["atlasv1"],
        concat!(
            r"\b([A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,70})",
            end!()
        ),
    ),
    rule(
        "pulumi-access-token",
        "Pulumi access token",
        &["pul-"],
        concat!(r"\b(pul-[a-f0-9]{40})", end!()),
    ),
    rule(
        "databricks-token",
        "Databricks personal access token",
        &["dapi"],
        concat!(r"\b(dapi[a-f0-9]{32}(?:-\d)?)", end!()),
    )
    .entropy(3.0),
    rule(
        "openshift-user-token",
        "OpenShift user token",
        &["sha256~"],
        concat!(r"\b(sha256~[A-Za-z0-9_\-]{43})", end!()),
    ),
    rule(
        "supabase-access-token",
        "Supabase personal access token",
        &["sbp_"],
        concat!(r"\b(sbp_[a-f0-9]{40})", end!()),
    ),
    rule(
        "doppler-token",
        "Doppler API token",
        &["dp.pt.", "dp.st.", "dp.sa."],
        concat!(
            r"\b(dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44})",
            end!()
        ),
    ),
    rule(
        "planetscale-token",
        "PlanetScale service token or password",
        &["pscale_"],
        concat!(r"\b(pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_.\-]{43})", end!()),
    ),
];
