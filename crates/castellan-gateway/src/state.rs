//! The gateway's view of the world: an immutable snapshot of configuration,
//! policy, tokens, suspensions and credentials, replaced whole on a reload
//! so that each request uses one consistent version from start to end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use castellan_model::{Config, Connection};
use castellan_policy::Policy;
use castellan_store::{Store, StoreError, TokenRecord};
use castellan_vault::{MasterKey, SealedSecret, TokenHash};

use crate::credential::{InjectError, Injector};
use crate::upstream::{build_client, ClientError, HttpClient, TlsConfigs};

/// A validated configuration with its compiled policy and upstream clients.
pub struct ConfigState {
    pub config: Arc<Config>,
    pub policy: Policy,
    clients: HashMap<String, HttpClient>,
}

/// Error activating a new configuration.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("policy compilation failed: {0}")]
    Policy(#[from] castellan_policy::PolicyError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ConfigState {
    /// Compiles `config`, reusing `previous`'s pooled clients for
    /// connections whose upstream settings did not change.
    pub fn activate(config: Config, previous: Option<&ConfigState>) -> Result<Self, ActivateError> {
        let policy = Policy::compile(&config)?;
        let mut clients = HashMap::new();
        let mut tls = TlsConfigs::default();
        for (name, connection) in &config.connections {
            let reused = previous.and_then(|state| {
                let old = state.config.connections.get(name)?;
                same_transport(old, connection).then(|| state.clients.get(name).cloned())?
            });
            let client = match reused {
                Some(client) => client,
                None => build_client(connection, &mut tls)?,
            };
            clients.insert(name.clone(), client);
        }
        Ok(ConfigState {
            config: Arc::new(config),
            policy,
            clients,
        })
    }

    pub fn client(&self, connection: &str) -> Option<&HttpClient> {
        self.clients.get(connection)
    }
}

/// Tells whether the client built for `old` can serve `new`: every setting
/// that [`build_client`] reads is the same. A client built with
/// `allow_private` would otherwise keep dialing internal addresses after a
/// reload turned it off.
fn same_transport(old: &Connection, new: &Connection) -> bool {
    old.upstream == new.upstream
        && old.ca_file == new.ca_file
        && old.timeouts.connect == new.timeouts.connect
        && old.allow_private == new.allow_private
}

/// A live agent token as the gateway keeps it in memory.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    pub id: Box<str>,
    /// The agent's name, shared by all of its tokens.
    pub agent: Arc<str>,
    pub expires_ms: Option<i64>,
    /// A decoy that authenticates nothing: presenting it is rejected like
    /// an unknown token, and the audit record names its agent and id so
    /// the canary detector raises an alert.
    pub canary: bool,
}

/// Whether a connection's credential can be used.
pub enum CredentialState {
    Ready(Arc<Injector>),
    /// The vault has no entry of this name.
    Missing {
        secret: String,
    },
    /// The entry exists but cannot be used; the reason names no value.
    Unusable {
        secret: String,
        reason: String,
    },
}

/// Everything one request needs, swapped atomically on change.
pub struct Snapshot {
    pub config: Arc<ConfigState>,
    /// Live agent tokens by hash. A configuration reload that finds the
    /// store unchanged shares this map with the snapshot it replaces.
    pub tokens: Arc<HashMap<TokenHash, ActiveToken>>,
    /// Suspended agents and the reason given, shared like `tokens`.
    pub suspended: Arc<HashMap<String, Option<String>>>,
    pub credentials: HashMap<String, CredentialState>,
    /// The store's change version this snapshot was built from.
    pub store_version: i64,
}

/// Tokens and suspensions read from the store at `store_version` or later.
pub(crate) struct StorePart {
    tokens: Arc<HashMap<TokenHash, ActiveToken>>,
    suspended: Arc<HashMap<String, Option<String>>>,
    store_version: i64,
}

/// Loads the store-backed part of a snapshot.
pub struct Loader {
    pub store: Store,
    pub master_key: Arc<MasterKey>,
}

/// Error loading the store-backed state.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Loader {
    /// Builds a snapshot for `config` from the store's current contents.
    pub async fn snapshot(&self, config: Arc<ConfigState>) -> Result<Snapshot, LoadError> {
        // Read the version first: a change that lands while we load bumps it
        // again, so the next poll reloads instead of missing it.
        let store_version = self.store.change_version().await?;
        self.load(config, store_version).await
    }

    /// Builds a snapshot for a new `config`, taking the tokens and
    /// suspensions of `previous` if the store has not changed since
    /// `previous` was built.
    ///
    /// Reading every active token is most of the cost of a snapshot (about
    /// 100,000 rows in `bench/scale.sh`), and the configuration file does
    /// not affect them. Credentials are built again, because they depend on
    /// the connections of `config`.
    pub async fn snapshot_for_config(
        &self,
        config: Arc<ConfigState>,
        previous: &Snapshot,
    ) -> Result<Snapshot, LoadError> {
        let store_version = self.store.change_version().await?;
        if store_version != previous.store_version {
            return self.load(config, store_version).await;
        }
        let credentials = self.credentials(&config.config).await?;
        Ok(Snapshot {
            config,
            tokens: Arc::clone(&previous.tokens),
            suspended: Arc::clone(&previous.suspended),
            credentials,
            store_version,
        })
    }

    /// Loads tokens, suspensions and credentials, which the caller read at
    /// `store_version` or later.
    async fn load(
        &self,
        config: Arc<ConfigState>,
        store_version: i64,
    ) -> Result<Snapshot, LoadError> {
        let tokens = self.tokens_and_suspensions(store_version).await?;
        self.assemble(config, tokens).await
    }

    /// Reads the tokens and suspensions, the part of a snapshot that does
    /// not depend on the configuration, so that it can load while the
    /// configuration compiles.
    pub(crate) async fn store_part(&self) -> Result<StorePart, LoadError> {
        let store_version = self.store.change_version().await?;
        self.tokens_and_suspensions(store_version).await
    }

    async fn tokens_and_suspensions(&self, store_version: i64) -> Result<StorePart, LoadError> {
        let mut tokens = HashMap::new();
        let mut agents = AgentNames::default();
        self.store
            .visit_active_tokens(|record| {
                if let Some((hash, token)) = active_token(record, &mut agents) {
                    tokens.insert(hash, token);
                }
            })
            .await?;
        tokens.shrink_to_fit();
        let suspended = self
            .store
            .suspended_agents()
            .await?
            .into_iter()
            .map(|agent| (agent.agent, agent.reason))
            .collect();
        Ok(StorePart {
            tokens: Arc::new(tokens),
            suspended: Arc::new(suspended),
            store_version,
        })
    }

    /// Completes a snapshot from `config` and a [`StorePart`], adding the
    /// credentials of the configured connections.
    pub(crate) async fn assemble(
        &self,
        config: Arc<ConfigState>,
        part: StorePart,
    ) -> Result<Snapshot, LoadError> {
        let credentials = self.credentials(&config.config).await?;
        Ok(Snapshot {
            config,
            tokens: part.tokens,
            suspended: part.suspended,
            credentials,
            store_version: part.store_version,
        })
    }

    async fn credentials(
        &self,
        config: &Config,
    ) -> Result<HashMap<String, CredentialState>, LoadError> {
        let mut sealed = HashMap::new();
        for row in self.store.latest_secrets().await? {
            sealed.insert(row.name.clone(), row);
        }
        let mut credentials = HashMap::new();
        for (name, connection) in &config.connections {
            let secret = connection.secret.clone();
            let state = match sealed.get(&secret) {
                None => CredentialState::Missing { secret },
                Some(row) => {
                    let sealed = SealedSecret {
                        name: row.name.clone(),
                        version: row.version,
                        wrapped_key: row.wrapped_key.clone(),
                        ciphertext: row.ciphertext.clone(),
                    };
                    match castellan_vault::open(&self.master_key, &sealed) {
                        Err(error) => CredentialState::Unusable {
                            secret,
                            reason: error.to_string(),
                        },
                        Ok(value) => match Injector::new(&connection.auth, &secret, value.expose())
                        {
                            Ok(injector) => CredentialState::Ready(Arc::new(injector)),
                            Err(error) => unusable(secret, &error),
                        },
                    }
                }
            };
            credentials.insert(name.clone(), state);
        }
        Ok(credentials)
    }
}

fn unusable(secret: String, error: &InjectError) -> CredentialState {
    CredentialState::Unusable {
        secret,
        reason: error.to_string(),
    }
}

/// Interns agent names while tokens load, so that an agent's tokens share
/// one allocation of its name.
#[derive(Default)]
struct AgentNames(HashSet<Arc<str>>);

impl AgentNames {
    fn intern(&mut self, name: String) -> Arc<str> {
        if let Some(known) = self.0.get(name.as_str()) {
            return Arc::clone(known);
        }
        let name: Arc<str> = name.into();
        self.0.insert(Arc::clone(&name));
        name
    }
}

fn active_token(record: TokenRecord, agents: &mut AgentNames) -> Option<(TokenHash, ActiveToken)> {
    let hash = TokenHash::from_hex(&record.hash).ok()?;
    Some((
        hash,
        ActiveToken {
            id: record.id.into_boxed_str(),
            agent: agents.intern(record.agent),
            expires_ms: record.expires_ms,
            canary: record.canary,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use castellan_store::now_ms;

    use super::*;

    fn token(id: &str, hash_byte: char) -> TokenRecord {
        TokenRecord {
            id: id.to_string(),
            agent: "bot".to_string(),
            hash: hash_byte.to_string().repeat(64),
            created_ms: now_ms(),
            expires_ms: None,
            revoked_ms: None,
            last_used_ms: None,
            canary: false,
        }
    }

    fn config_state() -> Arc<ConfigState> {
        let text = "[agents.bot]\nowner = \"jay@example.com\"\n";
        let config = Config::parse(text, Path::new("castellan.toml")).expect("valid configuration");
        Arc::new(ConfigState::activate(config, None).expect("configuration activates"))
    }

    #[tokio::test]
    async fn config_snapshot_shares_unchanged_tokens() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Store::create(&directory.path().join("castellan.db"))
            .await
            .expect("store opens");
        store
            .insert_token(&token("tok_a", 'a'))
            .await
            .expect("token stored");
        let loader = Loader {
            store: store.clone(),
            master_key: Arc::new(MasterKey::generate()),
        };
        let first = loader
            .snapshot(config_state())
            .await
            .expect("snapshot loads");
        assert_eq!(first.tokens.len(), 1);

        let reloaded = loader
            .snapshot_for_config(config_state(), &first)
            .await
            .expect("snapshot loads");
        assert!(Arc::ptr_eq(&reloaded.tokens, &first.tokens));
        assert!(Arc::ptr_eq(&reloaded.suspended, &first.suspended));
        assert_eq!(reloaded.store_version, first.store_version);

        store
            .insert_token(&token("tok_b", 'b'))
            .await
            .expect("token stored");
        let changed = loader
            .snapshot_for_config(config_state(), &reloaded)
            .await
            .expect("snapshot loads");
        assert_eq!(changed.tokens.len(), 2);
        let mut agents = changed.tokens.values().map(|token| &token.agent);
        let (a, b) = (agents.next().unwrap(), agents.next().unwrap());
        assert_eq!(&**a, "bot");
        assert!(Arc::ptr_eq(a, b), "tokens of one agent share its name");
        assert!(changed.store_version > reloaded.store_version);
    }
}
