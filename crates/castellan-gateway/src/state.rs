//! The gateway's view of the world: an immutable snapshot of configuration,
//! policy, tokens, suspensions and credentials, replaced whole on a reload
//! so that each request uses one consistent version from start to end.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use castellan_model::{Config, Connection};
use castellan_policy::Policy;
use castellan_store::{SealedRow, Store, StoreError, TokenRecord};
use castellan_vault::{MasterKey, PackedTokenId, SealedSecret, TokenHash, GENERATED_ID_LEN};
use hashbrown::HashTable;

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

/// A live agent token, as [`ActiveTokens::get`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveToken<'a> {
    pub id: TokenId<'a>,
    /// The agent's name, shared by all of its tokens.
    pub agent: &'a str,
    pub expires_ms: Option<i64>,
    /// A decoy that authenticates nothing: presenting it is rejected like
    /// an unknown token, and the audit record names its agent and id so
    /// the canary detector raises an alert.
    pub canary: bool,
}

/// A token id as [`ActiveTokens::get`] returns it: written back from its
/// packed form, or borrowed from the table. It compares, displays and
/// formats as its text.
#[derive(Clone, Copy)]
pub struct TokenId<'a>(IdText<'a>);

#[derive(Clone, Copy)]
enum IdText<'a> {
    /// A generated id, `tok_` and 12 base62 characters, which are ASCII.
    Generated([u8; GENERATED_ID_LEN]),
    /// Any other id.
    Other(&'a str),
}

impl TokenId<'_> {
    /// Returns the id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdText::Generated(bytes) => {
                std::str::from_utf8(bytes).expect("a packed token id unpacks to ASCII")
            }
            IdText::Other(id) => id,
        }
    }
}

impl PartialEq for TokenId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TokenId<'_> {}

impl fmt::Display for TokenId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for TokenId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Live agent tokens by hash, stored compactly because a gateway may keep
/// hundreds of thousands of them.
///
/// The tokens sit in one array without gaps, and a hash table of their
/// positions finds them. A hash table sized to a power of two leaves an
/// eighth or more of its slots empty (about a quarter with 100,000 tokens).
/// An empty slot takes 5 bytes with a 4-byte position and 65 with a whole
/// entry, counting the control byte of each slot. As in a `HashMap`, the table
/// hashes with a randomly keyed SipHash and `TokenHash` compares in constant
/// time, so a lookup's timing does not depend on how a presented hash
/// orders against the stored ones.
///
/// An entry refers to its agent's name by index, so an agent's tokens share
/// one copy of the name. It keeps a generated id packed in place, so such a
/// token needs no allocation of its own.
pub struct ActiveTokens {
    entries: Box<[(TokenHash, PackedToken)]>,
    /// Positions in `entries`, found by the keyed hash of a token hash.
    positions: HashTable<u32>,
    hasher: RandomState,
    /// Agent names, indexed by [`PackedToken::agent`].
    agents: Box<[Arc<str>]>,
    /// Token ids that are not in the generated form, indexed by
    /// [`PackedId::Other`].
    other_ids: Box<[Box<str>]>,
}

impl ActiveTokens {
    /// Builds the table from token rows as a snapshot does from the store:
    /// a later row with the same hash replaces an earlier one, and a row
    /// whose hash is not valid hex is skipped. Benchmarks use this to time
    /// the gateway's own lookups.
    pub fn from_records(records: impl IntoIterator<Item = TokenRecord>) -> Self {
        let mut builder = ActiveTokensBuilder::default();
        for record in records {
            builder.insert(record);
        }
        builder.finish()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks up the live token whose hash is `hash`.
    pub fn get(&self, hash: &TokenHash) -> Option<ActiveToken<'_>> {
        let key = self.hasher.hash_one(hash);
        let position = self
            .positions
            .find(key, |&position| self.entries[position as usize].0 == *hash)?;
        let packed = &self.entries[*position as usize].1;
        Some(ActiveToken {
            id: packed.id.resolve(&self.other_ids),
            agent: &self.agents[packed.agent as usize],
            expires_ms: packed.expires_ms.map(i64::from_le_bytes),
            canary: packed.canary,
        })
    }
}

/// A token id, packed in place when it has the generated form and
/// otherwise the index of the id in [`ActiveTokens::other_ids`].
///
/// The index is stored as little-endian bytes instead of a `u32` so that
/// the type has alignment 1 and takes 10 bytes.
enum PackedId {
    Generated(PackedTokenId),
    Other { index: [u8; 4] },
}

impl PackedId {
    /// Packs `id` if it has the generated form, otherwise appends it to
    /// `other_ids`. Returns `None` if `other_ids` has no index left.
    fn new(id: &str, other_ids: &mut Vec<Box<str>>) -> Option<Self> {
        if let Some(packed) = PackedTokenId::pack(id) {
            return Some(PackedId::Generated(packed));
        }
        let index = u32::try_from(other_ids.len()).ok()?;
        other_ids.push(id.into());
        Some(PackedId::Other {
            index: index.to_le_bytes(),
        })
    }

    fn resolve<'a>(&self, other_ids: &'a [Box<str>]) -> TokenId<'a> {
        match self {
            PackedId::Generated(packed) => TokenId(IdText::Generated(packed.unpack())),
            PackedId::Other { index } => TokenId(IdText::Other(
                &other_ids[u32::from_le_bytes(*index) as usize],
            )),
        }
    }
}

/// A live token as [`ActiveTokens`] stores it. It takes 24 bytes, so an
/// entry with its 32-byte hash takes 56.
struct PackedToken {
    id: PackedId,
    /// Index of the agent's name in [`ActiveTokens::agents`].
    agent: u32,
    /// The expiry time in milliseconds as little-endian bytes, because an
    /// `Option<i64>` takes 16 bytes with its padding and this takes 9.
    /// Every `i64` keeps its meaning, so no value is reserved for "never".
    expires_ms: Option<[u8; 8]>,
    canary: bool,
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
    /// store unchanged shares this table with the snapshot it replaces.
    pub tokens: Arc<ActiveTokens>,
    /// Suspended agents and the reason given, shared like `tokens`.
    pub suspended: Arc<HashMap<String, Option<String>>>,
    pub credentials: HashMap<String, CredentialState>,
    /// The store's change version this snapshot was built from.
    pub store_version: i64,
}

/// Tokens and suspensions read from the store at `store_version` or later.
pub(crate) struct StorePart {
    tokens: Arc<ActiveTokens>,
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
        let credentials = self.credentials(&config).await?;
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
        let mut tokens = ActiveTokensBuilder::default();
        self.store
            .visit_active_tokens(|record| tokens.insert(record))
            .await?;
        let suspended = self
            .store
            .suspended_agents()
            .await?
            .into_iter()
            .map(|agent| (agent.agent, agent.reason))
            .collect();
        Ok(StorePart {
            tokens: Arc::new(tokens.finish()),
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
        let credentials = self.credentials(&config).await?;
        Ok(Snapshot {
            config,
            tokens: part.tokens,
            suspended: part.suspended,
            credentials,
            store_version: part.store_version,
        })
    }

    /// Opens the secret of every configured connection. Each one costs a
    /// decryption and an injector with its redactor, which add up with a
    /// thousand connections, so the work runs on a blocking thread rather
    /// than the caller's, which the audit writer shares.
    async fn credentials(
        &self,
        config: &Arc<ConfigState>,
    ) -> Result<HashMap<String, CredentialState>, LoadError> {
        let rows = self.store.latest_secrets().await?;
        let master_key = Arc::clone(&self.master_key);
        let config = Arc::clone(config);
        let opened = tokio::task::spawn_blocking(move || {
            open_credentials(&master_key, &config.config, rows)
        })
        .await;
        match opened {
            Ok(credentials) => Ok(credentials),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// Builds the credential state of each connection of `config` from the
/// latest version of each secret.
fn open_credentials(
    master_key: &MasterKey,
    config: &Config,
    rows: Vec<SealedRow>,
) -> HashMap<String, CredentialState> {
    let mut sealed = HashMap::new();
    for row in rows {
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
                match castellan_vault::open(master_key, &sealed) {
                    Err(error) => CredentialState::Unusable {
                        secret,
                        reason: error.to_string(),
                    },
                    Ok(value) => match Injector::new(&connection.auth, &secret, value.expose()) {
                        Ok(injector) => CredentialState::Ready(Arc::new(injector)),
                        Err(error) => unusable(secret, &error),
                    },
                }
            }
        };
        credentials.insert(name.clone(), state);
    }
    credentials
}

fn unusable(secret: String, error: &InjectError) -> CredentialState {
    CredentialState::Unusable {
        secret,
        reason: error.to_string(),
    }
}

/// Collects tokens as they load from the store.
#[derive(Default)]
struct ActiveTokensBuilder {
    entries: Vec<(TokenHash, PackedToken)>,
    positions: HashTable<u32>,
    hasher: RandomState,
    agents: AgentNames,
    other_ids: Vec<Box<str>>,
}

impl ActiveTokensBuilder {
    /// Adds the token of `record`, replacing any token with the same hash.
    /// A row whose hash is not valid hex is skipped.
    fn insert(&mut self, record: TokenRecord) {
        let Some((hash, token)) = self.pack(record) else {
            return;
        };
        let key = self.hasher.hash_one(hash);
        let entries = &mut self.entries;
        if let Some(&position) = self
            .positions
            .find(key, |&position| entries[position as usize].0 == hash)
        {
            entries[position as usize].1 = token;
            return;
        }
        let Ok(position) = u32::try_from(entries.len()) else {
            tracing::warn!(
                "failed to load agent token: more than u32::MAX active tokens, revoke unused tokens"
            );
            return;
        };
        entries.push((hash, token));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.positions.insert_unique(key, position, |&position| {
            hasher.hash_one(entries[position as usize].0)
        });
    }

    fn pack(&mut self, record: TokenRecord) -> Option<(TokenHash, PackedToken)> {
        let hash = TokenHash::from_hex(&record.hash).ok()?;
        // More than 4,294,967,295 agents or other ids would not fit in memory
        // anyway, but a row past that limit is skipped rather than misfiled.
        let Some(agent) = self.agents.intern(record.agent) else {
            tracing::warn!(
                token_id = %record.id,
                "failed to load agent token: more than u32::MAX agents, remove unused agents"
            );
            return None;
        };
        let Some(id) = PackedId::new(&record.id, &mut self.other_ids) else {
            tracing::warn!(
                token_id = %record.id,
                "failed to load agent token: more than u32::MAX token ids not generated by castellan, reissue the tokens"
            );
            return None;
        };
        let token = PackedToken {
            id,
            agent,
            expires_ms: record.expires_ms.map(i64::to_le_bytes),
            canary: record.canary,
        };
        Some((hash, token))
    }

    fn finish(mut self) -> ActiveTokens {
        let entries = self.entries.into_boxed_slice();
        let hasher = self.hasher;
        self.positions
            .shrink_to_fit(|&position| hasher.hash_one(entries[position as usize].0));
        ActiveTokens {
            entries,
            positions: self.positions,
            hasher,
            agents: self.agents.names.into_boxed_slice(),
            other_ids: self.other_ids.into_boxed_slice(),
        }
    }
}

/// Interns agent names while tokens load, so that an agent's tokens share
/// one copy of its name.
#[derive(Default)]
struct AgentNames {
    indexes: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl AgentNames {
    /// Returns the index of `name` in `names`, adding it if it is new, or
    /// `None` if no `u32` index is left.
    fn intern(&mut self, name: String) -> Option<u32> {
        if let Some(&index) = self.indexes.get(name.as_str()) {
            return Some(index);
        }
        let index = u32::try_from(self.names.len()).ok()?;
        let name: Arc<str> = name.into();
        self.indexes.insert(Arc::clone(&name), index);
        self.names.push(name);
        Some(index)
    }
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
        let first = changed
            .tokens
            .get(&hash_of(&token("tok_a", 'a')))
            .expect("token loaded");
        let second = changed
            .tokens
            .get(&hash_of(&token("tok_b", 'b')))
            .expect("token loaded");
        assert_eq!(second.id.as_str(), "tok_b");
        assert_eq!(second.agent, "bot");
        assert!(
            std::ptr::eq(first.agent, second.agent),
            "tokens of one agent share its name"
        );
        assert!(changed.store_version > reloaded.store_version);
    }

    /// Returns a record for `id` whose hash is `number` in hex.
    fn numbered(id: &str, number: usize) -> TokenRecord {
        TokenRecord {
            hash: format!("{number:064x}"),
            ..token(id, 'a')
        }
    }

    fn hash_of(record: &TokenRecord) -> TokenHash {
        TokenHash::from_hex(&record.hash).expect("valid hash hex")
    }

    /// Loads `records` into a table the way a snapshot does.
    fn table(records: &[TokenRecord]) -> ActiveTokens {
        ActiveTokens::from_records(records.iter().cloned())
    }

    #[test]
    fn table_entry_fits_56_bytes() {
        assert!(std::mem::size_of::<PackedId>() <= 10);
        assert!(std::mem::size_of::<PackedToken>() <= 24);
        assert!(std::mem::size_of::<(TokenHash, PackedToken)>() <= 56);
    }

    #[test]
    fn generated_id_stored_in_place() {
        let id = castellan_vault::new_token_id();
        let records = [token(&id, 'a')];
        let loaded = table(&records);
        let entry = loaded.get(&hash_of(&records[0])).expect("token loaded");
        assert_eq!(entry.id.as_str(), id);
        assert!(loaded.other_ids.is_empty());
    }

    #[test]
    fn ids_round_trip() {
        let cases = [
            ("empty", ""),
            ("generated form", "tok_0123456789ab"),
            ("one character too long", "tok_0123456789abc"),
            ("multibyte, generated length", "tok_0123456789é"),
            ("multibyte, one byte longer", "tok_0123456789aé"),
            ("free text", "imported from the previous gateway, row 12"),
        ];
        let records: Vec<TokenRecord> = cases
            .iter()
            .enumerate()
            .map(|(n, (_, id))| numbered(id, n))
            .collect();
        let loaded = table(&records);
        for ((case, id), record) in cases.iter().zip(&records) {
            let entry = loaded.get(&hash_of(record)).expect("token loaded");
            assert_eq!(entry.id.as_str(), *id, "{case}");
        }
        assert_eq!(loaded.other_ids.len(), 5);
    }

    /// `TokenId` replaced a `&str`, so `{:>N}` and `{:.N}` must format it
    /// the way they format the id's text.
    #[test]
    fn token_id_display_honors_width_and_precision() {
        let ids = ["tok_0123456789ab", "imported id"];
        let records: Vec<TokenRecord> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| numbered(id, n))
            .collect();
        let loaded = table(&records);
        for (id, record) in ids.iter().zip(&records) {
            let entry = loaded.get(&hash_of(record)).expect("token loaded");
            assert_eq!(format!("{:>20}", entry.id), format!("{id:>20}"), "width");
            assert_eq!(format!("{:.4}", entry.id), format!("{id:.4}"), "precision");
        }
    }

    #[test]
    fn agent_tokens_share_name() {
        let mut ops = token("tok_c", 'c');
        ops.agent = "ops".to_string();
        let records = [token("tok_a", 'a'), token("tok_b", 'b'), ops.clone()];
        let loaded = table(&records);
        let first = loaded.get(&hash_of(&records[0])).expect("token loaded");
        let second = loaded.get(&hash_of(&records[1])).expect("token loaded");
        let other = loaded.get(&hash_of(&ops)).expect("token loaded");
        assert_eq!(first.agent, "bot");
        assert_eq!(other.agent, "ops");
        assert!(std::ptr::eq(first.agent, second.agent));
        assert_eq!(loaded.agents.len(), 2);
    }

    #[test]
    fn expiry_round_trips() {
        let cases = [
            None,
            Some(0),
            Some(-1),
            Some(1_700_000_000_000),
            Some(i64::MIN),
            Some(i64::MAX),
        ];
        let records: Vec<TokenRecord> = cases
            .iter()
            .enumerate()
            .map(|(n, expires_ms)| TokenRecord {
                expires_ms: *expires_ms,
                ..numbered("tok_a", n)
            })
            .collect();
        let loaded = table(&records);
        for (expires_ms, record) in cases.iter().zip(&records) {
            let entry = loaded.get(&hash_of(record)).expect("token loaded");
            assert_eq!(entry.expires_ms, *expires_ms);
        }
    }

    #[test]
    fn canary_flag_round_trips() {
        let records = [
            TokenRecord {
                canary: true,
                ..token("tok_a", 'a')
            },
            token("tok_b", 'b'),
        ];
        let loaded = table(&records);
        let decoy = loaded.get(&hash_of(&records[0])).expect("token loaded");
        let normal = loaded.get(&hash_of(&records[1])).expect("token loaded");
        assert!(decoy.canary);
        assert!(!normal.canary);
    }

    #[test]
    fn invalid_hash_row_skipped() {
        let records = [
            TokenRecord {
                hash: "not hex".to_string(),
                ..token("tok_a", 'a')
            },
            token("tok_b", 'b'),
        ];
        let loaded = table(&records);
        assert_eq!(loaded.len(), 1);
    }

    #[test]
    fn duplicate_hash_keeps_last_row() {
        let records = [token("tok_a", 'a'), token("tok_b", 'a')];
        let loaded = table(&records);
        let entry = loaded.get(&hash_of(&records[1])).expect("token loaded");
        assert_eq!(loaded.len(), 1);
        assert_eq!(entry.id.as_str(), "tok_b");
    }

    /// Asserts that `loaded` finds each of `records` with its own id and
    /// does not find a hash that none of them has.
    fn assert_finds_exactly(loaded: &ActiveTokens, records: &[TokenRecord]) {
        for record in records {
            let entry = loaded.get(&hash_of(record));
            assert_eq!(
                entry.map(|entry| entry.id.to_string()),
                Some(record.id.clone())
            );
        }
        let unknown = numbered("tok_unknown", records.len());
        assert!(loaded.get(&hash_of(&unknown)).is_none());
    }

    /// Loads enough tokens that the table of positions grows several times
    /// and rehashes what it holds, then finds every token and no other.
    #[test]
    fn every_token_found_after_growth() {
        let records: Vec<TokenRecord> = (0..5_000)
            .map(|number| numbered(&format!("tok_{number}"), number))
            .collect();
        let loaded = table(&records);
        assert_eq!(loaded.len(), records.len());
        assert_finds_exactly(&loaded, &records);
    }

    /// Reserves room before loading so that `finish` shrinks the table of
    /// positions and moves each one, then finds every token and no other.
    /// Growth by insertion alone leaves nothing to shrink in hashbrown 0.16.
    #[test]
    fn every_token_found_after_shrink() {
        let records: Vec<TokenRecord> = (0..100)
            .map(|number| numbered(&format!("tok_{number}"), number))
            .collect();
        let mut builder = ActiveTokensBuilder::default();
        builder.positions.reserve(10_000, |&position| {
            builder
                .hasher
                .hash_one(builder.entries[position as usize].0)
        });
        let reserved = builder.positions.capacity();
        for record in &records {
            builder.insert(record.clone());
        }
        let loaded = builder.finish();
        assert!(
            loaded.positions.capacity() < reserved,
            "the table shrank, so finish moved its positions"
        );
        assert_finds_exactly(&loaded, &records);
    }

    /// Checks that a configuration reload after a revocation reads the store
    /// again, dropping the revoked token and keeping the agent's other one.
    #[tokio::test]
    async fn revoked_token_gone_after_config_reload() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Store::create(&directory.path().join("castellan.db"))
            .await
            .expect("store opens");
        let (revoked, kept) = (token("tok_a", 'a'), token("tok_b", 'b'));
        for record in [&revoked, &kept] {
            store.insert_token(record).await.expect("token stored");
        }
        let loader = Loader {
            store: store.clone(),
            master_key: Arc::new(MasterKey::generate()),
        };
        let first = loader
            .snapshot(config_state())
            .await
            .expect("snapshot loads");
        assert!(first.tokens.get(&hash_of(&revoked)).is_some());

        assert!(store.revoke_token("tok_a").await.expect("token revoked"));
        let reloaded = loader
            .snapshot_for_config(config_state(), &first)
            .await
            .expect("snapshot loads");
        assert!(!Arc::ptr_eq(&reloaded.tokens, &first.tokens));
        assert!(reloaded.tokens.get(&hash_of(&revoked)).is_none());
        let entry = reloaded.tokens.get(&hash_of(&kept)).expect("token loaded");
        assert_eq!(entry.id.as_str(), "tok_b");
        assert_eq!(entry.agent, "bot");
        assert_eq!(reloaded.tokens.len(), 1);
    }
}
