//! Contacts as a resource: listing them through a filter, reading and
//! changing one, importing many, and the attribute index that keeps filters
//! fast.
//!
//! # The attribute index
//!
//! `contact_attributes` holds one row per indexable attribute of a contact
//! (texts up to
//! [`MAX_INDEXED_TEXT`](crate::domain::people::MAX_INDEXED_TEXT) bytes, numbers). It is rewritten by
//! [`sync_attributes`] in every transaction that writes `contacts.attributes`
//! (chat turns, the API, imports), so it never disagrees with the contact.
//!
//! # Filtering
//!
//! A [`ContactFilter`]'s pushdown conjuncts become SQL: an attribute
//! equality drives the query from the index (newest contact first), the
//! others are `EXISTS` probes on the index's primary key or conditions on
//! `contacts` columns. The compiled CEL is then evaluated on every candidate,
//! so what comes back is exactly what the filter says; the SQL only narrows.
//! A page scans at most [`SCAN_BUDGET`] candidates; a page cut short by it
//! still carries a cursor, so a client simply asks for the next one.

use super::{Conn, Result, Row, Store, StoreError, Value, now_ms};
use crate::domain::people::{ContactFacts, ContactFilter, Pushdown, channel_of, indexed_value};
use serde_json::{Map, Value as Json};

/// Most candidates one page of a filtered list evaluates.
pub const SCAN_BUDGET: usize = 20_000;

/// Candidates fetched per round trip.
const BATCH: usize = 500;

/// A contact as stored, every column.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRecord {
    /// `ct_…`
    pub id: String,
    /// The bot it talks to.
    pub bot_id: String,
    /// E.164, when known by one.
    pub phone: Option<String>,
    /// An id in the caller's system (or a channel's `kind:user`).
    pub external_id: Option<String>,
    /// `user` attributes, a JSON object.
    pub attributes: Map<String, Json>,
    /// `api`, `web`, `whatsapp`, …
    pub channel: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of its last turn.
    pub last_seen: Option<i64>,
    /// Whether it asked not to be messaged.
    pub opted_out: bool,
    /// Unix ms.
    pub updated_at: i64,
}

impl ContactRecord {
    /// What a filter sees of it.
    pub fn facts(&self) -> ContactFacts {
        ContactFacts {
            id: self.id.clone(),
            phone: self.phone.clone(),
            external_id: self.external_id.clone(),
            channel: self.channel.clone(),
            first_seen: self.created_at,
            last_seen: self.last_seen,
            opted_out: self.opted_out,
            attributes: self.attributes.clone(),
        }
    }
}

/// `SELECT` list matching [`record_from`].
pub const COLUMNS: &str = "c.id, c.bot_id, c.phone, c.external_id, c.attributes, c.channel, c.created_at, c.last_seen, c.opted_out, c.updated_at";

/// Reads a row of [`COLUMNS`].
pub fn record_from(r: &Row) -> Result<ContactRecord> {
    let attributes = match serde_json::from_str::<Json>(&r.text(4)?) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    };
    Ok(ContactRecord {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        phone: r.opt_text(2)?,
        external_id: r.opt_text(3)?,
        attributes,
        channel: r.text(5)?,
        created_at: r.int(6)?,
        last_seen: r.opt_int(7)?,
        opted_out: r.bool(8)?,
        updated_at: r.int(9)?,
    })
}

/// Rewrites a contact's rows of the attribute index from its attributes.
pub fn sync_attributes(
    c: &mut dyn Conn,
    account_id: &str,
    bot_id: &str,
    contact_id: &str,
    attributes: &str,
) -> Result<()> {
    c.execute(
        "DELETE FROM contact_attributes WHERE contact_id = $1",
        &[contact_id.into()],
    )?;
    let Ok(Json::Object(attrs)) = serde_json::from_str::<Json>(attributes) else {
        return Ok(());
    };
    for (k, v) in &attrs {
        let Some((text, number)) = indexed_value(v) else {
            continue;
        };
        c.execute(
            "INSERT INTO contact_attributes (contact_id, account_id, bot_id, key, text_value, num_value)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                contact_id.into(),
                account_id.into(),
                bot_id.into(),
                k.into(),
                text.into(),
                number.map_or(Value::Null, Value::Float),
            ],
        )?;
    }
    Ok(())
}

/// Moves the contact's active conversations to a new revision, so a chat
/// turn that started from attributes cached before this change (in any
/// process) is retried from the stored contact instead of writing the old
/// attributes back.
fn outdate_sessions(c: &mut dyn Conn, contact_id: &str) -> Result<()> {
    c.execute(
        "UPDATE conversations SET revision = revision + 1 WHERE contact_id = $1 AND status = 'active'",
        &[contact_id.into()],
    )
    .map(|_| ())
}

/// The SQL and parameters of one batch of candidates.
fn candidates_sql(
    account_id: &str,
    bot_id: &str,
    pushdown: &[Pushdown],
    q: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> (String, Vec<Value>) {
    let mut params: Vec<Value> = vec![account_id.into(), bot_id.into()];
    let p = |v: Value, params: &mut Vec<Value>| {
        params.push(v);
        format!("${}", params.len())
    };
    let driver = pushdown
        .iter()
        .position(|d| matches!(d, Pushdown::AttrText { .. }));
    let (mut sql, id_col) = match driver.map(|i| &pushdown[i]) {
        Some(Pushdown::AttrText { key, value }) => {
            let (k, v) = (p(key.into(), &mut params), p(value.into(), &mut params));
            (
                format!(
                    "SELECT {COLUMNS} FROM contact_attributes d JOIN contacts c ON c.id = d.contact_id
                     WHERE d.account_id = $1 AND d.bot_id = $2 AND d.key = {k} AND d.text_value = {v}"
                ),
                "d.contact_id",
            )
        }
        _ => (
            format!("SELECT {COLUMNS} FROM contacts c WHERE c.account_id = $1 AND c.bot_id = $2"),
            "c.id",
        ),
    };
    for (i, d) in pushdown.iter().enumerate() {
        if Some(i) == driver {
            continue;
        }
        let cond = match d {
            Pushdown::AttrText { key, value } => format!(
                "EXISTS (SELECT 1 FROM contact_attributes a WHERE a.contact_id = c.id AND a.key = {} AND a.text_value = {})",
                p(key.into(), &mut params),
                p(value.into(), &mut params)
            ),
            Pushdown::AttrNumber { key, cmp, value } => format!(
                "EXISTS (SELECT 1 FROM contact_attributes a WHERE a.contact_id = c.id AND a.key = {} AND a.num_value {} {})",
                p(key.into(), &mut params),
                cmp.sql(),
                p(Value::Float(*value), &mut params)
            ),
            Pushdown::ColumnText { column, value } => {
                format!("c.{} = {}", column.column(), p(value.into(), &mut params))
            }
            Pushdown::ColumnTime { column, cmp, value } => format!(
                "c.{} {} {}",
                column.column(),
                cmp.sql(),
                p((*value).into(), &mut params)
            ),
            Pushdown::ColumnBool { column, value } => {
                format!(
                    "c.{} = {}",
                    column.column(),
                    p((*value).into(), &mut params)
                )
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        let escaped = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let n = p(format!("%{escaped}%").into(), &mut params);
        sql.push_str(&format!(
            " AND (LOWER(COALESCE(c.phone, '')) LIKE {n} ESCAPE '\\'
                   OR LOWER(COALESCE(c.external_id, '')) LIKE {n} ESCAPE '\\'
                   OR LOWER(c.attributes) LIKE {n} ESCAPE '\\')"
        ));
    }
    if let Some(a) = after {
        let n = p(a.into(), &mut params);
        sql.push_str(&format!(" AND {id_col} < {n}"));
    }
    let n = p(i64::try_from(limit).unwrap_or(i64::MAX).into(), &mut params);
    sql.push_str(&format!(" ORDER BY {id_col} DESC LIMIT {n}"));
    (sql, params)
}

/// A page of contacts a filter matched.
#[derive(Clone, Debug, Default)]
pub struct FilteredPage {
    /// The matches, newest first.
    pub items: Vec<ContactRecord>,
    /// Where the next page starts (a contact id), if there may be more.
    pub next_after: Option<String>,
    /// How many candidates were evaluated.
    pub scanned: usize,
}

/// Walks candidates from `after` down, keeping those the filter matches,
/// until `limit` matched, `budget` were scanned or none are left.
pub fn scan(
    c: &mut dyn Conn,
    (account_id, bot_id): (&str, &str),
    filter: Option<&ContactFilter>,
    q: Option<&str>,
    mut after: Option<String>,
    limit: usize,
    budget: usize,
) -> Result<FilteredPage> {
    let pushdown = filter.map_or(&[][..], ContactFilter::pushdown);
    let mut out = FilteredPage::default();
    // An exact pushdown returns only matches: one more than the page is
    // enough. Otherwise start at twice the page and grow.
    let exact = filter.is_none_or(ContactFilter::exact);
    let mut next_batch = if exact {
        limit + 1
    } else {
        (limit * 2).max(16)
    };
    loop {
        let want = if exact {
            limit - out.items.len() + 1
        } else {
            let w = next_batch;
            next_batch = (next_batch * 2).min(BATCH);
            w
        };
        let (sql, params) = candidates_sql(account_id, bot_id, pushdown, q, after.as_deref(), want);
        let rows = c.query(&sql, &params)?;
        let exhausted = rows.len() < want;
        for r in &rows {
            let rec = record_from(r)?;
            out.scanned += 1;
            after = Some(rec.id.clone());
            if filter.is_none_or(|f| f.matches(&rec.facts())) {
                if out.items.len() == limit {
                    // One more match exists: the page ends at the last kept.
                    out.next_after = out.items.last().map(|r| r.id.clone());
                    return Ok(out);
                }
                out.items.push(rec);
            }
        }
        if exhausted {
            return Ok(out);
        }
        if out.scanned >= budget {
            out.next_after = after;
            return Ok(out);
        }
    }
}

/// One row of an import.
#[derive(Clone, Debug)]
pub struct ImportRow {
    /// The CSV line, for the report.
    pub line: usize,
    /// E.164 phone (known by it when there is no external id).
    pub phone: Option<String>,
    /// External id.
    pub external_id: Option<String>,
    /// Attributes to merge (`null` deletes).
    pub attributes: Map<String, Json>,
    /// Opt-out to set, when given.
    pub opted_out: Option<bool>,
}

/// What an import did with a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// A new contact.
    Created(String),
    /// An existing contact (same phone or external id) was updated.
    Updated(String),
    /// The row was refused: why.
    Rejected(String),
}

impl Store {
    /// A page of a bot's contacts the filter (and the `q` text search)
    /// matches, newest first.
    pub async fn filter_contacts(
        &self,
        account_id: &str,
        bot_id: &str,
        filter: Option<ContactFilter>,
        q: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<FilteredPage> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.read(move |c| {
            scan(
                c,
                (&a, &b),
                filter.as_ref(),
                q.as_deref(),
                after,
                limit,
                SCAN_BUDGET,
            )
        })
        .await
    }

    /// How many of a bot's contacts a filter matches: from the index alone
    /// when the filter is exact, else by evaluating every candidate.
    pub async fn count_contacts(
        &self,
        account_id: &str,
        bot_id: &str,
        filter: ContactFilter,
    ) -> Result<u64> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.read(move |c| {
            if filter.exact() {
                let (sql, params) = candidates_sql(&a, &b, filter.pushdown(), None, None, 0);
                let from = sql.find(" FROM ").unwrap_or(0);
                let end = sql.rfind(" ORDER BY ").unwrap_or(sql.len());
                let count_sql = format!("SELECT COUNT(*){}", &sql[from..end]);
                let n = params.len() - 1;
                let row = c.query_one(&count_sql, &params[..n])?;
                return Ok(u64::try_from(row.int(0)?).unwrap_or(0));
            }
            let mut total = 0u64;
            let mut after = None;
            loop {
                let page = scan(c, (&a, &b), Some(&filter), None, after, 10_000, 10_000)?;
                total += page.items.len() as u64;
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => return Ok(total),
                }
            }
        })
        .await
    }

    /// One contact of the account, any bot.
    pub async fn get_contact(&self, account_id: &str, id: &str) -> Result<ContactRecord> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            record_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM contacts c WHERE c.account_id = $1 AND c.id = $2"),
                &[a.into(), id.into()],
            )?)
        })
        .await
    }

    /// Merges attributes into a contact (`null` deletes a key) and sets its
    /// opt-out, in one transaction with its index rows. `check` sees the
    /// merged attributes and may refuse them.
    pub async fn update_contact(
        &self,
        account_id: &str,
        id: &str,
        patch: Map<String, Json>,
        opted_out: Option<bool>,
        check: impl Fn(&Map<String, Json>) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<ContactRecord> {
        let (a, id) = (account_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let mut rec = record_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM contacts c WHERE c.account_id = $1 AND c.id = $2"),
                &[(&a).into(), (&id).into()],
            )?)?;
            crate::domain::people::merge_attributes(&mut rec.attributes, &patch);
            check(&rec.attributes).map_err(StoreError::Invalid)?;
            if let Some(o) = opted_out {
                rec.opted_out = o;
            }
            let text = Json::Object(rec.attributes.clone()).to_string();
            rec.updated_at = now_ms();
            c.execute(
                "UPDATE contacts SET attributes = $1, opted_out = $2, updated_at = $3 WHERE id = $4",
                &[
                    (&text).into(),
                    rec.opted_out.into(),
                    rec.updated_at.into(),
                    (&id).into(),
                ],
            )?;
            if !patch.is_empty() {
                sync_attributes(c, &a, &rec.bot_id, &id, &text)?;
            }
            outdate_sessions(c, &id)?;
            Ok(rec)
        })
        .await
    }

    /// Creates or updates contacts, one outcome per row. A row finds its
    /// contact by external id when it has one, else by phone; importing the
    /// same file twice changes nothing the second time.
    pub async fn import_contacts(
        &self,
        account_id: &str,
        bot_id: &str,
        rows: Vec<ImportRow>,
    ) -> Result<Vec<ImportOutcome>> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.write(move |c| {
            let now = now_ms();
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let existing = c.query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM contacts c WHERE c.account_id = $1 AND c.bot_id = $2
                           AND ((CAST($3 AS TEXT) IS NOT NULL AND c.external_id = $3)
                             OR (CAST($3 AS TEXT) IS NULL AND c.phone = $4 AND c.external_id IS NULL))
                         LIMIT 1"
                    ),
                    &[
                        (&a).into(),
                        (&b).into(),
                        row.external_id.as_deref().into(),
                        row.phone.as_deref().into(),
                    ],
                )?;
                let mut attrs = match &existing {
                    Some(r) => record_from(r)?.attributes,
                    None => Map::new(),
                };
                crate::domain::people::merge_attributes(&mut attrs, &row.attributes);
                if let Err(e) = crate::domain::people::check_size(&attrs) {
                    out.push(ImportOutcome::Rejected(e.to_string()));
                    continue;
                }
                let text = Json::Object(attrs).to_string();
                match existing {
                    Some(r) => {
                        let rec = record_from(&r)?;
                        let opted = row.opted_out.unwrap_or(rec.opted_out);
                        let attrs_changed = serde_json::from_str::<Json>(&text).ok()
                            != Some(Json::Object(rec.attributes.clone()));
                        if attrs_changed || opted != rec.opted_out {
                            c.execute(
                                "UPDATE contacts SET attributes = $1, opted_out = $2, updated_at = $3
                                 WHERE id = $4",
                                &[
                                    (&text).into(),
                                    opted.into(),
                                    now.into(),
                                    (&rec.id).into(),
                                ],
                            )?;
                            if attrs_changed {
                                sync_attributes(c, &a, &b, &rec.id, &text)?;
                            }
                            outdate_sessions(c, &rec.id)?;
                        }
                        out.push(ImportOutcome::Updated(rec.id));
                    }
                    None => {
                        let id = crate::domain::ids::new_id("ct");
                        c.execute(
                            "INSERT INTO contacts (id, account_id, bot_id, phone, external_id, attributes,
                                                   channel, opted_out, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                            &[
                                (&id).into(),
                                (&a).into(),
                                (&b).into(),
                                row.phone.as_deref().into(),
                                row.external_id.as_deref().into(),
                                (&text).into(),
                                channel_of(row.external_id.as_deref()).into(),
                                row.opted_out.unwrap_or(false).into(),
                                now.into(),
                            ],
                        )?;
                        sync_attributes(c, &a, &b, &id, &text)?;
                        out.push(ImportOutcome::Created(id));
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
