//! Alert channels and the record of each alert delivery (the Notifications page).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A channel as stored; its target (webhook URL or SMTP settings) encrypted.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    /// `webhook` or `email`.
    pub kind: String,
    /// Webhooks: `json`, `slack` or `discord`.
    pub format: String,
    /// What the page shows of the target (host, recipient), never a secret.
    pub summary: String,
    pub target_nonce: Vec<u8>,
    pub target_ciphertext: Vec<u8>,
    /// Event kinds, comma-separated.
    pub events: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub at: i64,
    pub channel_name: String,
    pub event: String,
    pub subject: String,
    pub message: String,
    /// `sending`, `sent` or `failed`.
    pub result: String,
    pub attempts: i64,
    pub error: Option<String>,
}

fn channel_of(r: &rusqlite::Row) -> rusqlite::Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        format: r.get(3)?,
        summary: r.get(4)?,
        target_nonce: r.get(5)?,
        target_ciphertext: r.get(6)?,
        events: r.get(7)?,
        created_at: r.get(8)?,
    })
}

const CHANNEL_COLUMNS: &str =
    "id, name, kind, format, summary, target_nonce, target_ciphertext, events, created_at";

impl Store {
    /// Adds a channel; `Ok(None)` when the name is taken.
    pub async fn insert_channel(&self, c: ChannelRow) -> Result<Option<i64>, StoreError> {
        self.call(move |conn| {
            let taken: Option<i64> = conn
                .query_row(
                    "SELECT id FROM alert_channels WHERE name = ?1",
                    [&c.name],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Ok(None);
            }
            conn.execute(
                "INSERT INTO alert_channels (name, kind, format, summary, target_nonce, target_ciphertext, events, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    c.name,
                    c.kind,
                    c.format,
                    c.summary,
                    c.target_nonce,
                    c.target_ciphertext,
                    c.events,
                    c.created_at
                ],
            )?;
            Ok(Some(conn.last_insert_rowid()))
        })
        .await
    }

    pub async fn channels(&self) -> Result<Vec<ChannelRow>, StoreError> {
        self.call(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {CHANNEL_COLUMNS} FROM alert_channels ORDER BY id"
            ))?;
            st.query_map([], channel_of)?.collect()
        })
        .await
    }

    pub async fn channel(&self, id: i64) -> Result<Option<ChannelRow>, StoreError> {
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {CHANNEL_COLUMNS} FROM alert_channels WHERE id = ?1"),
                [id],
                channel_of,
            )
            .optional()
        })
        .await
    }

    /// Removes a channel; whether it existed.
    pub async fn delete_channel(&self, id: i64) -> Result<bool, StoreError> {
        self.call(move |conn| {
            Ok(conn.execute("DELETE FROM alert_channels WHERE id = ?1", [id])? > 0)
        })
        .await
    }

    /// Records a delivery about to be tried; its id.
    pub async fn insert_delivery(
        &self,
        at: i64,
        channel: &ChannelRow,
        event: &str,
        subject: &str,
        message: &str,
    ) -> Result<i64, StoreError> {
        let (cid, cname, event, subject, message) = (
            channel.id,
            channel.name.clone(),
            event.to_string(),
            subject.to_string(),
            message.to_string(),
        );
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO alert_deliveries (at, channel_id, channel_name, event, subject, message, result, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'sending', 0)",
                params![at, cid, cname, event, subject, message],
            )?;
            // The record is bounded: the newest 5,000 deliveries are kept.
            conn.execute(
                "DELETE FROM alert_deliveries WHERE id <= (SELECT max(id) FROM alert_deliveries) - 5000",
                [],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    pub async fn update_delivery(
        &self,
        id: i64,
        result: &str,
        attempts: u32,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let result = result.to_string();
        self.call(move |conn| {
            conn.execute(
                "UPDATE alert_deliveries SET result = ?2, attempts = ?3, error = ?4 WHERE id = ?1",
                params![id, result, attempts, error],
            )
            .map(|_| ())
        })
        .await
    }

    /// The newest deliveries first.
    pub async fn deliveries(&self, take: usize) -> Result<Vec<DeliveryRow>, StoreError> {
        self.call(move |conn| {
            let mut st = conn.prepare(
                "SELECT id, at, channel_name, event, subject, message, result, attempts, error
                 FROM alert_deliveries ORDER BY id DESC LIMIT ?1",
            )?;
            st.query_map([take as i64], |r| {
                Ok(DeliveryRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    channel_name: r.get(2)?,
                    event: r.get(3)?,
                    subject: r.get(4)?,
                    message: r.get(5)?,
                    result: r.get(6)?,
                    attempts: r.get(7)?,
                    error: r.get(8)?,
                })
            })?
            .collect()
        })
        .await
    }
}
