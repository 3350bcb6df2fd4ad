//! Package registries, CI and observability services.

use super::{assigned, end, rule, Builtin};

pub(super) const RULES: &[Builtin] = &[
    rule(
        "npm-access-token",
        "npm access token",
        &["npm_"],
        concat!(r"\b(npm_[A-Za-z0-9]{36})", end!()),
    )
    .entropy(3.5),
    rule(
        "pypi-upload-token",
        "PyPI upload token",
        &["pypi-ageichlwas5vcmc"],
        concat!(r"\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,})", end!()),
    ),
    rule(
        "crates-io-api-token",
        "crates.io API token",
        &["cio"],
        concat!(r"\b(cio[A-Za-z0-9]{32})", end!()),
    )
    .entropy(3.5),
    rule(
        "rubygems-api-key",
        "RubyGems API key",
        &["rubygems_"],
        concat!(r"\b(rubygems_[a-f0-9]{48})", end!()),
    ),
    rule(
        "nuget-api-key",
        "NuGet API key",
        &["oy2"],
        concat!(r"\b(oy2[a-z0-9]{43})", end!()),
    )
    .entropy(3.5),
    rule(
        "docker-hub-token",
        "Docker Hub personal or organization access token",
        &["dckr_pat_", "dckr_oat_"],
        concat!(r"\b(dckr_(?:pat|oat)_[A-Za-z0-9_\-]{27,32})", end!()),
    ),
    rule(
        "artifactory-api-key",
        "JFrog Artifactory API key",
        &["akcp"],
        concat!(r"\b(AKCp[A-Za-z0-9]{69})", end!()),
    ),
    rule(
        "clojars-deploy-token",
        "Clojars deploy token",
        &["clojars_"],
        concat!(r"\b(CLOJARS_[a-z0-9]{60})", end!()),
    ),
    rule(
        "npmrc-auth-token",
        "Registry auth token in an .npmrc line",
        &["_authtoken"],
        concat!(r"(?i:_authToken)\s*=\s*([A-Za-z0-9_\-+/=]{20,})", end!()),
    )
    .entropy(3.5),
    rule(
        "grafana-cloud-token",
        "Grafana Cloud API token",
        &["glc_"],
        concat!(r"\b(glc_[A-Za-z0-9+/]{32,400}={0,2})", end!()),
    )
    .entropy(3.5),
    rule(
        "grafana-service-account-token",
        "Grafana service account token",
        &["glsa_"],
        concat!(r"\b(glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})", end!()),
    ),
    rule(
        "new-relic-user-key",
        "New Relic user API key",
        &["nrak-"],
        concat!(r"\b(NRAK-[A-Z0-9]{27})", end!()),
    ),
    rule(
        "sentry-auth-token",
        "Sentry organization or user auth token",
        &["sntrys_", "sntryu_"],
        concat!(
            r"\b(sntrys_eyJ[A-Za-z0-9+/=_\-]{80,}|sntryu_[a-f0-9]{64})",
            end!()
        ),
    ),
    rule(
        "datadog-api-key",
        "Datadog API or application key assigned to a Datadog setting",
        &["datadog", "dd_api", "dd_app"],
        assigned!("datadog|dd_api|dd_app", "[a-f0-9]{32}|[a-f0-9]{40}"),
    )
    .entropy(3.0),
    rule(
        "dynatrace-api-token",
        "Dynatrace API token",
        &["dt0c01."],
        concat!(r"\b(dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64})", end!()),
    ),
    rule(
        "linkedin-client-secret",
        "LinkedIn client secret assigned to a LinkedIn setting",
        &["linkedin"],
        assigned!(r"linkedin[A-Za-z0-9_.\-]{0,12}secret", "[A-Za-z0-9]{16}"),
    )
    .entropy(3.3),
    rule(
        "contentful-pat",
        "Contentful personal access token",
        &["cfpat-"],
        concat!(r"\b(CFPAT-[A-Za-z0-9_\-]{43})", end!()),
    ),
    rule(
        "prefect-api-key",
        "Prefect API key",
        &["pnu_"],
        concat!(r"\b(pnu_[A-Za-z0-9]{36})", end!()),
    ),
    rule(
        "readme-api-key",
        "ReadMe API key",
        &["rdme_"],
        concat!(r"\b(rdme_[a-z0-9]{70})", end!()),
    ),
    rule(
        "easypost-api-key",
        "EasyPost API key",
        &["ezak"],
        concat!(r"\b(EZ[AT]K[A-Za-z0-9]{54})", end!()),
    ),
    rule(
        "onepassword-service-account-token",
        "1Password service account token",
        &["ops_eyj"],
        concat!(r"\b(ops_eyJ[A-Za-z0-9+/=]{250,})", end!()),
    ),
    rule(
        "mapbox-secret-token",
        "Mapbox secret access token",
        &["sk.eyj"],
        concat!(
            r"\b(sk\.eyJ[A-Za-z0-9_\-]{50,}\.[A-Za-z0-9_\-]{20,})",
            end!()
        ),
    ),
    rule(
        "age-secret-key",
        "age encryption secret key",
        &["age-secret-key-1"],
        concat!(
            r"\b(AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})",
            end!()
        ),
    ),
];
