//! Payment providers and AI model providers.

use super::{assigned, end, rule, Builtin};

pub(super) const RULES: &[Builtin] = &[
    rule(
        "stripe-secret-key",
        "Stripe secret key",
        &["sk_live_", "sk_test_"],
        concat!(r"\b(sk_(?:live|test)_[0-9A-Za-z]{24,247})", end!()),
    )
    .entropy(3.0),
    rule(
        "stripe-restricted-key",
        "Stripe restricted key",
        &["rk_live_", "rk_test_"],
        concat!(r"\b(rk_(?:live|test)_[0-9A-Za-z]{24,247})", end!()),
    )
    .entropy(3.0),
    rule(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        &["whsec_"],
        concat!(r"\b(whsec_[0-9A-Za-z+/=]{32,})", end!()),
    )
    .entropy(3.0),
    rule(
        "square-access-token",
        "Square access token",
        &["sq0atp-", "eaaa"],
        concat!(
            r"\b(sq0atp-[0-9A-Za-z_\-]{22}|EAAA[0-9A-Za-z_\-]{60})",
            end!()
        ),
    )
    .entropy(3.5),
    rule(
        "square-oauth-secret",
        "Square OAuth application secret",
        &["sq0csp-"],
        concat!(r"\b(sq0csp-[0-9A-Za-z_\-]{43})", end!()),
    ),
    rule(
        "paypal-braintree-access-token",
        "PayPal Braintree access token",
        &["access_token$production$", "access_token$sandbox$"],
        concat!(
            r"\b(access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32})",
            end!()
        ),
    ),
    rule(
        "shopify-access-token",
        "Shopify admin, custom app or private app access token",
        &["shpat_", "shpca_", "shppa_"],
        concat!(r"\b(shp(?:at|ca|pa)_[a-fA-F0-9]{32})", end!()),
    ),
    rule(
        "shopify-shared-secret",
        "Shopify app shared secret",
        &["shpss_"],
        concat!(r"\b(shpss_[a-fA-F0-9]{32})", end!()),
    ),
    rule(
        "flutterwave-secret-key",
        "Flutterwave secret key",
        &["flwseck"],
        concat!(r"\b(FLWSECK(?:_TEST)?-[a-h0-9]{32}-X)", end!()),
    ),
    rule(
        "adyen-api-key",
        "Adyen API key",
        &["aqe"],
        concat!(r"\b(AQE[a-z]{2}[A-Za-z0-9+/=_\-]{90,200})", end!()),
    )
    .entropy(4.0),
    rule(
        "razorpay-key-secret",
        "Razorpay key secret assigned to a Razorpay setting",
        &["razorpay"],
        assigned!(r"razorpay[A-Za-z0-9_.\-]{0,12}secret", "[A-Za-z0-9]{24}"),
    )
    .entropy(3.5),
    rule(
        "openai-api-key",
        "OpenAI API key",
        &["t3blbkfj"],
        concat!(
            r"\b(sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_\-]{20,74}T3BlbkFJ[A-Za-z0-9_\-]{20,74})",
            end!()
        ),
    ),
    rule(
        "openai-project-key",
        "OpenAI project or service account key",
        &["sk-proj-", "sk-svcacct-", "sk-admin-"],
        concat!(
            r"\b(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{80,200})",
            end!()
        ),
    )
    .entropy(4.0),
    rule(
        "anthropic-api-key",
        "Anthropic API key",
        &["sk-ant-api"],
        concat!(r"\b(sk-ant-api03-[A-Za-z0-9_\-]{93}AA)", end!()),
    ),
    rule(
        "anthropic-admin-key",
        "Anthropic admin API key",
        &["sk-ant-admin"],
        concat!(r"\b(sk-ant-admin01-[A-Za-z0-9_\-]{93}AA)", end!()),
    ),
    rule(
        "huggingface-token",
        "Hugging Face user access token",
        &["hf_"],
        concat!(r"\b(hf_[A-Za-z]{34})", end!()),
    )
    .entropy(3.5),
    rule(
        "huggingface-org-token",
        "Hugging Face organization API token",
        &["api_org_"],
        concat!(r"\b(api_org_[A-Za-z]{34})", end!()),
    )
    .entropy(3.5),
    rule(
        "groq-api-key",
        "Groq API key",
        &["gsk_"],
        concat!(r"\b(gsk_[A-Za-z0-9]{52})", end!()),
    ),
    rule(
        "replicate-api-token",
        "Replicate API token",
        &["r8_"],
        concat!(r"\b(r8_[A-Za-z0-9]{37})", end!()),
    )
    .entropy(3.5),
    rule(
        "perplexity-api-key",
        "Perplexity API key",
        &["pplx-"],
        concat!(r"\b(pplx-[A-Za-z0-9]{48})", end!()),
    ),
    rule(
        "xai-api-key",
        "xAI API key",
        &["xai-"],
        concat!(r"\b(xai-[A-Za-z0-9]{80})", end!()),
    ),
    rule(
        "langsmith-api-key",
        "LangSmith API key",
        &["lsv2_"],
        concat!(r"\b(lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10})", end!()),
    ),
    rule(
        "cohere-api-key",
        "Cohere API key assigned to a Cohere setting",
        &["cohere", "co_api_key"],
        assigned!("cohere|co_api_key", "[A-Za-z0-9]{40}"),
    )
    .entropy(3.5),
    rule(
        "mistral-api-key",
        "Mistral AI API key assigned to a Mistral setting",
        &["mistral"],
        assigned!("mistral", "[A-Za-z0-9]{32}"),
    )
    .entropy(3.5),
    rule(
        "deepseek-api-key",
        "DeepSeek API key assigned to a DeepSeek setting",
        &["deepseek"],
        assigned!("deepseek", "sk-[a-f0-9]{32}"),
    ),
];
