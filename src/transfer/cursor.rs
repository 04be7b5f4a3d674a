//! A listing read in step with other work: the pages of one ListObjectsV2 listing, fetched only
//! when the caller asks past what it holds, so a run over a million keys holds one page (and
//! the part of it the caller has not taken yet) instead of the whole listing, and still makes
//! one request per page.

use std::collections::VecDeque;

use super::Transfer;
use crate::error::{Error, Result};
use crate::store::{ListRequest, ObjectMeta};

/// The listing of `req`, taken in key order.
#[derive(Debug)]
pub struct ListCursor {
    req: ListRequest,
    token: Option<String>,
    held: VecDeque<ObjectMeta>,
    done: bool,
    /// The last key received, so a listing out of key order is refused, not half-read.
    last: Option<String>,
}

impl ListCursor {
    /// A cursor over the listing `req` describes; nothing is requested yet.
    pub fn new(req: ListRequest) -> Self {
        ListCursor {
            req,
            token: None,
            held: VecDeque::new(),
            done: false,
            last: None,
        }
    }

    /// Every object whose key sorts before `below` (all that are left when `None`), in key
    /// order, fetching pages as needed. A failed page (after retries) is an error.
    pub async fn take_below(
        &mut self,
        t: &Transfer,
        below: Option<&str>,
    ) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        loop {
            while let Some(o) = self.held.front() {
                if below.is_some_and(|b| o.key.as_str() >= b) {
                    return Ok(out);
                }
                out.extend(self.held.pop_front());
            }
            if self.done {
                return Ok(out);
            }
            let page = t.list_page(&self.req, self.token.as_deref()).await?;
            // Callers take keys below a bound and treat the rest as absent: a key listed out of
            // order would look missing and be sent again, so such a listing stops the run.
            self.last = in_order(self.last.take(), &page.objects)?;
            self.held.extend(page.objects);
            self.advance(page.next);
        }
    }

    /// What the cursor holds, or else the next page, in key order; `None` once the listing is
    /// read to its end. For a caller that takes every key a page at a time.
    pub async fn next_page(&mut self, t: &Transfer) -> Result<Option<Vec<ObjectMeta>>> {
        while self.held.is_empty() {
            if self.done {
                return Ok(None);
            }
            let page = t.list_page(&self.req, self.token.as_deref()).await?;
            self.last = in_order(self.last.take(), &page.objects)?;
            self.held.extend(page.objects);
            self.advance(page.next);
        }
        Ok(Some(self.held.drain(..).collect()))
    }

    fn advance(&mut self, next: Option<String>) {
        match next {
            Some(next) => self.token = Some(next),
            None => self.done = true,
        }
    }
}

/// The last key of a page after `last`, if every key comes after the one before it.
fn in_order(mut last: Option<String>, page: &[ObjectMeta]) -> Result<Option<String>> {
    for o in page {
        if let Some(prev) = last.as_deref().filter(|p| o.key.as_str() <= *p) {
            return Err(Error::Failed(format!(
                "the store listed {} after {prev}: its listing is not in key order, which this \
                 command needs; nothing was decided from it",
                o.key
            )));
        }
        last = Some(o.key.clone());
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;
    use crate::transfer::{EngineBuilder, Settings};

    /// An engine on a `file://` store in a temp directory holding `keys`.
    async fn store_with(keys: impl Iterator<Item = String>) -> (tempfile::TempDir, Transfer) {
        let dir = tempfile::tempdir().expect("tmp");
        let loc = Location::Local {
            root: dir.path().to_path_buf(),
        };
        let t = EngineBuilder::new(Settings::default())
            .open(&loc, &Default::default())
            .await
            .expect("open");
        for k in keys {
            t.put_bytes(&k, bytes::Bytes::from("x"), Default::default())
                .await
                .expect("put");
        }
        (dir, t)
    }

    #[tokio::test]
    async fn a_cursor_hands_out_each_key_once_in_order_a_page_at_a_time() {
        let (_dir, t) = store_with((0..25).map(|i| format!("w/{:02}/{i:03}", i / 10))).await;
        let before = t.stats().snapshot().total_requests;
        let mut c = ListCursor::new(ListRequest {
            prefix: "w/".into(),
            max_keys: Some(4),
            ..Default::default()
        });
        let first = c.take_below(&t, Some("w/01")).await.expect("first");
        assert_eq!(first.len(), 10);
        assert_eq!(
            t.stats().snapshot().total_requests - before,
            3,
            "three pages of four hold the first ten"
        );
        assert!(
            c.take_below(&t, Some("w/00"))
                .await
                .expect("none")
                .is_empty()
        );
        let rest = c.take_below(&t, None).await.expect("rest");
        let keys: Vec<_> = first.iter().chain(&rest).map(|o| o.key.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((keys.len(), keys == sorted), (25, true));
        assert_eq!(
            t.stats().snapshot().total_requests - before,
            7,
            "25 keys, pages of 4"
        );
    }

    #[tokio::test]
    async fn next_page_hands_out_every_key_once_a_page_per_request() {
        let (_dir, t) = store_with((0..10).map(|i| format!("w/{i:03}"))).await;
        let before = t.stats().snapshot().total_requests;
        let mut c = ListCursor::new(ListRequest {
            prefix: "w/".into(),
            max_keys: Some(4),
            ..Default::default()
        });
        let mut sizes = Vec::new();
        let mut keys = Vec::new();
        while let Some(page) = c.next_page(&t).await.expect("page") {
            sizes.push(page.len());
            keys.extend(page.into_iter().map(|o| o.key));
        }
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(keys.len(), 10);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(t.stats().snapshot().total_requests - before, 3);
        assert!(c.next_page(&t).await.expect("end").is_none());
    }

    #[test]
    fn a_listing_out_of_key_order_is_refused() {
        let page = |keys: &[&str]| -> Vec<ObjectMeta> {
            keys.iter().map(|k| ObjectMeta::listed(*k, 1)).collect()
        };
        let last = in_order(None, &page(&["a/1", "a/2"])).expect("sorted");
        assert_eq!(last.as_deref(), Some("a/2"));
        let last = in_order(last, &page(&["a/3"])).expect("sorted across pages");
        assert_eq!(last.as_deref(), Some("a/3"));
        // Out of order within a page, across pages, and a key listed twice.
        assert!(in_order(None, &page(&["b", "a"])).is_err());
        assert!(in_order(last.clone(), &page(&["a/0"])).is_err());
        assert!(in_order(last, &page(&["a/3"])).is_err());
    }
}
