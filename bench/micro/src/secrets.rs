//! Sealed upstream credentials, one per connection, and the two ways a
//! request reaches one.
//!
//! castellan-vault keeps no cache of unwrapped data keys. The gateway opens
//! every sealed secret once when it builds a state snapshot and keeps the
//! plaintext until the next reload. So a cold request, the first after a
//! reload, waits for [`castellan_vault::open`]: unwrap the data key under the
//! master key, then decrypt the value under the data key. A warm request
//! only looks the opened value up by connection name.

use std::collections::HashMap;

use castellan_vault::{MasterKey, SealedSecret, SecretValue};

/// Length of each generated credential, about that of a typical API key.
pub const SECRET_LEN: usize = 48;

/// Sealed secrets under one master key, and the same secrets opened.
pub struct Vault {
    pub master: MasterKey,
    /// Sealed secret per connection name, as the store returns them.
    pub sealed: HashMap<String, SealedSecret>,
    /// Opened secret per connection name, as a warm gateway keeps them.
    pub opened: HashMap<String, SecretValue>,
}

impl Vault {
    /// Seals one generated credential for each of `connections` connections
    /// (`conn-00`, `conn-01`, ...) and opens each once.
    ///
    /// # Panics
    ///
    /// Panics if sealing or opening fails, which only a broken vault does.
    pub fn generate(connections: usize) -> Vault {
        let master = MasterKey::generate();
        let mut sealed = HashMap::with_capacity(connections);
        let mut opened = HashMap::with_capacity(connections);
        for i in 0..connections {
            let connection = format!("conn-{i:02}");
            let name = format!("secret-{i:02}");
            let value = credential(i);
            let secret = castellan_vault::seal(&master, &name, 1, &value)
                .unwrap_or_else(|error| panic!("sealing {name} failed: {error}"));
            let value = castellan_vault::open(&master, &secret)
                .unwrap_or_else(|error| panic!("opening {name} failed: {error}"));
            sealed.insert(connection.clone(), secret);
            opened.insert(connection, value);
        }
        Vault {
            master,
            sealed,
            opened,
        }
    }

    /// Opens the sealed secret of `connection`, as a cold request waits for.
    ///
    /// # Panics
    ///
    /// Panics if the connection has no secret or it fails to open.
    pub fn open_cold(&self, connection: &str) -> SecretValue {
        let sealed = self
            .sealed
            .get(connection)
            .unwrap_or_else(|| panic!("no sealed secret for connection {connection:?}"));
        castellan_vault::open(&self.master, sealed)
            .unwrap_or_else(|error| panic!("opening the secret of {connection:?} failed: {error}"))
    }

    /// Returns the opened secret of `connection`, as a warm request reads it.
    pub fn lookup_warm(&self, connection: &str) -> Option<&SecretValue> {
        self.opened.get(connection)
    }
}

/// Generates a credential of [`SECRET_LEN`] printable bytes that differs per
/// connection. It is test data, not a secret.
fn credential(index: usize) -> Vec<u8> {
    (0..SECRET_LEN)
        .map(|position| b'a' + ((index * 31 + position * 7) % 26) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_open_matches_warm_value() {
        let vault = Vault::generate(3);
        for connection in ["conn-00", "conn-01", "conn-02"] {
            let cold = vault.open_cold(connection);
            let warm = vault.lookup_warm(connection).expect("opened at generation");
            assert_eq!(cold.expose(), warm.expose(), "{connection}");
            assert_eq!(cold.expose().len(), SECRET_LEN, "{connection}");
        }
        assert_ne!(
            vault.open_cold("conn-00").expose(),
            vault.open_cold("conn-01").expose()
        );
    }
}
