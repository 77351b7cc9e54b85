//! Accounts, and the server-wide settings kept beside them.

use super::{Conn, Result, Row, Store, now_ms};
use crate::auth::{NewKey, Pepper, generate_key};
use crate::domain::account::Account;
use crate::domain::ids::new_id;

fn account_from(row: &Row) -> Result<Account> {
    Ok(Account {
        id: row.text(0)?,
        name: row.text(1)?,
        created_at: row.int(2)?,
    })
}

/// Inserts an account and its first (admin, account-wide) key.
fn insert_account(c: &mut dyn Conn, name: &str, pepper: &Pepper, key: &NewKey) -> Result<Account> {
    let account = Account {
        id: new_id("acc"),
        name: name.to_owned(),
        created_at: now_ms(),
    };
    c.execute(
        "INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)",
        &[(&account.id).into(), name.into(), account.created_at.into()],
    )?;
    super::keys::insert_key(c, &account.id, None, "admin", pepper, key, None)?;
    Ok(account)
}

impl Store {
    /// Creates an account with an admin key; returns the key's plaintext.
    pub async fn create_account(&self, name: &str, pepper: &Pepper) -> Result<(Account, String)> {
        let key = generate_key();
        let name = name.to_owned();
        let pepper = pepper.clone();
        let plaintext = key.plaintext.clone();
        let account = self
            .write(move |c| insert_account(c, &name, &pepper, &key))
            .await?;
        Ok((account, plaintext))
    }

    /// Creates the first account unless one exists. Returns its admin key
    /// when it was created now, `None` when accounts already existed.
    pub async fn bootstrap(&self, pepper: &Pepper) -> Result<Option<(Account, String)>> {
        let key = generate_key();
        let plaintext = key.plaintext.clone();
        let pepper = pepper.clone();
        let created = self
            .write(move |c| {
                if c.query_opt("SELECT id FROM accounts LIMIT 1", &[])?
                    .is_some()
                {
                    return Ok(None);
                }
                insert_account(c, "default", &pepper, &key).map(Some)
            })
            .await?;
        Ok(created.map(|a| (a, plaintext)))
    }

    /// The oldest account, if any.
    pub async fn first_account(&self) -> Result<Option<Account>> {
        self.read(|c| {
            c.query_opt(
                "SELECT id, name, created_at FROM accounts ORDER BY id LIMIT 1",
                &[],
            )?
            .as_ref()
            .map(account_from)
            .transpose()
        })
        .await
    }

    /// One account by id.
    pub async fn get_account(&self, id: &str) -> Result<Account> {
        let id = id.to_owned();
        self.read(move |c| {
            account_from(&c.query_one(
                "SELECT id, name, created_at FROM accounts WHERE id = $1",
                &[id.into()],
            )?)
        })
        .await
    }

    /// The key-hash pepper kept in the database, created on first call.
    pub async fn stored_pepper(&self) -> Result<String> {
        let fresh = Pepper::generate_hex();
        self.write(move |c| {
            c.execute(
                "INSERT INTO server_settings (key, value) VALUES ('key_pepper', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[fresh.into()],
            )?;
            c.query_one(
                "SELECT value FROM server_settings WHERE key = 'key_pepper'",
                &[],
            )?
            .text(0)
        })
        .await
    }
}
