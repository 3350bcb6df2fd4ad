#!/usr/bin/env python3
"""Generate the labelled corpus: fake, well-formed secrets and look-alikes.

Every value comes from Python's seeded `random` module, so no provider ever
issued it and it grants access to nothing. Run from this directory:
`python3 generate.py`; it rewrites positive/, negative/ and labels.json.
"""
import base64
import json
import os
import random
import shutil
import string
import zlib

SEED = 20240611
rng = random.Random(SEED)
LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits
ALNUM = DIGITS + UPPER + LOWER
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
BASE32 = UPPER + "234567"


def pick(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def castellan_token():
    body = "cst_" + pick(ALNUM, 40)
    value = zlib.crc32(body.encode())
    check = ""
    for _ in range(6):
        check = ALNUM[value % 62] + check
        value //= 62
    return body + check


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt():
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64url(json.dumps({"sub": pick(DIGITS, 8), "iat": 1700000000}).encode())
    return f"{header}.{payload}.{pick(URLSAFE, 43)}"


def pem_body(lines=12):
    return [pick(B64, 64) for _ in range(lines)] + [pick(B64, 20) + "=="]


def uuid():
    return "-".join(pick(HEX, n) for n in (8, 4, 4, 4, 12))


# rule id -> (line template, secret factory). `{s}` is where the secret goes.
SIMPLE = {
    "aws-access-key-id": ("AWS_ACCESS_KEY_ID={s}", lambda: "AKIA" + pick(BASE32, 16)),
    "aws-secret-access-key": ('aws_secret_access_key = "{s}"', lambda: pick(B64, 40)),
    "gcp-api-key": ('const mapsKey = "{s}";', lambda: "AIza" + pick(URLSAFE, 35)),
    "gcp-oauth-client-secret": ('"client_secret": "{s}",', lambda: "GOCSPX-" + pick(URLSAFE, 28)),
    "google-oauth-access-token": ("curl -H 'x-goog: {s}'", lambda: "ya29." + pick(URLSAFE, 60)),
    "azure-storage-account-key": ("DefaultEndpointsProtocol=https;AccountName=corpus;AccountKey={s};EndpointSuffix=core.windows.net",
                                  lambda: pick(B64, 86) + "=="),
    "azure-ad-client-secret": ("AZURE_CLIENT_SECRET={s}", lambda: pick(ALNUM, 3) + pick(DIGITS, 1) + "Q~" + pick(ALNUM + "_~.-", 34)),
    "azure-devops-pat": ("ADO_PAT={s}", lambda: pick(ALNUM, 52) + "JQQJ99" + pick(ALNUM, 3) + "AZDO" + pick(ALNUM, 4)),
    "digitalocean-pat": ("DIGITALOCEAN_ACCESS_TOKEN={s}", lambda: "dop_v1_" + pick(HEX, 64)),
    "digitalocean-oauth-token": ("do_oauth: {s}", lambda: "doo_v1_" + pick(HEX, 64)),
    "digitalocean-refresh-token": ("do_refresh: {s}", lambda: "dor_v1_" + pick(HEX, 64)),
    "alibaba-access-key-id": ("ALIBABA_CLOUD_ACCESS_KEY_ID={s}", lambda: "LTAI" + pick(ALNUM, 20)),
    "heroku-api-key": ("HEROKU_API_KEY={s}", lambda: "HRKU-AA" + pick(URLSAFE, 58)),
    "heroku-api-key-legacy": ("heroku_api_key: {s}", uuid),
    "cloudflare-origin-ca-key": ("CF_ORIGIN_CA_KEY={s}", lambda: "v1.0-" + pick(HEX, 24) + "-" + pick(HEX, 146)),
    "cloudflare-api-token": ('cloudflare_token = "{s}"', lambda: pick(URLSAFE, 40)),
    "fly-io-access-token": ("FLY_API_TOKEN={s}", lambda: "fo1_" + pick(URLSAFE, 43)),
    "hashicorp-vault-token": ("VAULT_TOKEN={s}", lambda: "hvs." + pick(URLSAFE, 94)),
    "terraform-cloud-token": ('token = "{s}"', lambda: pick(ALNUM, 14) + ".atlasv1." + pick(URLSAFE, 67)),
    "pulumi-access-token": ("PULUMI_ACCESS_TOKEN={s}", lambda: "pul-" + pick(HEX, 40)),
    "databricks-token": ("DATABRICKS_TOKEN={s}", lambda: "dapi" + pick(HEX, 32)),
    "openshift-user-token": ("oc login --token={s}", lambda: "sha256~" + pick(URLSAFE, 43)),
    "supabase-access-token": ("SUPABASE_ACCESS_TOKEN={s}", lambda: "sbp_" + pick(HEX, 40)),
    "doppler-token": ("DOPPLER_TOKEN={s}", lambda: "dp.pt." + pick(ALNUM, 43)),
    "planetscale-token": ("PLANETSCALE_TOKEN={s}", lambda: "pscale_tkn_" + pick(URLSAFE, 43)),
    "github-pat": ("GITHUB_TOKEN={s}", lambda: "ghp_" + pick(ALNUM, 36)),
    "github-fine-grained-pat": ("GH_TOKEN={s}", lambda: "github_pat_" + pick(ALNUM, 22) + "_" + pick(ALNUM, 59)),
    "github-oauth-token": ('oauth = "{s}"', lambda: "gho_" + pick(ALNUM, 36)),
    "github-app-token": ("installation: {s}", lambda: "ghs_" + pick(ALNUM, 36)),
    "github-refresh-token": ("refresh: {s}", lambda: "ghr_" + pick(ALNUM, 76)),
    "gitlab-pat": ("GITLAB_TOKEN={s}", lambda: "glpat-" + pick(URLSAFE, 20)),
    "gitlab-pipeline-trigger-token": ("trigger: {s}", lambda: "glptt-" + pick(HEX, 40)),
    "gitlab-runner-token": ("runner: {s}", lambda: "glrt-" + pick(URLSAFE, 20)),
    "gitlab-deploy-token": ("deploy: {s}", lambda: "gldt-" + pick(URLSAFE, 20)),
    "bitbucket-app-password": ("BITBUCKET_APP_PASSWORD={s}", lambda: "ATBB" + pick(ALNUM, 32)),
    "atlassian-api-token": ("JIRA_API_TOKEN={s}", lambda: "ATATT3" + pick(URLSAFE, 186)),
    "sourcegraph-access-token": ("SRC_ACCESS_TOKEN={s}", lambda: "sgp_" + pick(HEX, 16) + "_" + pick(HEX, 40)),
    "slack-bot-token": ("SLACK_BOT_TOKEN={s}", lambda: "xoxb-" + pick(DIGITS, 11) + "-" + pick(DIGITS, 12) + "-" + pick(ALNUM, 24)),
    "slack-user-token": ("SLACK_USER_TOKEN={s}", lambda: "xoxp-" + pick(DIGITS, 11) + "-" + pick(DIGITS, 11) + "-" + pick(DIGITS, 12) + "-" + pick(HEX, 32)),
    "slack-app-token": ("SLACK_APP_TOKEN={s}", lambda: "xapp-1-A" + pick(UPPER + DIGITS, 10) + "-" + pick(DIGITS, 13) + "-" + pick(HEX, 64)),
    "slack-webhook-url": ("webhook: {s}", lambda: "https://hooks.slack.com/services/T" + pick(UPPER + DIGITS, 8) + "/B" + pick(UPPER + DIGITS, 10) + "/" + pick(ALNUM, 24)),
    "discord-bot-token": ('DISCORD_TOKEN="{s}"', lambda: "M" + pick(ALNUM, 25) + "." + pick(URLSAFE, 6) + "." + pick(URLSAFE, 38)),
    "discord-webhook-url": ("url: {s}", lambda: "https://discord.com/api/webhooks/" + pick(DIGITS, 19) + "/" + pick(URLSAFE, 68)),
    "telegram-bot-token": ("TELEGRAM_BOT_TOKEN={s}", lambda: pick(DIGITS, 10) + ":AA" + pick(URLSAFE, 33)),
    "microsoft-teams-webhook-url": ("teams: {s}", lambda: "https://corpus.webhook.office.com/webhookb2/" + uuid() + "@" + uuid() + "/IncomingWebhook/" + pick(HEX, 32) + "/" + uuid()),
    "twilio-api-key": ("TWILIO_API_KEY={s}", lambda: "SK" + pick(HEX, 32)),
    "sendgrid-api-key": ("SENDGRID_API_KEY={s}", lambda: "SG." + pick(URLSAFE, 22) + "." + pick(URLSAFE, 43)),
    "mailgun-api-key": ("MAILGUN_KEY={s}", lambda: "key-" + pick(HEX, 32)),
    "mailchimp-api-key": ("MAILCHIMP={s}", lambda: pick(HEX, 32) + "-us" + pick(DIGITS, 2)),
    "linear-api-key": ("LINEAR_API_KEY={s}", lambda: "lin_api_" + pick(ALNUM, 40)),
    "notion-integration-token": ("NOTION_TOKEN={s}", lambda: "ntn_" + pick(DIGITS, 11) + pick(ALNUM, 35)),
    "postman-api-key": ("POSTMAN_API_KEY={s}", lambda: "PMAK-" + pick(HEX, 24) + "-" + pick(HEX, 34)),
    "twitter-bearer-token": ("TWITTER_BEARER={s}", lambda: "A" * 22 + pick(ALNUM + "%", 90)),
    "okta-api-token": ("okta_api_token: {s}", lambda: "00" + pick(URLSAFE, 40)),
    "stripe-secret-key": ("STRIPE_SECRET_KEY={s}", lambda: "sk_live_" + pick(ALNUM, 99)),
    "stripe-restricted-key": ("STRIPE_RESTRICTED={s}", lambda: "rk_live_" + pick(ALNUM, 99)),
    "stripe-webhook-secret": ("STRIPE_WEBHOOK={s}", lambda: "whsec_" + pick(ALNUM, 32)),
    "square-access-token": ("SQUARE_ACCESS={s}", lambda: "EAAA" + pick(URLSAFE, 60)),
    "square-oauth-secret": ("SQUARE_OAUTH={s}", lambda: "sq0csp-" + pick(URLSAFE, 43)),
    "paypal-braintree-access-token": ("BRAINTREE={s}", lambda: "access_token$production$" + pick(DIGITS + LOWER, 16) + "$" + pick(HEX, 32)),
    "shopify-access-token": ("SHOPIFY_TOKEN={s}", lambda: "shpat_" + pick(HEX, 32)),
    "shopify-shared-secret": ("SHOPIFY_SECRET={s}", lambda: "shpss_" + pick(HEX, 32)),
    "flutterwave-secret-key": ("FLW={s}", lambda: "FLWSECK-" + pick("abcdefgh0123456789", 32) + "-X"),
    "adyen-api-key": ("ADYEN={s}", lambda: "AQE" + pick(LOWER, 2) + pick(URLSAFE, 120)),
    "razorpay-key-secret": ('razorpay_key_secret = "{s}"', lambda: pick(ALNUM, 24)),
    "openai-api-key": ("OPENAI_API_KEY={s}", lambda: "sk-" + pick(ALNUM, 20) + "T3BlbkFJ" + pick(ALNUM, 20)),
    "openai-project-key": ("OPENAI_API_KEY={s}", lambda: "sk-proj-" + pick(URLSAFE, 156)),
    "anthropic-api-key": ("ANTHROPIC_API_KEY={s}", lambda: "sk-ant-api03-" + pick(URLSAFE, 93) + "AA"),
    "anthropic-admin-key": ("ANTHROPIC_ADMIN_KEY={s}", lambda: "sk-ant-admin01-" + pick(URLSAFE, 93) + "AA"),
    "huggingface-token": ("HF_TOKEN={s}", lambda: "hf_" + pick(UPPER + LOWER, 34)),
    "huggingface-org-token": ("HF_ORG={s}", lambda: "api_org_" + pick(UPPER + LOWER, 34)),
    "groq-api-key": ("GROQ_API_KEY={s}", lambda: "gsk_" + pick(ALNUM, 52)),
    "replicate-api-token": ("REPLICATE_API_TOKEN={s}", lambda: "r8_" + pick(ALNUM, 37)),
    "perplexity-api-key": ("PPLX={s}", lambda: "pplx-" + pick(ALNUM, 48)),
    "xai-api-key": ("XAI_API_KEY={s}", lambda: "xai-" + pick(ALNUM, 80)),
    "langsmith-api-key": ("LANGSMITH_API_KEY={s}", lambda: "lsv2_pt_" + pick(HEX, 32) + "_" + pick(HEX, 10)),
    "cohere-api-key": ("COHERE_API_KEY={s}", lambda: pick(ALNUM, 40)),
    "mistral-api-key": ("MISTRAL_API_KEY={s}", lambda: pick(ALNUM, 32)),
    "deepseek-api-key": ("DEEPSEEK_API_KEY={s}", lambda: "sk-" + pick(HEX, 32)),
    "npm-access-token": ("NPM_TOKEN={s}", lambda: "npm_" + pick(ALNUM, 36)),
    "pypi-upload-token": ("password = {s}", lambda: "pypi-AgEIcHlwaS5vcmc" + pick(URLSAFE, 70)),
    "crates-io-api-token": ('token = "{s}"', lambda: "cio" + pick(ALNUM, 32)),
    "rubygems-api-key": (":rubygems_api_key: {s}", lambda: "rubygems_" + pick(HEX, 48)),
    "nuget-api-key": ("NUGET_KEY={s}", lambda: "oy2" + pick(DIGITS + LOWER, 43)),
    "docker-hub-token": ("DOCKERHUB={s}", lambda: "dckr_pat_" + pick(URLSAFE, 27)),
    "artifactory-api-key": ("ARTIFACTORY={s}", lambda: "AKCp" + pick(ALNUM, 69)),
    "clojars-deploy-token": ("CLOJARS={s}", lambda: "CLOJARS_" + pick(DIGITS + LOWER, 60)),
    "npmrc-auth-token": ("//registry.corpus.test/:_authToken={s}", lambda: pick(ALNUM, 36)),
    "grafana-cloud-token": ("GRAFANA={s}", lambda: "glc_" + pick(ALNUM, 120)),
    "grafana-service-account-token": ("GRAFANA_SA={s}", lambda: "glsa_" + pick(ALNUM, 32) + "_" + pick(HEX, 8)),
    "new-relic-user-key": ("NEW_RELIC={s}", lambda: "NRAK-" + pick(UPPER + DIGITS, 27)),
    "sentry-auth-token": ("SENTRY_AUTH_TOKEN={s}", lambda: "sntryu_" + pick(HEX, 64)),
    "datadog-api-key": ("DD_API_KEY={s}", lambda: pick(HEX, 32)),
    "dynatrace-api-token": ("DT={s}", lambda: "dt0c01." + pick(UPPER + DIGITS, 24) + "." + pick(UPPER + DIGITS, 64)),
    "linkedin-client-secret": ('linkedin_client_secret = "{s}"', lambda: pick(ALNUM, 16)),
    "contentful-pat": ("CONTENTFUL={s}", lambda: "CFPAT-" + pick(URLSAFE, 43)),
    "prefect-api-key": ("PREFECT_API_KEY={s}", lambda: "pnu_" + pick(ALNUM, 36)),
    "readme-api-key": ("README={s}", lambda: "rdme_" + pick(DIGITS + LOWER, 70)),
    "easypost-api-key": ("EASYPOST={s}", lambda: "EZAK" + pick(ALNUM, 54)),
    "onepassword-service-account-token": ("OP_SERVICE_ACCOUNT_TOKEN={s}", lambda: "ops_eyJ" + pick(B64, 300)),
    "mapbox-secret-token": ("MAPBOX={s}", lambda: "sk.eyJ" + pick(URLSAFE, 60) + "." + pick(URLSAFE, 22)),
    "age-secret-key": ("{s}", lambda: "AGE-SECRET-KEY-1" + pick("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
    "castellan-agent-token": ("CASTELLAN_AGENT_TOKEN={s}", castellan_token),
    "jwt": ("Cookie: session={s}", jwt),
    "postgres-uri-password": ("DATABASE_URL=postgres://app:{s}@db.corpus.test:5432/app", lambda: pick(ALNUM, 18)),
    "mysql-uri-password": ("MYSQL_URL=mysql://app:{s}@db.corpus.test/app", lambda: pick(ALNUM, 18)),
    "mongodb-uri-password": ("MONGO=mongodb+srv://app:{s}@cluster0.corpus.test/db", lambda: pick(ALNUM, 18)),
    "redis-uri-password": ("REDIS_URL=redis://:{s}@cache.corpus.test:6379/0", lambda: pick(ALNUM, 18)),
    "amqp-uri-password": ("AMQP_URL=amqps://app:{s}@mq.corpus.test/vhost", lambda: pick(ALNUM, 18)),
    "sqlserver-connection-string-password": ('"Db": "Server=sql.corpus.test;Database=app;User Id=app;Password={s};"', lambda: pick(ALNUM, 18)),
    "url-credentials": ("git clone https://deploy:{s}@git.corpus.test/repo.git", lambda: pick(ALNUM, 18)),
    "generic-secret": ('client_secret = "{s}"', lambda: pick(ALNUM, 28)),
    "authorization-bearer": ('headers = {{"Authorization": "Bearer {s}"}}', lambda: pick(URLSAFE, 40)),
    "authorization-basic": ("Authorization: Basic {s}", lambda: base64.b64encode(("svc:" + pick(ALNUM, 16)).encode()).decode()),
}

PEM_LABELS = {
    "private-key-rsa": "RSA PRIVATE KEY",
    "private-key-dsa": "DSA PRIVATE KEY",
    "private-key-ec": "EC PRIVATE KEY",
    "private-key-pkcs8": "PRIVATE KEY",
    "private-key-pkcs8-encrypted": "ENCRYPTED PRIVATE KEY",
    "private-key-openssh": "OPENSSH PRIVATE KEY",
    "private-key-pgp": "PGP PRIVATE KEY BLOCK",
}


class Corpus:
    def __init__(self):
        self.labels = []

    def write(self, path, lines, newline="\n", labels=(), encoding="utf-8"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            text = newline.join(lines) + newline
            out.write(text.encode(encoding) if isinstance(text, str) else text)
        for line, rule in labels:
            self.labels.append({"file": path, "line": line, "rule": rule})


def positives(corpus):
    lines, labels = [], []
    for rule, (template, factory) in SIMPLE.items():
        lines.append(f"# {rule.replace('-', ' ')}")
        lines.append(template.replace("{s}", factory()).replace("{{", "{").replace("}}", "}"))
        labels.append((len(lines), rule))
    corpus.write("positive/providers.env", lines, labels=labels)

    for rule, label in PEM_LABELS.items():
        body = pem_body()
        block = [f"-----BEGIN {label}-----"] + body + [f"-----END {label}-----"]
        corpus.write(f"positive/{rule}.pem", block, labels=[(1, rule)])

    ssh2 = ["---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", 'Comment: "corpus key"'] + pem_body() + ["---- END SSH2 ENCRYPTED PRIVATE KEY ----"]
    corpus.write("positive/private-key-ssh2.key", ssh2, labels=[(1, "private-key-ssh2")])
    putty = ["PuTTY-User-Key-File-3: ssh-ed25519", "Encryption: none", "Comment: corpus", "Public-Lines: 2"] + pem_body(2)[:2] + ["Private-Lines: 1", pick(B64, 64), "Private-MAC: " + pick(HEX, 64)]
    corpus.write("positive/private-key-putty.ppk", putty, labels=[(1, "private-key-putty")])

    hard_cases(corpus)


def hard_cases(corpus):
    # A service-account JSON file: the PEM sits in one string with \n escapes.
    pem = "-----BEGIN PRIVATE KEY-----\\n" + "\\n".join(pem_body()) + "\\n-----END PRIVATE KEY-----\\n"
    account = ["{", '  "type": "service_account",', '  "project_id": "corpus-project",',
               f'  "private_key_id": "{pick(HEX, 40)}",', f'  "private_key": "{pem}",',
               '  "client_email": "scanner@corpus-project.iam.gserviceaccount.test"', "}"]
    corpus.write("positive/service-account.json", account, labels=[(5, "private-key-pkcs8")])

    # Kubernetes secret: values are base64 of the real keys.
    encode = lambda value: base64.b64encode(value.encode()).decode()
    github = "ghp_" + pick(ALNUM, 36)
    aws = "AKIA" + pick(BASE32, 16)
    k8s = ["apiVersion: v1", "kind: Secret", "metadata:", "  name: corpus", "data:",
           f"  github: {encode(github)}", f"  aws_id: {encode(aws)}"]
    corpus.write("positive/k8s-secret.yaml", k8s, labels=[(6, "github-pat"), (7, "aws-access-key-id")])

    # Several keys in one file and on one line.
    several = [f"A={'ghp_' + pick(ALNUM, 36)} B={'glpat-' + pick(URLSAFE, 20)}",
               f"C={'xoxb-' + pick(DIGITS, 11) + '-' + pick(DIGITS, 12) + '-' + pick(ALNUM, 24)}",
               f"D={'npm_' + pick(ALNUM, 36)}"]
    corpus.write("positive/several.env", several,
                 labels=[(1, "github-pat"), (1, "gitlab-pat"), (2, "slack-bot-token"), (3, "npm-access-token")])

    # A minified bundle: one very long line with two keys far apart.
    filler = ";".join(f"var a{i}=function(b){{return b*{i}}}" for i in range(4000))
    stripe = "sk_live_" + pick(ALNUM, 40)
    openai = "sk-proj-" + pick(URLSAFE, 156)
    corpus.write("positive/bundle.min.js",
                 [f'{filler};var k="{stripe}";{filler};var o="{openai}";{filler}'],
                 labels=[(1, "stripe-secret-key"), (1, "openai-project-key")])

    # CRLF line ends, with a PEM key spanning lines.
    crlf = ["[service]", f"token = {castellan_token()}", "key = <<EOF", "-----BEGIN EC PRIVATE KEY-----"] + pem_body(4) + ["-----END EC PRIVATE KEY-----", "EOF"]
    corpus.write("positive/crlf.ini", crlf, newline="\r\n", labels=[(2, "castellan-agent-token"), (4, "private-key-ec")])

    # Latin-1 comments around a key: not valid UTF-8.
    latin = ["# clé de l'API (ne pas publier)", f"api = '{'ghp_' + pick(ALNUM, 36)}'", "# fin du fichier é"]
    corpus.write("positive/latin1.py", latin, encoding="latin-1", labels=[(2, "github-pat")])


NEGATIVE_LINES = [
    "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "GITHUB_TOKEN=${{ secrets.GITHUB_TOKEN }}",
    "OPENAI_API_KEY=<your-openai-key>",
    "STRIPE_SECRET_KEY=sk_live_your_stripe_key_here",
    "DATABASE_URL=postgres://user:password@localhost:5432/app",
    "DATABASE_URL=postgres://postgres:postgres@localhost/app",
    "REDIS_URL=redis://:${REDIS_PASSWORD}@cache:6379",
    'request_id = "123e4567-e89b-12d3-a456-426614174000"',
    'token_id: "9b2f6d1e-8a43-4c7e-b1d5-3f0a6c9e2b84"',
    "let token = self.next_token_kind();",
    "token = parse_token_v2(input)",
    'public_key = "MCowBQYDK2VwAyEA9f3k2LmQ8rT5vW1xZ7nB4cD6eH0jK2lN5pQ8sU1wY3a"',
    'sort_key: "user#2024-01-01#order"',
    'password = "password"',
    'secret = "changeme"',
    "api_key = os.environ['API_KEY']",
    'api_key = "0123456789abcdefghijklmnopqrstuv"',
    "Copied with a typo, rejected by its checksum: cst_Vq3XbN8rTz1LmK5pWc7YdH2sGf9JhA4uEo6iRnB0aaaaaa",
    "Cookie: session=eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLWJ5dGVz",
    "commit = 8f14e45fceea167a5a36dedd4bea2543c8b7c7b2",
    'checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
    "const KEYWORD_LIST = ['alpha', 'beta', 'gamma'];",
    "# castellan:allow GITHUB_TOKEN=ghp_" + "Rk3LmN8pQ2sT5vW7xZ9aB1cD4eF6gH0jK2lM",
    "GITHUB_TOKEN=ghp_" + "Rk3LmN8pQ2sT5vW7xZ9aB1cD4eF6gH0jK2lM # castellan:allow",
    "secret_key_base = Rails.application.credentials.secret_key_base",
    'image: "registry.corpus.test/app@sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"',
    "-----BEGIN RSA PRIVATE KEY-----",
    "...",
    "-----END RSA PRIVATE KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUtYm9keS1vbmx5LWZvci10ZXN0aW5n",
    "-----END CERTIFICATE-----",
    "https://docs.corpus.test/guide?user=alice&token_type=bearer",
    "git clone https://github.com/castellan/castellan.git",
    "max_token_length = 4096",
    "auth_header_name = X-Api-Key",
    'let url = Url::parse("ftp://rms:secret123@example.com")?;',
    "    dot11KeyDirection: DOT11_KEY_DIRECTION,",
    '    Collation::keybcs2_general_ci => "keybcs2_general_ci",',
]


def negatives(corpus):
    corpus.write("negative/lookalikes.txt", NEGATIVE_LINES)
    code = [
        "fn parse(tokens: &[Token]) -> Result<Ast, Error> {",
        "    let key = tokens.first().map(|t| t.kind);",
        "    let secret_len = secret.len();",
        '    let password_prompt = "Enter password:";',
        "    map.insert(key, value);",
        "}",
    ]
    corpus.write("negative/code.rs", code)
    # A source file with a long base64 image: decoded bytes are binary.
    image = base64.b64encode(bytes(rng.randrange(256) for _ in range(600))).decode()
    corpus.write("negative/image.css", [f'.logo {{ background: url("data:image/png;base64,{image}"); }}'])


def main():
    for directory in ("positive", "negative"):
        shutil.rmtree(directory, ignore_errors=True)
    corpus = Corpus()
    positives(corpus)
    negatives(corpus)
    with open("labels.json", "w") as out:
        json.dump({"seed": SEED, "findings": corpus.labels}, out, indent=1)
        out.write("\n")


if __name__ == "__main__":
    main()
