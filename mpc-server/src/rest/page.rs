//! Cursor pagination of the listings (`GET /v1/keys`, the audit log).
//!
//! A request names `limit` (default [`DEFAULT_PAGE_LIMIT`], at most
//! [`MAX_PAGE_LIMIT`]: a larger one, or 0, is a 400 `invalid_request`, not
//! clamped, so that a client never mistakes a short page for the end) and
//! `cursor`, the `next_cursor` of the previous page. A cursor is opaque to
//! clients: base64url of a version, the listing it belongs to and the last
//! row's position in the listing's order. It grants nothing: every query
//! is still filtered by the caller and key, so a forged cursor only moves
//! the start of the caller's own listing. A cursor that does not decode,
//! or belongs to the other listing, is a 400 `invalid_cursor`.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mpc_core::KeyId;
use serde::Deserialize;
use utoipa::IntoParams;

use super::problem::{Code, Problem};
use crate::vault::KeyPosition;

/// Rows per page when the request names no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub const MAX_PAGE_LIMIT: u32 = 200;

/// The cursor format's version byte.
const CURSOR_VERSION: u8 = 1;

/// The query parameters of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Most rows to return: 1 to 200, default 50 (a larger value is a 400
    /// `invalid_request`).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (opaque); absent for the
    /// first page. A malformed cursor is a 400 `invalid_cursor`.
    pub cursor: Option<String>,
}

/// A position in one listing's order, encoded into a cursor.
pub(crate) trait Position: Sized {
    /// Which listing: a cursor of another listing is refused.
    const LISTING: u8;
    /// The position's bytes.
    fn to_bytes(&self) -> Vec<u8>;
    /// The position of `bytes`, `None` if malformed.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

impl Position for KeyPosition {
    const LISTING: u8 = b'k';

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.created_at.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.key_id.0);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (time, key_id) = bytes.split_first_chunk::<8>()?;
        Some(Self {
            created_at: i64::from_be_bytes(*time),
            key_id: KeyId(key_id.try_into().ok()?),
        })
    }
}

/// A position in a key's audit log: the last entry's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AuditPosition(pub(crate) i64);

impl Position for AuditPosition {
    const LISTING: u8 = b'a';

    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(i64::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// The cursor text of `position`.
pub(crate) fn encode_cursor<P: Position>(position: &P) -> String {
    let mut bytes = vec![CURSOR_VERSION, P::LISTING];
    bytes.extend_from_slice(&position.to_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position of cursor `text`, `None` if it is not one of this
/// listing's cursors.
pub(crate) fn decode_cursor<P: Position>(text: &str) -> Option<P> {
    // The longest cursor is a key position: 2 + 8 + 32 bytes.
    if text.len() > 64 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    match bytes.as_slice() {
        [CURSOR_VERSION, listing, rest @ ..] if *listing == P::LISTING => P::from_bytes(rest),
        _ => None,
    }
}

/// A page request of the listing whose order `P` positions in.
#[derive(Debug)]
pub(crate) struct Page<P> {
    /// Most rows to return.
    pub(crate) limit: u32,
    /// Start after this row (`None`: from the first).
    pub(crate) after: Option<P>,
}

impl<P: Position> Page<P> {
    /// Rows to fetch: one more than the page, to tell whether another
    /// follows.
    pub(crate) fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts `rows` (fetched with [`fetch`](Self::fetch)) to the page and
    /// returns the next page's cursor, `None` if this page is the last.
    pub(crate) fn finish<T>(
        &self,
        rows: &mut Vec<T>,
        position: impl Fn(&T) -> P,
    ) -> Option<String> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() <= limit {
            return None;
        }
        rows.truncate(limit);
        rows.last().map(|last| encode_cursor(&position(last)))
    }
}

impl<S, P> FromRequestParts<S> for Page<P>
where
    S: Send + Sync,
    P: Position + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(params) = Query::<PageParams>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                Problem::new(
                    Code::InvalidRequest,
                    format!("invalid query: {}", rejection.body_text()),
                )
            })?;
        let limit = params.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(Problem::new(
                Code::InvalidRequest,
                format!("limit must be 1 to {MAX_PAGE_LIMIT}"),
            ));
        }
        let after = match params.cursor.as_deref() {
            None => None,
            Some(text) => Some(decode_cursor(text).ok_or_else(|| {
                Problem::new(
                    Code::InvalidCursor,
                    "the cursor is not a next_cursor of this listing",
                )
            })?),
        };
        Ok(Self { limit, after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_in_their_listing() {
        let key = KeyPosition {
            created_at: -5,
            key_id: KeyId([0xab; 32]),
        };
        let text = encode_cursor(&key);
        assert_eq!(decode_cursor::<KeyPosition>(&text), Some(key));
        assert_eq!(decode_cursor::<AuditPosition>(&text), None);
        let audit = encode_cursor(&AuditPosition(i64::MAX));
        assert_eq!(
            decode_cursor::<AuditPosition>(&audit),
            Some(AuditPosition(i64::MAX))
        );
        assert_eq!(decode_cursor::<KeyPosition>(&audit), None);
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let good = encode_cursor(&AuditPosition(7));
        let mut bytes = URL_SAFE_NO_PAD.decode(&good).unwrap();
        bytes[0] = 2; // unknown version
        let truncated = &good[..good.len() - 1];
        for text in [
            "",
            "!!!",
            "a",
            truncated,
            &URL_SAFE_NO_PAD.encode(&bytes),
            &URL_SAFE_NO_PAD.encode([1, b'a', 0, 0, 0, 0, 0, 0, 0, 7, 0]),
            &"A".repeat(10_000),
            "\u{0}",
            "é",
        ] {
            assert_eq!(decode_cursor::<AuditPosition>(text), None, "{text:?}");
            assert_eq!(decode_cursor::<KeyPosition>(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_page_cuts_the_extra_row_and_points_past_its_last() {
        let page = Page {
            limit: 2,
            after: None::<AuditPosition>,
        };
        assert_eq!(page.fetch(), 3);
        let mut rows = vec![1, 2, 3];
        let next = page.finish(&mut rows, |row| AuditPosition(*row));
        assert_eq!(rows, [1, 2]);
        assert_eq!(next, Some(encode_cursor(&AuditPosition(2))));
        let mut rows = vec![1, 2];
        assert_eq!(page.finish(&mut rows, |row| AuditPosition(*row)), None);
        assert_eq!(rows, [1, 2]);
    }
}
