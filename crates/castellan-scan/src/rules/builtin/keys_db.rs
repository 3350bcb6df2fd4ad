//! Private keys, Castellan agent tokens, JWTs and database connection strings.

use super::{end, rule, Builtin};
use crate::validate::Validator;

/// Pattern for a PEM block with the given label. The body may use real
/// newlines or the `\n` escapes of a JSON string.
macro_rules! pem {
    ($label:literal) => {
        concat!(
            "(-----BEGIN ",
            $label,
            r"-----(?:[A-Za-z0-9+/=:,.\- \t\r\n]|\\[rn/])*?-----END ",
            $label,
            "-----)"
        )
    };
}

/// Pattern for a URL with a password in its user information part.
macro_rules! uri {
    ($schemes:literal) => {
        concat!(
            r"\b(?:",
            $schemes,
            r")(?:\+[a-z0-9]+)?://(?P<user>[^:@/\s\x22'`]{0,64}):(?P<secret>[^@/\s\x22'`]{3,128})@(?P<host>[A-Za-z0-9.\-_\[\]]+)"
        )
    };
}

/// Minimum entropy of a whole PEM block: a base64 body scores above 5, a
/// documentation stub such as `...` far below.
const PEM_ENTROPY: f64 = 4.5;

pub(super) const RULES: &[Builtin] = &[
    rule(
        "private-key-rsa",
        "RSA private key (PEM)",
        &["begin rsa private key"],
        pem!("RSA PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-dsa",
        "DSA private key (PEM)",
        &["begin dsa private key"],
        pem!("DSA PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-ec",
        "EC private key (PEM)",
        &["begin ec private key"],
        pem!("EC PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-pkcs8",
        "PKCS #8 private key (PEM)",
        &["begin private key"],
        pem!("PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-pkcs8-encrypted",
        "Encrypted PKCS #8 private key (PEM)",
        &["begin encrypted private key"],
        pem!("ENCRYPTED PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-openssh",
        "OpenSSH private key (RSA, Ed25519, ECDSA or DSA)",
        &["begin openssh private key"],
        pem!("OPENSSH PRIVATE KEY"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-ssh2",
        "SSH2 (RFC 4716 style) encrypted private key",
        &["begin ssh2 encrypted private key"],
        r"(---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----(?:[A-Za-z0-9+/=:,.\x22\- \t\r\n]|\\[rn/])*?---- END SSH2 ENCRYPTED PRIVATE KEY ----)",
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-pgp",
        "PGP private key block",
        &["begin pgp private key block"],
        pem!("PGP PRIVATE KEY BLOCK"),
    )
    .entropy(PEM_ENTROPY),
    rule(
        "private-key-putty",
        "PuTTY private key file",
        &["putty-user-key-file-"],
        r"(PuTTY-User-Key-File-[23]: [^\r\n]+(?:\r?\n[^\r\n]*){2,40}?\r?\nPrivate-Lines: [0-9]+\r?\n[A-Za-z0-9+/=\r\n]{40,})",
    )
    .entropy(PEM_ENTROPY),
    rule(
        "castellan-agent-token",
        "Castellan agent token (checksum verified)",
        &["cst_"],
        concat!(r"\b(cst_[0-9A-Za-z]{46})", end!()),
    )
    .validator(Validator::CastellanToken),
    rule(
        "jwt",
        "JSON Web Token",
        &["eyj"],
        concat!(
            r"\b(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,})",
            end!()
        ),
    )
    .validator(Validator::Jwt),
    rule(
        "postgres-uri-password",
        "PostgreSQL connection URI with a password",
        &["postgres"],
        uri!("postgres|postgresql"),
    )
    .line_local(),
    rule(
        "mysql-uri-password",
        "MySQL or MariaDB connection URI with a password",
        &["mysql", "mariadb"],
        uri!("mysql|mariadb"),
    )
    .line_local(),
    rule(
        "mongodb-uri-password",
        "MongoDB connection URI with a password",
        &["mongodb"],
        uri!(r"mongodb|mongodb\+srv"),
    )
    .line_local(),
    rule(
        "redis-uri-password",
        "Redis connection URI with a password",
        &["redis"],
        uri!("redis|rediss"),
    )
    .line_local(),
    rule(
        "amqp-uri-password",
        "AMQP (RabbitMQ) connection URI with a password",
        &["amqp"],
        uri!("amqp|amqps"),
    )
    .line_local(),
    rule(
        "sqlserver-connection-string-password",
        "SQL Server / ADO.NET connection string with a password",
        &["password=", "pwd="],
        r"(?i:(?:server|data source|host)=[^;\r\n]{1,200};[^\r\n]{0,300}?(?:password|pwd)=)(?P<secret>[^;\x22'\s]{3,128})",
    ),
    rule(
        "url-credentials",
        "Password in the user information part of an HTTP, FTP, SMTP or LDAP URL",
        &["://"],
        uri!("https?|ftps?|smtps?|ldaps?|sftp|ssh"),
    )
    .line_local(),
];
